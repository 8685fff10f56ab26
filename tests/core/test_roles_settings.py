"""Roles from the settings: ROLES (JSON) and ROLES_FILE (YAML) are read and checked with the
other settings, each problem one line naming the variable; the README's example is a valid
roles file; a grant is the union of the roles that apply, by scope, group or subject."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from gateway.contracts import Principal
from gateway.roles import grant_for, parse_roles
from gateway.settings import SettingsError, load_settings
from tests.support.gunicorn_process import REPO

ANALYSTS = '[{"name": "analysts", "match": {"scopes": ["analytics"]}, "servers": ["*"]}]'


def test_roles_json_is_parsed_into_the_settings() -> None:
    settings = load_settings({"ROLES": ANALYSTS}, env_file=None)
    [role] = settings.roles
    assert role.name == "analysts" and role.scopes == {"analytics"}


def test_roles_file_is_read_as_yaml(tmp_path: Path) -> None:
    path = tmp_path / "roles.yaml"
    path.write_text("- name: ops\n  match: {groups: [ops]}\n  admin: ['*']\n")
    settings = load_settings({"ROLES_FILE": str(path)}, env_file=None)
    assert [r.name for r in settings.roles_from_file] == ["ops"]


@pytest.mark.parametrize(
    ("environ", "problem"),
    [
        ({"ROLES": "[{"}, "ROLES is not JSON"),
        ({"ROLES": '{"a": {"match": {}}}'}, "ROLES: role 'a' needs 'match'"),
        ({"ROLES": ANALYSTS[:-1] + ", " + ANALYSTS[1:]}, "role 'analysts' is defined twice"),
        ({"ROLES_FILE": "/no/such/roles.yaml"}, "ROLES_FILE='/no/such/roles.yaml' cannot be read"),
    ],
)
def test_a_bad_roles_setting_is_one_line_naming_it(environ: dict[str, str], problem: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(environ, env_file=None)
    assert len(caught.value.problems) == 1
    assert problem in caught.value.problems[0]


def test_the_readme_roles_example_is_a_valid_roles_file() -> None:
    readme = (REPO / "README.md").read_text()
    section = re.search(r"^### Roles\n(.*?)^### ", readme, re.M | re.S)
    assert section is not None
    [example] = re.findall(r"^```yaml\n(.*?)^```", section.group(1), re.M | re.S)
    roles = parse_roles(yaml.safe_load(example))
    assert [r.name for r in roles] == ["analysts", "auditors"]
    assert roles[0].tools.use.tags == {"reporting"}


def test_a_grant_is_the_union_of_the_roles_that_apply() -> None:
    roles = parse_roles(
        [
            {"name": "a", "match": {"scopes": ["x"]}, "tools": ["db_*"], "servers": ["s1"]},
            {"name": "b", "match": {"groups": ["g"]}, "tools": ["tag:t"], "admin": ["tools"]},
            {"name": "c", "match": {"subjects": ["svc-*"]}, "prompts": {"list": ["p*"]}},
        ]
    )
    caller = Principal("svc-1", frozenset({"x"}), {"groups": "g h"})
    grant = grant_for(roles, caller, "groups")
    assert grant.roles == ("a", "b", "c")
    assert grant.uses("tools", ["db_query"]) and grant.uses("tools", ["other"], ["t"])
    assert not grant.uses("tools", ["other"], ["u"])
    assert grant.lists("prompts", ["p1"]) and not grant.uses("prompts", ["p1"])
    assert grant.reaches("s1") and not grant.reaches("s2") and not grant.reaches(None)
    assert grant.administers("tools", "write") and not grant.administers("upstreams", "read")
    nobody = grant_for(roles, Principal("dan"), "groups")
    assert nobody.roles == () and not nobody.reaches("s1")
