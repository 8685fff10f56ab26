"""A tag naming this process, for ids that must be unique across workers and instances.

Taken at import, a random tag would be shared by every worker that gunicorn forks from a
master that imported the module first (`preload_app`, or a master that loads plugins), and
their ids would collide. So the tag is made again in every forked child.
"""

from __future__ import annotations

import os
import secrets

_tag = ""


def _new_tag() -> None:
    global _tag
    _tag = f"{secrets.token_hex(8)}{os.getpid() & 0xFFFF:04x}"


_new_tag()
os.register_at_fork(after_in_child=_new_tag)


def process_tag() -> str:
    """Random, and this process's own: different in every worker, even forked ones."""
    return _tag
