"""No network request the user did not ask for: every lookup and connect goes to the configured endpoint.

Each flow runs as `hearth` commands in a fresh process whose audit hook records DNS lookups and socket
connects (tests/support/network_audit.py). HF_HUB_DISABLE_TELEMETRY and HF_ENDPOINT are removed from that
process's environment, so Hearth itself must switch huggingface_hub's telemetry off and use the endpoint
from its own settings.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from app.core.paths import AppPaths
from app.core.settings import Settings
from tests.core.hub.conftest import Q4, REPO
from tests.support.fake_hub import FakeHub

# Flows that talk to the Hub (all their connections must reach the stand-in), and flows that must make no
# connection at all.
HUB_FLOWS = [
    ["search", "tiny"],
    ["search", "mistral", "--sort", "updated"],
    ["files", REPO],
    ["download", REPO, Q4],
]
LOCAL_FLOWS = [["models"], ["downloads"], ["token"]]
# HOOK FOR THE ENGINE: when `hearth chat` exists, append its command here (e.g. ["chat", MODEL, "--prompt",
# "hi"]) — a chat must make no connection at all. Keep it in this list so the audit runs it.


def audit(commands: list[list[str]], tmp_path: Path) -> dict:
    out = tmp_path / "audit.json"
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_DISABLE_TELEMETRY", "HF_ENDPOINT")}
    done = subprocess.run(
        [sys.executable, "-m", "tests.support.network_audit", str(out), json.dumps(commands)],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads(out.read_text())
    assert result["codes"] == [0] * len(commands), done.stderr
    return result


def test_hub_flows_connect_only_to_the_configured_endpoint(fake_hub: FakeHub, hearth_home: AppPaths, tmp_path):
    Settings(hearth_home.ensure().settings_file).set("hub_endpoint", fake_hub.url)
    accepted_before = sum(fake_hub.connections.values())
    result = audit(HUB_FLOWS, tmp_path)
    connects = [(host, port) for kind, host, port in result["events"] if kind == "connect"]
    lookups = {host for kind, host, _ in result["events"] if kind == "lookup"}
    assert connects, "the audit saw nothing: the hook is not working"
    assert {host for host, _ in connects} == {"127.0.0.1"} and lookups <= {"127.0.0.1"}
    assert {port for _, port in connects} <= fake_hub.ports  # the Hub and the CDN it redirected to
    # Every connection the client opened arrived at the stand-in: nothing went anywhere else.
    assert len(connects) == sum(fake_hub.connections.values()) - accepted_before
    assert (hearth_home.models_dir / REPO / Q4).exists()
    assert not any("agent-harnesses" in path for _, path, _ in fake_hub.requests)  # telemetry stayed off


def test_local_flows_make_no_connection(fake_hub: FakeHub, hearth_home: AppPaths, tmp_path):
    Settings(hearth_home.ensure().settings_file).set("hub_endpoint", fake_hub.url)
    result = audit(LOCAL_FLOWS, tmp_path)
    assert result["events"] == []
    assert sum(fake_hub.connections.values()) == 0
