"""Search mode on a 1,000-tool catalogue: what `tools/list` costs an agent in each mode, and
how well `search_tools` ranks the right tool for a small labelled set of task queries.

The catalogue is generated (25 services of 8 kinds of object, 5 actions each) with names
in snake_case and camelCase as real upstreams write them, descriptions and input schemas.
It is built with the gateway's own code (`Catalogue.build`, the `tools/list` pager, the
`search_tools` handler), in process: sizes are those of the JSON-RPC responses the gateway
sends. Ranking is compared with bm25s' own default tokenizer, which keeps identifiers whole.

    python bench/bench_tool_search.py
"""

from __future__ import annotations

import statistics
import time

import bm25s
import orjson

from gateway.catalogue import Catalogue
from gateway.contracts import ToolDef
from gateway.mcp.methods import page
from gateway.mcp.tool_search import ToolSearchCalls
from gateway.store import CatalogueData, ServerRecord, ToolRecord, UpstreamRecord
from gateway.toolsearch import ToolIndex

SERVICES: dict[str, tuple[str, list[str]]] = {
    # service: (display name, objects); camelCase services name tools like `listIssues`.
    "github": (
        "GitHub",
        ["repository", "issue", "pull_request", "branch", "release", "comment", "workflow", "gist"],
    ),
    "gitlab": (
        "GitLab",
        ["project", "merge_request", "pipeline", "issue", "tag", "runner", "snippet", "milestone"],
    ),
    "jira": (
        "Jira",
        ["issue", "project", "sprint", "board", "epic", "comment", "worklog", "version"],
    ),
    "slack": (
        "Slack",
        ["channel", "message", "user", "reminder", "file", "user_group", "bookmark", "emoji"],
    ),
    "gmail": (
        "Gmail",
        ["message", "draft", "label", "thread", "filter", "attachment", "contact", "signature"],
    ),
    "calendar": (
        "Google Calendar",
        ["event", "calendar", "attendee", "reminder", "room", "invitation", "color", "acl_rule"],
    ),
    "drive": (
        "Google Drive",
        [
            "file",
            "folder",
            "permission",
            "comment",
            "revision",
            "shared_drive",
            "shortcut",
            "label",
        ],
    ),
    "s3": (
        "Amazon S3",
        [
            "bucket",
            "object",
            "bucket_policy",
            "lifecycle_rule",
            "multipart_upload",
            "access_point",
            "tag_set",
            "cors_rule",
        ],
    ),
    "postgres": (
        "PostgreSQL",
        ["database", "table", "index", "role", "schema", "view", "extension", "backup"],
    ),
    "stripe": (
        "Stripe",
        [
            "customer",
            "invoice",
            "payment_intent",
            "subscription",
            "refund",
            "product",
            "price",
            "coupon",
        ],
    ),
    "salesforce": (
        "Salesforce",
        ["account", "lead", "opportunity", "contact", "case", "campaign", "task", "report"],
    ),
    "zendesk": (
        "Zendesk",
        ["ticket", "user", "organization", "macro", "view", "trigger", "article", "group"],
    ),
    "notion": (
        "Notion",
        ["page", "database", "block", "comment", "user", "property", "template", "workspace"],
    ),
    "confluence": (
        "Confluence",
        ["page", "space", "attachment", "comment", "label", "blog_post", "template", "user"],
    ),
    "kubernetes": (
        "Kubernetes",
        [
            "pod",
            "deployment",
            "service",
            "config_map",
            "secret",
            "namespace",
            "ingress",
            "cron_job",
        ],
    ),
    "docker": (
        "Docker",
        [
            "container",
            "image",
            "volume",
            "network",
            "registry",
            "build",
            "compose_project",
            "plugin",
        ],
    ),
    "datadog": (
        "Datadog",
        [
            "monitor",
            "dashboard",
            "metric",
            "log_pipeline",
            "incident",
            "slo",
            "downtime",
            "synthetic_test",
        ],
    ),
    "pagerduty": (
        "PagerDuty",
        [
            "incident",
            "service",
            "schedule",
            "escalation_policy",
            "on_call",
            "team",
            "maintenance_window",
            "alert",
        ],
    ),
    "twilio": (
        "Twilio",
        [
            "sms_message",
            "call",
            "phone_number",
            "recording",
            "conference",
            "messaging_service",
            "verification",
            "queue",
        ],
    ),
    "shopify": (
        "Shopify",
        [
            "product",
            "order",
            "customer",
            "inventory_item",
            "collection",
            "discount_code",
            "fulfillment",
            "refund",
        ],
    ),
    "hubspot": (
        "HubSpot",
        ["contact", "company", "deal", "ticket", "email_campaign", "form", "workflow", "note"],
    ),
    "asana": ("Asana", ["task", "project", "section", "tag", "team", "portfolio", "goal", "story"]),
    "linear": (
        "Linear",
        ["issue", "project", "cycle", "team", "label", "comment", "roadmap", "attachment"],
    ),
    "figma": (
        "Figma",
        ["file", "comment", "component", "style", "project", "version", "webhook", "team"],
    ),
    "sentry": (
        "Sentry",
        ["issue", "event", "project", "release", "alert_rule", "team", "dsn_key", "replay"],
    ),
}
CAMEL = {"slack", "s3", "kubernetes", "shopify", "hubspot", "figma"}
ACTIONS = {
    "list": "List the {plural} in {service}, filtered and paged, newest first.",
    "get": "Get the details of one {thing} in {service} by its id.",
    "create": "Create a new {thing} in {service} and return it.",
    "update": "Update (edit) an existing {thing} in {service}; only the fields given change.",
    "delete": "Delete (permanently remove) a {thing} from {service}.",
}

