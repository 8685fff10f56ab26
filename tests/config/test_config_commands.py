"""`aio-mcp-gateway config apply [--dry-run] FILE` and `config export`, run as an operator
runs them: in a process of their own, against the store of DATABASE_URL."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.upstreams.processes import RunningUpstream


def run(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'gateway.db'}",
        "CACHE_TYPE": "memory",
        "JWT_SECRET_KEY": "commands-test-secret-0123456789abcdef",
        "AUTH_ENCRYPTION_SECRET": "commands-test-encryption",
        "LOG_LEVEL": "warning",
        **env,
    }
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", *args],
        env=environ,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
def config_file(tmp_path: Path, own_upstream: RunningUpstream) -> Path:
    path = tmp_path / "gateway.yaml"
    path.write_text(
        "upstreams:\n"
        f"  - name: own\n    url: {own_upstream.url}\n"
        "    headers: {Authorization: 'Bearer ${OWN_TOKEN}'}\n"
        "servers:\n  - id: desk\n    tools: [own__echo]\n"
    )
    return path


def test_dry_run_prints_the_changes_and_makes_none(tmp_path: Path, config_file: Path) -> None:
    dry = run(tmp_path, "config", "apply", "--dry-run", str(config_file), OWN_TOKEN="t")
    assert dry.returncode == 0, dry.stderr
    lines = dry.stdout.splitlines()
    assert lines[0].startswith("+ upstream own: url=")
    assert lines[1:] == ["+ server desk", "(dry run: nothing changed)"]
    again = run(tmp_path, "config", "apply", "--dry-run", str(config_file), OWN_TOKEN="t")
    assert again.stdout.splitlines()[0].startswith("+ upstream own")


def test_apply_then_export_gives_the_state_back_with_secrets_as_references(
    tmp_path: Path, config_file: Path
) -> None:
    applied = run(tmp_path, "config", "apply", str(config_file), OWN_TOKEN="very-secret")
    assert applied.returncode == 0, applied.stderr
    assert applied.stdout.splitlines()[1] == "+ server desk"
    exported = run(tmp_path, "config", "export")
    assert exported.returncode == 0, exported.stderr
    assert "very-secret" not in exported.stdout
    assert "Authorization: ${UPSTREAM_OWN_AUTHORIZATION}" in exported.stdout
    (tmp_path / "exported.yaml").write_text(exported.stdout)
    back = run(
        tmp_path,
        "config",
        "apply",
        str(tmp_path / "exported.yaml"),
        UPSTREAM_OWN_AUTHORIZATION="Bearer very-secret",
    )
    assert back.returncode == 0, back.stderr
    assert back.stdout.strip() == "no changes"


def test_a_malformed_file_is_one_line_naming_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("upstreams:\n  - name: a\n    url: [oops\n")
    result = run(tmp_path, "config", "apply", str(path))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"aio-mcp-gateway: {path}:4: not valid YAML: expected ',' or ']', but got '<stream end>'"
    ]
    assert not (tmp_path / "gateway.db").exists()
