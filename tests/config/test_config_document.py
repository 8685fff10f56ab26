"""Reading a configuration file: every problem is one line naming the file, the line and
what is wrong; `${VAR}` references are expanded; header values are never in clear."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config.document import MAX_FILE_BYTES, ConfigError, load, parse

GOOD = """\
version: 1
upstreams:
  - name: docs
    url: http://127.0.0.1:9000/mcp
    headers:
      Authorization: Bearer ${DOCS_TOKEN}
servers:
  - id: support
    tools: [docs__search]
tools:
  docs__search: {enabled: false}
"""


def problem(text: str, environ: dict[str, str] | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        parse(text, "gateway.yaml", {"DOCS_TOKEN": "t0ken"} if environ is None else environ)
    return caught.value


def test_a_good_file_expands_references_and_keeps_each_entrys_line() -> None:
    desired = parse(GOOD, "gateway.yaml", {"DOCS_TOKEN": "t0ken"})
    [docs] = desired.upstreams
    assert docs.fields["headers"] == {"Authorization": "Bearer t0ken"}
    assert docs.line == 3
    assert [s.key for s in desired.servers] == ["support"]
    assert desired.tools[0].fields == {"enabled": False}
    assert desired.prune == "managed"


def test_invalid_yaml_is_one_line_naming_file_and_line() -> None:
    error = problem("upstreams:\n  - name: a\n    url: [unclosed\n")
    assert str(error).startswith("gateway.yaml:4: not valid YAML")
    assert "\n" not in str(error)


def test_unknown_top_level_key_names_its_line() -> None:
    assert str(problem("version: 1\nupstream:\n  - name: a\n")).startswith(
        "gateway.yaml:2: unknown key 'upstream'"
    )


def test_a_missing_environment_variable_is_an_error_naming_it() -> None:
    error = problem(GOOD, environ={})
    assert str(error) == (
        "gateway.yaml:6: environment variable DOCS_TOKEN is not set (used as ${DOCS_TOKEN})"
    )


def test_a_header_value_written_in_clear_is_refused() -> None:
    text = "upstreams:\n  - name: a\n    url: http://x/mcp\n    headers: {X-Key: hunter2}\n"
    error = problem(text)
    assert error.line == 4
    assert "written in clear" in error.problem and "hunter2" not in str(error)


def test_credentials_in_an_upstream_url_are_refused() -> None:
    error = problem("upstreams:\n  - name: a\n    url: http://u:${DOCS_TOKEN}@x/mcp\n")
    assert error.line == 2 and "credentials" in error.problem and "t0ken" not in str(error)


def test_a_key_given_twice_is_refused() -> None:
    assert str(problem("version: 1\nversion: 1\n")) == "gateway.yaml:2: 'version' is given twice"


def test_an_upstream_declared_twice_is_refused() -> None:
    text = "upstreams:\n  - {name: a, url: 'http://x'}\n  - {name: a, url: 'http://y'}\n"
    assert str(problem(text)) == "gateway.yaml:3: 'a' is declared twice in 'upstreams'"


def test_prune_takes_only_managed_or_all() -> None:
    assert problem("prune: everything\n").line == 1


def test_dollar_dollar_is_a_literal_dollar() -> None:
    desired = parse("servers:\n  - id: s\n    description: costs $$5\n", "f.yaml", {})
    assert desired.servers[0].fields["description"] == "costs $5"


def test_a_file_too_large_is_refused_unread(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    path.write_bytes(b"#" * (MAX_FILE_BYTES + 1))
    with pytest.raises(ConfigError, match="larger than"):
        load(path, {})


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path / "nope.yaml", {})
    assert str(caught.value).startswith(f"{tmp_path / 'nope.yaml'}: cannot read the file")
