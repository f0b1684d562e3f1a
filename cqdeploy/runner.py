"""The detached runner: executes a job's remaining steps, journaling before and after each.

Run as `python -m cqdeploy.runner <jobId> [--resume]`. Its stderr is JSONL progress, one line
per journaled event. It keeps no state of its own: everything it knows it read from the journal,
so a new runner picks up exactly where a dead one stopped. While a step runs it journals a
heartbeat every HEARTBEAT_S; every append is fenced by the seq it last saw, so a runner that was
overtaken (another runner, or a cancel) finds out at its next append and stops.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import time
from typing import Any, TextIO

from journal import AppendConflict, Journal, canonical

from . import detached, lock, steps
from .config import load_config, pick_provider
from .errors import (
    CommandTimeout,
    ConnectError,
    ConnectionLost,
    CqdeployError,
    HealthCheckFailed,
    JobStateError,
    TransportError,
)
from .jobs import HEARTBEAT_S, LEASE_S, load_view
from .manifest import Desired
from .projection import JobView
from .render import parse_ts
from .transport import Transport, open_transport
from .workspace import Workspace

TAIL_BYTES = 30_000
VERIFY_WITHIN_S = 30.0


def redact(text: str, secrets: list[str]) -> str:
    for secret in sorted(secrets, key=len, reverse=True):
        if secret:
            text = text.replace(secret, "***")
    return text


class Stop(Exception):
    """The job reached an end (or another writer took it); the runner exits."""


class Runner:
    def __init__(
        self,
        journal: Journal,
        job_id: str,
        ws: Workspace,
        *,
        transport: Transport | None = None,
        progress: TextIO | None = None,
        clock: Any = time.time,
    ) -> None:
        self.journal = journal
        self.job_id = job_id
        self.ws = ws
        self.progress = progress
        self.clock = clock
        self.view: JobView = load_view(journal, job_id, save_snapshot=False)
        created = self.view.data
        self.provider = pick_provider(load_config(ws.config_path), created["providerId"])
        first = journal.event(job_id, 1)
        assert first is not None
        desired = Desired(
            service=first.data["service"],
            repo=first.data["repo"],
            provider=first.data["provider"],
            commit=first.data.get("commit"),
            branch=first.data.get("branch"),
        )
        self.timeout_s = first.data["timeout_ms"] / 1000
        self.deadline = _parse_ts(first.ts) + self.timeout_s
        self.ctx = steps.JobContext(job_id, desired, self.provider, created["resolvedCommit"], self.timeout_s)
        self.transport = transport or open_transport(self.provider)
        self.secrets = self.provider.secrets()
        self.current: detached.StepRun | None = None
        self.last_beat = 0.0

    # -- journal -----------------------------------------------------------

    def emit(self, *items: tuple[str, dict[str, Any]]) -> None:
        try:
            events = self.journal.append_batch(self.job_id, self.view.seq, items)
        except AppendConflict as e:
            self._overtaken(e)
        for e in events:
            self.view.apply(e.seq, e.ts, e.type, e.data)
            self._progress(e)
        if self.view.data["cancelRequested"] and not self.view.state.terminal:
            self._cancel()

    def _progress(self, e: Any) -> None:
        if self.progress is not None:
            shown = {k: v for k, v in e.data.items() if k != "log_tail"}
            line = {"ts": e.ts, "job": e.stream, "seq": e.seq, "type": e.type, "data": shown}
            self.progress.write(canonical(line) + "\n")
            self.progress.flush()

    def _overtaken(self, conflict: AppendConflict) -> None:
        """Someone else appended: a cancel is honoured, anything else means stop at once."""
        for e in self.journal.iter(self.job_id, self.view.seq + 1):
            self.view.apply(e.seq, e.ts, e.type, e.data)
        if self.view.data["cancelRequested"] and not self.view.state.terminal:
            self._cancel()
        raise Stop(f"another writer moved job {self.job_id} on: {conflict}")

    def _cancel(self) -> None:
        step = self.view.machine.current_step
        if self.current is not None:
            self._kill(self.current)
        error = f"cancelled by {self.view.data['cancelRequested']}"
        items: list[tuple[str, dict[str, Any]]] = []
        if step and self.view.step(step)["state"] == "running":
            items.append(("step.failed", {"step": step, "error": error, "log_tail": self.tail(self.current)}))
        items.append(("job.cancelled", {"step": step, "error": error}))
        with contextlib.suppress(Stop):
            self.emit(*items)
        raise Stop(error)

    def heartbeat(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self.last_beat >= HEARTBEAT_S:
            self.last_beat = now
            self.emit(("runner.heartbeat", {"lease_s": LEASE_S}))

    # -- the loop ----------------------------------------------------------

    def run(self, *, resume: bool = False) -> str:
        if self.view.state.terminal:
            raise JobStateError(f"job {self.job_id} already ended {self.view.state.value}")
        kind = "job.resumed" if resume or self.view.data["runners"] else "runner.started"
        try:
            self.emit(
                (
                    kind,
                    {
                        "pid": os.getpid(),
                        "host": socket.gethostname(),
                        "lease_s": LEASE_S,
                        "next_step": self.view.machine.next_step,
                    },
                )
            )
            self.last_beat = time.monotonic()
            while (step := self.view.machine.next_step) is not None:
                if self.clock() >= self.deadline:
                    self.time_out(step, None)
                if step == "verify":
                    self.verify()
                else:
                    self.remote_step(step)
                _hold_after(step)
            self.emit(("job.succeeded", {"commit": self.ctx.resolved}))
        except TransportError as e:  # unreachable past the deadline, or a host key we must not trust
            self._fail_unreachable(e)
        except Stop:
            pass
        finally:
            self.transport.close()
            if self.view.state.terminal:
                spec = self.ctx.desired
                lock.release(self.journal, spec.provider, spec.service, self.job_id, self.view.state.value)
        return self.view.state.value

    def _fail_unreachable(self, e: TransportError) -> None:
        step = self.view.machine.current_step
        error = redact(f"{self.provider.id} unreachable: {e}", self.secrets)
        items: list[tuple[str, dict[str, Any]]] = []
        if step and self.view.step(step)["state"] == "running":
            items.append(("step.failed", {"step": step, "error": error, "log_tail": None}))
        items.append(("job.failed", {"step": step, "error": error}))
        with contextlib.suppress(Stop):
            self.emit(*items)

    def remote_step(self, step: str) -> None:
        s = self.view.step(step)
        command = steps.command_for(step, self.ctx)
        assert command is not None
        if s["state"] == "running":
            run = detached.StepRun(self.job_id, step, s["attempt"], self.provider.tmp_dir)
            self.current = run
            outcome = self.wait(run)
            if outcome[0] != "absent":
                if s["remoteLog"] is None:
                    self.emit(("step.remote_log", {"step": step, "log": run.log, "dir": run.dir}))
                return self.finish(run, outcome)
        run = detached.StepRun(self.job_id, step, s["attempt"] + 1, self.provider.tmp_dir)
        self.emit(("step.started", {"step": step, "attempt": run.attempt}))
        self.current = run
        started = self._run(
            detached.launch(run, command.script, self.provider.path_prepend),
            stdin=detached.env_file(command.secret_env),
            timeout=30,
        )
        if started.exit_code not in (0, detached.ALREADY_STARTED):
            self.fail(step, f"could not start step {step}: {self._clean(started.stderr)}", None)
        self.emit(("step.remote_log", {"step": step, "log": run.log, "dir": run.dir}))
        self.finish(run, self.wait(run))

    def wait(self, run: detached.StepRun) -> tuple[str, int | None, str]:
        """Block on the step's end in slices, journaling a heartbeat between slices; the last
        slice ends exactly at the job's deadline."""
        while True:
            remaining = self.deadline - self.clock()
            if remaining <= 0:
                return ("timeout", None, "")
            final = remaining <= HEARTBEAT_S
            limit = remaining + 2 if final else HEARTBEAT_S
            try:
                result = self._run(
                    detached.wait(run, max(1, int(limit))), timeout=remaining if final else HEARTBEAT_S + 5
                )
            except CommandTimeout:
                if final:
                    return ("timeout", None, "")
                continue
            lines = result.text.splitlines()
            head = lines[0] if lines else "lost"
            if head.startswith("exit "):
                return ("exit", int(head.split()[1]), "\n".join(lines[1:]))
            if head != "waiting":
                return (head, None, "")
            self.heartbeat(force=True)  # each slice is one heartbeat period

    def finish(self, run: detached.StepRun, outcome: tuple[str, int | None, str]) -> None:
        kind, code, result = outcome
        step = run.step
        if kind == "timeout":
            self.time_out(step, run)
        if kind != "exit":
            self.fail(step, f"step {step} vanished on the target (no exit code, process gone)", run)
        self.current = None
        sentinel = ("step.sentinel_seen", {"step": step, "exit_code": code, "sentinel": run.sentinel})
        if code != 0:
            tail = self.tail(run)
            error = f"step {step} exited {code}"
            if step == "fetch" and code == steps.NOT_PUSHED_EXIT:
                error = f"commit {self.ctx.requested} is not pushed to the remote"
            self.emit(
                sentinel,
                ("step.failed", {"step": step, "error": error, "log_tail": tail}),
                ("job.failed", {"step": step, "error": error}),
            )
            raise Stop(error)
        items: list[tuple[str, dict[str, Any]]] = [sentinel]
        if step == "fetch":
            resolved = result.strip()
            if len(resolved) != 40 or any(c not in "0123456789abcdef" for c in resolved):
                self.fail(step, f"fetch produced no resolved commit (got {resolved[:50]!r})", run)
            items.append(("commit.resolved", {"step": step, "commit": resolved}))
            self.ctx = steps.JobContext(self.job_id, self.ctx.desired, self.provider, resolved, self.timeout_s)
        items.append(("step.completed", {"step": step, "duration_s": self._duration(step)}))
        self.emit(*items)

    def verify(self) -> None:
        from . import health

        spec = self.ctx.desired.spec
        attempt = self.view.step("verify")["attempt"] + 1
        self.emit(("step.started", {"step": "verify", "attempt": attempt}))
        within = max(1.0, min(VERIFY_WITHIN_S, self.deadline - self.clock()))
        try:
            answer = health.await_healthy(
                self.provider.backend_url, spec.name, spec.health_path, within_s=within, on_wait=self.heartbeat
            )
        except (HealthCheckFailed, TransportError) as e:
            self.fail("verify", str(e), None)
        actual = health.deployed_commit(answer)
        expected = self.ctx.resolved
        if actual != expected:
            error = f"/health reports deploy.commit {actual} but this job deployed {expected}"
            tail = self._clean(answer.text.encode())[-TAIL_BYTES:]
            self.emit(
                ("health.commit_mismatch", {"step": "verify", "expected": expected, "actual": actual}),
                ("step.failed", {"step": "verify", "error": error, "log_tail": tail}),
                ("job.failed", {"step": "verify", "error": error}),
            )
            raise Stop(error)
        self.emit(("step.completed", {"step": "verify", "duration_s": self._duration("verify"), "commit": actual}))

    # -- endings -----------------------------------------------------------

    def fail(self, step: str, error: str, run: detached.StepRun | None) -> None:
        tail = self.tail(run) if run else None
        error = redact(error, self.secrets)
        self.emit(
            ("step.failed", {"step": step, "error": error, "log_tail": tail}),
            ("job.failed", {"step": step, "error": error}),
        )
        raise Stop(error)

    def time_out(self, step: str, run: detached.StepRun | None) -> None:
        if run is not None:
            self._kill(run)
        error = f"job deadline of {self.timeout_s:.0f}s passed during step {step}"
        items: list[tuple[str, dict[str, Any]]] = []
        if self.view.step(step)["state"] == "running":
            items.append(("step.failed", {"step": step, "error": error, "log_tail": self.tail(run) if run else None}))
        items.append(("job.timed_out", {"step": step, "error": error}))
        self.emit(*items)
        raise Stop(error)

    def _run(self, script: str, *, stdin: bytes = b"", timeout: float = 60.0) -> Any:
        """One remote command; a lost link is reconnected with backoff inside the job's deadline
        and the command sent again. Every command the runner sends is safe to repeat: a launch
        refuses a step directory that exists, and waits, tails and kills only look."""
        pause = 0.1
        while True:
            try:
                return self.transport.run(script, stdin=stdin, timeout=timeout)
            except (ConnectionLost, ConnectError) as e:
                left = self.deadline - self.clock()
                if left <= pause:
                    raise TransportError(f"{e}; gave up at the job's deadline") from e
                self._progress_note("transport.reconnecting", {"error": str(e), "retry_in_s": pause})
                time.sleep(pause)
                pause = min(pause * 2, 2.0)

    def _progress_note(self, kind: str, data: dict[str, Any]) -> None:
        if self.progress is not None:
            self.progress.write(canonical({"job": self.job_id, "type": kind, "data": data}) + "\n")
            self.progress.flush()

    def _kill(self, run: detached.StepRun) -> None:
        with contextlib.suppress(TransportError):
            self._run(detached.kill(run), timeout=10)

    def tail(self, run: detached.StepRun | None) -> str | None:
        if run is None:
            return None
        try:
            result = self._run(detached.tail(run.log, TAIL_BYTES), timeout=15)
        except TransportError:
            return None
        return self._clean(result.stdout)

    def _clean(self, raw: bytes) -> str:
        return redact(raw.decode("utf-8", "replace"), self.secrets)

    def _duration(self, step: str) -> float | None:
        started = self.view.step(step)["startedAt"]
        return round(self.clock() - _parse_ts(started), 3) if started else None


def _hold_after(step: str) -> None:
    """Fault injection for tests and tools/chaos: pause at a step boundary to be killed there."""
    if os.environ.get("CQDEPLOY_FAULT_HOLD_AFTER") == step:
        time.sleep(float(os.environ.get("CQDEPLOY_FAULT_HOLD_S", "30")))


def _parse_ts(ts: str) -> float:
    return parse_ts(ts).timestamp()  # type: ignore[union-attr]


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    resume = "--resume" in args
    args = [a for a in args if a != "--resume"]
    if len(args) != 1:
        print("usage: python -m cqdeploy.runner <jobId> [--resume]", file=sys.stderr)
        return 2
    ws = Workspace.from_env().ensure()
    try:
        with ws.journal() as journal:
            state = Runner(journal, args[0], ws, progress=sys.stderr).run(resume=resume)
    except CqdeployError as e:
        print(canonical({"job": args[0], "error": str(e)}), file=sys.stderr)
        return e.exit_code
    return 0 if state == "succeeded" else 1


if __name__ == "__main__":
    raise SystemExit(main())