# (query, the tool an agent needs): phrased as a task, often not in the tool's own words.
QUERIES: list[tuple[str, str]] = [
    ("open a new bug issue in Jira", "jira__create_issue"),
    ("post a message in a Slack channel", "slack__createMessage"),
    ("list my GitHub pull requests", "github__list_pull_request"),
    ("merge request pipelines on GitLab", "gitlab__list_pipeline"),
    ("delete an S3 bucket", "s3__deleteBucket"),
    ("upload a file to Google Drive", "drive__create_file"),
    ("refund a Stripe payment", "stripe__create_refund"),
    ("cancel a Stripe subscription", "stripe__delete_subscription"),
    ("who is on call in PagerDuty", "pagerduty__list_on_call"),
    ("restart a kubernetes pod", "kubernetes__deletePod"),
    ("scale a Kubernetes deployment", "kubernetes__updateDeployment"),
    ("show the details of a Zendesk ticket", "zendesk__get_ticket"),
    ("new lead in Salesforce", "salesforce__create_lead"),
    ("send an SMS with Twilio", "twilio__create_sms_message"),
    ("remove a docker container", "docker__delete_container"),
    ("list docker images", "docker__list_image"),
    ("create a calendar event for a meeting", "calendar__create_event"),
    ("edit a Notion page", "notion__update_page"),
    ("write a draft email in Gmail", "gmail__create_draft"),
    ("search Gmail threads", "gmail__list_thread"),
    ("mute a Datadog monitor with a downtime", "datadog__create_downtime"),
    ("Datadog dashboards", "datadog__list_dashboard"),
    ("add a comment to a Linear issue", "linear__create_comment"),
    ("Shopify orders", "shopify__listOrder"),
    ("change the price of a Stripe product", "stripe__update_price"),
    ("HubSpot deal details", "hubspot__getDeal"),
    ("create a Confluence space", "confluence__create_space"),
    ("Postgres table list", "postgres__list_table"),
    ("take a database backup in PostgreSQL", "postgres__create_backup"),
    ("resolve a Sentry issue", "sentry__update_issue"),
    ("Sentry releases", "sentry__list_release"),
    ("create an Asana task", "asana__create_task"),
    ("Figma file comments", "figma__listComment"),
    ("invite an attendee to an event", "calendar__create_attendee"),
    ("share a Drive folder with someone", "drive__create_permission"),
    ("archive a GitHub repository", "github__update_repository"),
    ("read a Slack user's profile", "slack__getUser"),
    ("delete a kubernetes secret", "kubernetes__deleteSecret"),
    ("list Jira sprints on a board", "jira__list_sprint"),
    ("escalation policies", "pagerduty__list_escalation_policy"),
]


