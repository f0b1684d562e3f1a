"""One deploy at a time per (provider, service), as a fenced journal stream.

The lock is the stream `lock.<provider>.<service>`: `lock.acquired` and `lock.released` events.
Acquiring is an append fenced by the expected seq, so of ten deploys started at once exactly one
wins. The lock belongs to a job, not to a runner: a job whose runner died keeps it (the lock is
stale) until the job is resumed, ends, or a human runs `cqdeploy lock release --force`.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from journal import AppendConflict

from .errors import LockHeld

if TYPE_CHECKING:
    from journal import Journal

ATTEMPTS = 20


def lock_stream(provider: str, service: str) -> str:
    return f"lock.{provider}.{service}"


@dataclass(frozen=True)
class LockState:
    seq: int
    holder: str | None
    since: str | None
    pid: int | None
    host: str | None


def read_lock(journal: Journal, provider: str, service: str) -> LockState:
    """Fold the lock stream: who holds it now, if anyone."""
    holder = since = host = None
    pid = None
    seq = 0
    for e in journal.iter(lock_stream(provider, service)):
        seq = e.seq
        if e.type == "lock.acquired":
            holder, since, pid, host = e.data["job"], e.ts, e.data.get("pid"), e.data.get("host")
        elif e.type == "lock.released" and e.data.get("job") == holder:
            holder = since = host = None
            pid = None
    return LockState(seq, holder, since, pid, host)


def acquire(
    journal: Journal,
    provider: str,
    service: str,
    job_id: str,
    *,
    holder_state: Any = None,
    wait_s: float = 0.0,
    along: list[tuple[str, int, list[tuple[str, dict[str, Any]]]]] | None = None,
) -> None:
    """Take the lock for `job_id` or raise LockHeld naming the job that has it.

    `holder_state(job_id, since)` tells whether the holding job is still live (not terminal)
    and describes its runner; a lock left by a job that ended is released on the way. `along`
    are appends (the new job's job.created) made in the same transaction as the lock, so a
    lock never exists without its job, and a refused deploy writes nothing.
    """
    end = time.monotonic() + wait_s
    stream = lock_stream(provider, service)
    for _ in range(ATTEMPTS * max(1, int(wait_s * 10))):
        state = read_lock(journal, provider, service)
        try:
            if state.holder == job_id:
                return
            if state.holder is not None:
                live, described = holder_state(state.holder, state.since) if holder_state else (True, "")
                if live:
                    if time.monotonic() < end:
                        time.sleep(0.1)
                        continue
                    raise LockHeld(
                        f"{provider}/{service} is locked by job {state.holder} "
                        f"(pid {state.pid}, host {state.host}, since {state.since}){described}"
                    )
                journal.append(stream, state.seq, "lock.released", {"job": state.holder, "reason": "holder ended"})
                continue
            taken = ("lock.acquired", {"job": job_id, "pid": os.getpid(), "host": socket.gethostname()})
            journal.append_many([(stream, state.seq, [taken]), *(along or [])])
            return
        except AppendConflict:
            continue  # someone else moved first: read again
    raise LockHeld(f"{provider}/{service}: could not take the lock (too much contention)")


def release(journal: Journal, provider: str, service: str, job_id: str, reason: str, **extra: Any) -> bool:
    """Release the lock if `job_id` holds it; True if it did."""
    for _ in range(ATTEMPTS):
        state = read_lock(journal, provider, service)
        if state.holder != job_id:
            return False
        try:
            journal.append(
                lock_stream(provider, service), state.seq, "lock.released", {"job": job_id, "reason": reason, **extra}
            )
            return True
        except AppendConflict:
            continue
    return False
