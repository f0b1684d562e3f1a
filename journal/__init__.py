"""A small append-only event journal: SQLite as the truth, JSONL as a readable mirror.

It knows nothing about deploys: streams, sequence numbers, fenced appends, replay, verify.
"""

from __future__ import annotations

from .errors import AppendConflict, CorruptJournal, JournalError, StorageError, UnknownStream
from .event import GENESIS, Event, canonical
from .store import Journal, StreamInfo, delete_streams, format_ts, rebuild
from .verify import Problem, verify

__all__ = [
    "GENESIS",
    "AppendConflict",
    "CorruptJournal",
    "Event",
    "Journal",
    "JournalError",
    "Problem",
    "StorageError",
    "StreamInfo",
    "UnknownStream",
    "canonical",
    "delete_streams",
    "format_ts",
    "rebuild",
    "verify",
]
