"""The `Expect` header: `100-continue` is met as aiohttp meets it, and any other expectation
is refused by the front door (`middlewares.front_door`) with a JSON 417, like every error.

aiohttp reads `Expect` before any middleware runs, in the matched route's expect handler,
whose default answers an expectation it does not know with a text/plain 417, and one whose
bytes are not UTF-8 with a 500. `install` gives every route the app registers an expect
handler that leaves such a request to the front door, and adds a resource that takes it
when no route matches (aiohttp's own 404 and 405 routes use the default handler).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import HttpVersion11, hdrs, web

ExpectHandler = Callable[[web.Request], Awaitable["web.StreamResponse | None"]]

CONTINUE = "100-continue"


def unmet(request: web.Request) -> bool:
    """Whether `request` expects what the gateway does not do: any `Expect` other than
    `100-continue` in HTTP/1.1 (HTTP/1.0 expectations are ignored, as aiohttp does)."""
    expect = request.headers.get(hdrs.EXPECT, "")
    return expect != "" and request.version == HttpVersion11 and expect.lower() != CONTINUE


def install(app: web.Application) -> None:
    """Apply the rule to every route, once the table is complete: on startup, after every
    `cleanup_ctx` (a plugin's included) has added its routes, before the router freezes."""
    app.on_startup.append(_take_over)


async def _take_over(app: web.Application) -> None:
    """Register each route again, same method and handler, with `_deferring` for its expect
    handler (`register_route` replaces the route of a method), then `_Unmatched`. Static
    routes and sub-applications, which the gateway has none of, would keep aiohttp's."""
    router = app.router
    for resource in list(router.resources()):
        if isinstance(resource, web.Resource):
            for route in list(resource):
                resource.register_route(
                    web.ResourceRoute(
                        route.method, route.handler, resource, expect_handler=_deferring(route)
                    )
                )
    router.register_resource(_Unmatched())


def _deferring(route: web.AbstractRoute) -> ExpectHandler:
    """`route`'s own expect handler (aiohttp's, which sends `100 Continue`), except for an
    expectation the gateway does not meet: that one the front door refuses."""

    async def expect(request: web.Request) -> web.StreamResponse | None:
        if unmet(request):
            return None
        return await route.handle_expect_header(request)

    return expect


async def _to_front_door(request: web.Request) -> None:
    return None


async def _expectation_failed(request: web.Request) -> web.StreamResponse:
    """Never reached: the front door refuses every request `_Unmatched` takes."""
    raise web.HTTPExpectationFailed()


class _Unmatched(web.DynamicResource):
    """Any path and method, for a request with an unmet expectation that no route matched:
    the front door answers it (417) instead of aiohttp's 404 or 405 route, whose default
    expect handler would. Its route pattern in metrics and logs is `/{unmatched}`."""

    def __init__(self) -> None:
        super().__init__("/{unmatched:.*}")
        self.add_route(hdrs.METH_ANY, _expectation_failed, expect_handler=_to_front_door)

    async def resolve(
        self, request: web.Request
    ) -> tuple[web.UrlMappingMatchInfo | None, set[str]]:
        if not unmet(request):
            return None, set()
        return await super().resolve(request)
