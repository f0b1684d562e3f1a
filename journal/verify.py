"""Proof that no event was edited, removed or reordered, and that the mirror agrees."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .event import GENESIS, Event

if TYPE_CHECKING:
    from .store import Journal


@dataclass(frozen=True, slots=True)
class Problem:
    """One verification failure, located precisely enough to open the file at it."""

    file: str
    line: int | None
    seq: int | None
    message: str

    def __str__(self) -> str:
        where = self.file + (f":{self.line}" if self.line is not None else "")
        seq = f" seq {self.seq}:" if self.seq is not None else ""
        return f"{where}:{seq} {self.message}"


def verify(journal: Journal, stream: str | None = None) -> list[Problem]:
    """Check the hash chain in SQLite and compare the JSONL mirror line by line."""
    if stream is not None:
        journal.require(stream)
        names = [stream]
    else:
        names = [s.stream for s in journal.streams()]
        known = set(names)
        orphans = sorted(p.stem for p in journal.mirror_dir.glob("*.jsonl") if p.stem not in known)
        problems = [
            Problem(str(journal.mirror_path(o)), None, None, "mirror without events in SQLite")
            for o in orphans
            if journal.mirror_path(o).stat().st_size > 0
        ]
    problems = [] if stream is not None else problems
    for name in names:
        events = journal.read(name)
        problems += _verify_chain(str(journal.path), name, events)
        problems += _verify_mirror(str(journal.mirror_path(name)), events)
    return problems


def _verify_chain(db_file: str, stream: str, events: list[Event]) -> list[Problem]:
    problems = []
    prev = GENESIS
    for expected_seq, e in enumerate(events, start=1):
        where = f"{db_file} [{stream}]"
        if e.seq != expected_seq:
            problems.append(Problem(where, None, e.seq, f"expected seq {expected_seq} (gap)"))
        if e.prev != prev:
            problems.append(Problem(where, None, e.seq, "previous-hash link broken (reordered or removed)"))
        if e.hash != e.expected_hash():
            problems.append(Problem(where, None, e.seq, "hash does not match content (edited)"))
        prev = e.hash
    return problems


def _verify_mirror(path: str, events: list[Event]) -> list[Problem]:
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        return [Problem(path, None, None, "mirror file missing")] if events else []
    lines = raw.split(b"\n")
    torn = lines[-1] != b""
    if not torn:
        lines.pop()
    problems = []
    for number, line in enumerate(lines, start=1):
        truth = events[number - 1] if number <= len(events) else None
        try:
            seen = json.loads(line)
            seq = seen.get("seq") if isinstance(seen, dict) else None
        except ValueError:
            seen, seq = None, None
        if truth is None:
            problems.append(Problem(path, number, seq, "line has no event in SQLite (extra or duplicate)"))
        elif seen is None:
            what = "torn line (no newline)" if torn and number == len(lines) else "not valid JSON"
            problems.append(Problem(path, number, truth.seq, what))
        elif line.decode("utf-8", "replace") != truth.line():
            if seq != truth.seq:
                msg = f"holds seq {seq} where SQLite has seq {truth.seq} (missing, duplicate or reordered)"
            else:
                msg = "differs from SQLite (edited)"
            problems.append(Problem(path, number, truth.seq, msg))
    if len(lines) < len(events):
        first_missing = events[len(lines)]
        problems.append(
            Problem(
                path,
                len(lines) + 1,
                first_missing.seq,
                f"mirror ends early: {len(events) - len(lines)} event(s) missing",
            )
        )
    return problems
