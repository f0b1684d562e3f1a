"""Detached steps on a real bash: one start per directory, sentinel, re-attach, kill."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from cqdeploy import detached
from cqdeploy.transport.local import LocalTransport


@pytest.fixture
def t():
    return LocalTransport()


def run_for(tmp_path, step="build", attempt=1):
    return detached.StepRun("cq-t", step, attempt, str(tmp_path))


def test_a_step_runs_detached_and_its_sentinel_holds_the_exit_code(t, tmp_path):
    run = run_for(tmp_path)
    started = t.run(
        detached.launch(run, "echo hello; echo $SECRET_X; exit 3"), stdin=detached.env_file({"SECRET_X": "v a l'ue"})
    )
    assert started.exit_code == 0, started.stderr
    out = t.run(detached.wait(run, 10), timeout=15).text
    assert out.splitlines()[0] == "exit 3"
    assert Path(run.log).read_text() == "hello\nv a l'ue\n"
    assert Path(run.sentinel).read_text() == "3\n"
    assert run.log.startswith(f"{tmp_path}/unidesk-deploy-cq-t-3-build-a1")
    assert not (tmp_path / f"{run.name}.d" / "env").exists()


def test_a_step_never_starts_twice(t, tmp_path):
    run = run_for(tmp_path)
    assert t.run(detached.launch(run, f"echo x >> {tmp_path}/count")).exit_code == 0
    again = t.run(detached.launch(run, f"echo x >> {tmp_path}/count"))
    assert again.exit_code == detached.ALREADY_STARTED
    t.run(detached.wait(run, 10), timeout=15)
    assert (tmp_path / "count").read_text() == "x\n"


def test_wait_reports_absent_for_a_step_never_started(t, tmp_path):
    assert t.run(detached.wait(run_for(tmp_path), 5)).text.strip() == "absent"


def test_a_second_waiter_re_attaches_to_a_running_step(t, tmp_path):
    run = run_for(tmp_path)
    t.run(detached.launch(run, "sleep 0.5; printf '%s\\n' deadbeef > \"$CQDEPLOY_STEP_DIR/result\""))
    assert t.run(detached.wait(run, 10), timeout=15).text.splitlines() == ["exit 0", "deadbeef"]
    assert t.run(detached.wait(run, 10), timeout=15).text.splitlines() == ["exit 0", "deadbeef"]


def test_the_waiter_wakes_on_the_fifo_not_on_its_one_second_fallback(t, tmp_path):
    run = run_for(tmp_path)
    t.run(detached.launch(run, "sleep 0.2"))
    began = time.monotonic()
    t.run(detached.wait(run, 10), timeout=15)
    assert time.monotonic() - began < 0.9  # a 1 s poll would return at >= 1.0 s


def test_kill_stops_the_whole_process_group_and_wait_says_lost(t, tmp_path):
    run = run_for(tmp_path)
    t.run(detached.launch(run, f"sleep 30 & echo $! > {tmp_path}/child; wait"))
    time.sleep(0.2)
    t.run(detached.kill(run))
    from cqdeploy.sandbox.cluster import pid_alive

    time.sleep(0.1)
    child = int((tmp_path / "child").read_text())
    assert not pid_alive(child)
    assert t.run(detached.wait(run, 5), timeout=10).text.strip() in ("lost", "exit 143")


def test_the_end_is_signalled_with_enough_bytes_for_every_waiter(t, tmp_path):
    """bash's `read -t` selects, then reads: waiters woken by one byte would leave all but one
    blocked in read() for good. Each waiter must find a byte of its own."""
    import os
    from concurrent.futures import ThreadPoolExecutor

    run = run_for(tmp_path)
    t.run(detached.launch(run, "sleep 0.5"))
    fifo = os.open(f"{run.dir}/done", os.O_RDWR | os.O_NONBLOCK)
    try:
        with ThreadPoolExecutor(4) as pool:
            outs = list(pool.map(lambda _: t.run(detached.wait(run, 30), timeout=10).text.splitlines()[0], range(4)))
        left = os.read(fifo, 1 << 16)
    finally:
        os.close(fifo)
    assert outs == ["exit 0"] * 4
    assert len(left) >= 64  # plenty remained after the four waiters took theirs
