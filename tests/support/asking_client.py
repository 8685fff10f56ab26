"""An SDK client's answers when an upstream asks it something while a tool of our own
asking upstream (`--asking-tools`) runs, and the checks that those answers came back to the
tool: shared by the tests that reach the upstream through either era of the protocol."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

from mcp import Client
from mcp_types import CreateMessageResult, ElicitResult, ListRootsResult, Root, TextContent

JSON = dict[str, Any]


async def sampled(context: Any, params: Any) -> CreateMessageResult:
    asked = params.messages[0].content.text
    return CreateMessageResult(
        role="assistant", content=TextContent(type="text", text=f"sampled: {asked}"), model="m"
    )


async def elicited(context: Any, params: Any) -> ElicitResult:
    schema = params.requested_schema
    colour = schema["properties"]["colour"]
    assert colour["enum"] == ["red", "green", "blue"]
    count = schema["properties"]["count"]["default"]
    return ElicitResult(action="accept", content={"colour": colour["default"], "count": count})


async def rooted(context: Any) -> ListRootsResult:
    return ListRootsResult(roots=[Root(uri="file:///work/project", name="project")])


ANSWERING: dict[str, Any] = {
    "sampling_callback": sampled,
    "elicitation_callback": elicited,
    "list_roots_callback": rooted,
}
"""The `Client` options of a client that declares, and answers, all three."""


def structured(result: Any) -> JSON:
    assert not result.is_error, result
    value: JSON = result.structured_content
    return value


async def check_asking_tools(client: Client, upstream: str, prompts: Iterable[str]) -> None:
    """For each prompt, `upstream`'s sample, elicit and roots tools get back what
    `sampled`, `elicited` and `rooted` (the `ANSWERING` callbacks) say."""
    for prompt in prompts:
        sample = structured(await client.call_tool(f"{upstream}__sample", {"prompt": prompt}))
        assert sample["content"]["text"] == f"sampled: {prompt}"
        answer = structured(await client.call_tool(f"{upstream}__elicit", {}))
        assert answer == {"action": "accept", "content": {"colour": "green", "count": 3}}
        roots = structured(await client.call_tool(f"{upstream}__roots", {}))
        assert roots["roots"] == [{"uri": "file:///work/project", "name": "project"}]


async def check_concurrent_samples(client: Client, calls: int = 8) -> None:
    """Concurrent calls of the own upstream's sample tool each get the answer to their own
    prompt."""
    results = await asyncio.gather(
        *(client.call_tool("own__sample", {"prompt": f"c{n}"}) for n in range(calls))
    )
    texts = [structured(r)["content"]["text"] for r in results]
    assert texts == [f"sampled: c{n}" for n in range(calls)]
