"""Shared fixtures: a private workspace per test, and the embedded sandbox D601 on demand."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cqdeploy.jobs import load_view
from cqdeploy.projection import JobView
from cqdeploy.sandbox import Sandbox
from cqdeploy.workspace import Workspace


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    h = tmp_path / "ws"
    monkeypatch.setenv("CQDEPLOY_HOME", str(h))
    monkeypatch.delenv("CQDEPLOY_FAULT_HOLD_AFTER", raising=False)
    return h


@pytest.fixture
def ws(home: Path) -> Workspace:
    return Workspace(home).ensure()


@pytest.fixture
def sandbox(ws: Workspace):
    box = Sandbox(ws)
    box.up()
    yield box
    box.down()


def cqdeploy(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run the real command line in a child process, as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "cqdeploy", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        check=False,
    )


def start(*args: str, env: dict[str, str] | None = None) -> dict:
    done = cqdeploy(*args, env=env)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def wait_until(ws: Workspace, job_id: str, predicate, timeout: float = 60) -> JobView:
    """Poll the journal until `predicate(view)` holds; fail the test past `timeout`."""
    end = time.monotonic() + timeout
    while True:
        with ws.journal() as j:
            view = load_view(j, job_id, save_snapshot=False)
        if predicate(view):
            return view
        if time.monotonic() > end:
            raise AssertionError(f"timed out in state {view.state.value}: {view.as_dict()['steps']}")
        time.sleep(0.05)


def wait_done(ws: Workspace, job_id: str, timeout: float = 60) -> JobView:
    return wait_until(ws, job_id, lambda v: v.state.terminal, timeout)