def camel(words: list[str]) -> str:
    return words[0] + "".join(w.title() for w in words[1:])


def catalogue_data(terse: bool = False) -> CatalogueData:
    """The catalogue; `terse`: every third upstream describes no tool, as some do."""
    upstreams, tools = [], []
    for number, (service, (display, objects)) in enumerate(SERVICES.items()):
        described = not terse or number % 3 != 2
        upstreams.append(UpstreamRecord(service, "streamable_http", f"http://{service}/", service))
        for thing in objects:
            words = thing.split("_")
            human = " ".join(words)
            for action, template in ACTIONS.items():
                original = camel([action, *words]) if service in CAMEL else f"{action}_{thing}"
                schema = {
                    "type": "object",
                    "properties": {
                        "id": {"type": "string", "description": f"The {human}'s id."},
                        "fields": {"type": "object", "description": "Fields to set."},
                        "cursor": {"type": "string", "description": "Where a page starts."},
                    },
                    "required": ["id"] if action in {"get", "update", "delete"} else [],
                }
                definition = ToolDef(
                    name=original,
                    input_schema=schema,
                    description=template.format(plural=f"{human}s", thing=human, service=display)
                    if described
                    else "",
                )
                tools.append(ToolRecord(f"{service}__{original}", service, definition))
    servers = [
        ServerRecord("listed", "Everything, listed", tools=tuple(t.name for t in tools)),
        ServerRecord(
            "search", "Everything, searched", tools=tuple(t.name for t in tools), tool_mode="search"
        ),
    ]
    return CatalogueData(version=1, upstreams=upstreams, tools=tools, servers=servers)


def listing_bytes(items: list[dict[str, object]]) -> tuple[int, int, int]:
    """Bytes of every tools/list response an agent reads to see the whole list, pages, and
    the first page's bytes."""
    total, pages, cursor = 0, 0, None
    first = 0
    while True:
        params = {} if cursor is None else {"cursor": cursor}
        result = page(items, "tools", params, 1)
        size = len(orjson.dumps({"jsonrpc": "2.0", "id": 1, "result": result}))
        first = first or size
        total += size
        pages += 1
        cursor = result.get("nextCursor")
        if cursor is None:
            return total, pages, first


def ranks(rank_of: dict[str, list[str]]) -> dict[str, float]:
    found = [rank_of[q][:10].index(t) + 1 if t in rank_of[q][:10] else None for q, t in QUERIES]
    n = len(QUERIES)
    return {
        "recall@1": sum(r == 1 for r in found) / n,
        "recall@5": sum(r is not None and r <= 5 for r in found) / n,
        "MRR@10": sum(1 / r for r in found if r is not None) / n,
    }


def baseline(index: ToolIndex) -> dict[str, list[str]]:
    """bm25s with its default tokenizer (words of `\\w+`, English stopwords): identifiers
    like `create_issue` or `createIssue` stay one word."""
    entries = index.entries
    texts = [f"{e.name} {e.title} {e.description}" for e in entries]
    bm25 = bm25s.BM25()
    bm25.index(bm25s.tokenize(texts, stopwords="en", show_progress=False), show_progress=False)
    out = {}
    for query, _ in QUERIES:
        tokens = bm25s.tokenize([query], stopwords="en", show_progress=False)
        docs, _scores = bm25.retrieve(tokens, k=10, show_progress=False)
        out[query] = [entries[i].name for i in docs[0]]
    return out


