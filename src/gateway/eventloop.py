"""Which event loop the gateway runs on: uvloop when it is installed, unless EVENT_LOOP says
otherwise. `gunicorn.conf.py` takes its worker class from here and `serve` its loop.
"""

from __future__ import annotations

import asyncio
import importlib.util

from gateway.settings import Settings, SettingsError

_WORKER_CLASSES = {
    "uvloop": "aiohttp.GunicornUVLoopWebWorker",
    "asyncio": "aiohttp.GunicornWebWorker",
}


def chosen_loop(settings: Settings) -> str:
    """The loop to run, "uvloop" or "asyncio".

    EVENT_LOOP=auto takes uvloop when it is installed; asking for uvloop where it is missing
    is a configuration error rather than a silent fallback.
    """
    installed = importlib.util.find_spec("uvloop") is not None
    if settings.event_loop == "uvloop" and not installed:
        raise SettingsError(
            "EVENT_LOOP='uvloop' but uvloop is not installed; pip install uvloop, "
            "or use EVENT_LOOP=auto"
        )
    return "uvloop" if installed and settings.event_loop != "asyncio" else "asyncio"


def worker_class(settings: Settings) -> str:
    """The aiohttp gunicorn worker that runs the chosen loop."""
    return _WORKER_CLASSES[chosen_loop(settings)]


def new_event_loop(settings: Settings) -> asyncio.AbstractEventLoop:
    """A fresh loop of the chosen kind, for `serve`."""
    if chosen_loop(settings) == "uvloop":
        import uvloop

        return uvloop.new_event_loop()
    return asyncio.new_event_loop()


def running_loop_name() -> str:
    """The running loop's package, "uvloop" or "asyncio", as `/version` reports it."""
    return type(asyncio.get_running_loop()).__module__.partition(".")[0]