def gateway_ranking(index: ToolIndex) -> dict[str, list[str]]:
    found = {}
    for query, _ in QUERIES:
        result = ToolSearchCalls.search(index, {"query": query, "limit": 10})
        found[query] = [hit["name"] for hit in result["structuredContent"]["tools"]]
    return found


def main() -> None:
    data = catalogue_data()
    names = {t.name for t in data.tools}
    missing = [tool for _, tool in QUERIES if tool not in names]
    assert not missing, f"labels naming no tool: {missing}"
    started = time.perf_counter()
    catalogue = Catalogue.build(data, {})
    build_ms = (time.perf_counter() - started) * 1000
    listed, searched = catalogue.servers["listed"], catalogue.servers["search"]
    assert searched.search is not None

    list_total, list_pages, list_first = listing_bytes(listed.tool_list)
    search_total, _, _ = listing_bytes(searched.tool_list)
    started = time.perf_counter()
    searched.search.search("warm up the index", 1)
    index_ms = (time.perf_counter() - started) * 1000

    timings, hit_bytes = [], []
    for query, _ in QUERIES:
        started = time.perf_counter()
        ToolSearchCalls.search(searched.search, {"query": query, "limit": 10})
        timings.append((time.perf_counter() - started) * 1000)
        five = ToolSearchCalls.search(searched.search, {"query": query, "limit": 5})
        hit_bytes.append(len(orjson.dumps({"jsonrpc": "2.0", "id": 1, "result": five})))
    describe = [
        len(orjson.dumps({"jsonrpc": "2.0", "id": 1, "result": {"structuredContent": t.listing}}))
        for t in list(searched.tools.values())[:100]
    ]

    print(
        f"catalogue: {len(data.tools)} tools from {len(data.upstreams)} upstreams "
        f"(snapshot built in {build_ms:.0f} ms; BM25 index built on first search in "
        f"{index_ms:.0f} ms)"
    )
    print()
    print("| tools/list | bytes | responses |")
    print("| --- | ---: | ---: |")
    print(f"| list mode, whole list | {list_total:,} | {list_pages} pages of 100 |")
    print(f"| list mode, first page | {list_first:,} | 1 |")
    print(f"| search mode | {search_total:,} | 1 |")
    print(f"| search_tools answer, limit 5 (median) | {int(statistics.median(hit_bytes)):,} | 1 |")
    print(f"| describe_tool answer (median) | {int(statistics.median(describe)):,} | 1 |")
    print()
    print(f"ranking, {len(QUERIES)} labelled task queries, one right tool each:")
    print()
    print("| catalogue | tokenizer | recall@1 | recall@5 | MRR@10 |")
    print("| --- | --- | ---: | ---: | ---: |")
    ours: dict[str, list[str]] = {}
    for described, terse in (("all described", False), ("1 upstream in 3 undescribed", True)):
        view = Catalogue.build(catalogue_data(terse), {}).servers["search"]
        assert view.search is not None
        gateway = gateway_ranking(view.search)
        ours = ours or gateway
        for label, found in (
            ("gateway (identifiers split, word + stem, field weights)", gateway),
            ("bm25s default (identifiers whole)", baseline(view.search)),
        ):
            m = ranks(found)
            print(
                f"| {described} | {label} | {m['recall@1']:.2f} | {m['recall@5']:.2f} "
                f"| {m['MRR@10']:.3f} |"
            )
    print()
    print(
        f"search_tools latency: median {statistics.median(timings):.2f} ms, "
        f"max {max(timings):.2f} ms"
    )
    misses = [(q, t, ours[q][:3]) for q, t in QUERIES if t not in ours[q][:5]]
    if misses:
        print()
        print("not in the gateway's top 5 (all described):")
        for query, tool, top in misses:
            print(f"  {query!r}: wanted {tool}, got {top}")


if __name__ == "__main__":
    main()
