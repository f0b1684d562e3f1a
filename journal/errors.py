"""Errors raised by the journal.

JournalError
├── AppendConflict   another writer appended first: the expected seq was stale
├── CorruptJournal   stored events fail verification (hash chain, mirror mismatch)
├── UnknownStream    no event was ever appended to that stream
└── StorageError     SQLite or the filesystem refused the operation
"""

from __future__ import annotations


class JournalError(Exception):
    """Base class for journal errors."""


class AppendConflict(JournalError):
    """The stream moved on since the caller last read it; nothing was written."""

    def __init__(self, stream: str, expected: int, actual: int) -> None:
        self.stream = stream
        self.expected = expected
        self.actual = actual
        super().__init__(
            f"append conflict on {stream}: expected last seq {expected}, found {actual}; "
            "another writer holds this stream"
        )


class CorruptJournal(JournalError):
    """Stored events do not verify; the message names where."""


class UnknownStream(JournalError):
    """No event exists for the stream."""


class StorageError(JournalError):
    """SQLite or the filesystem failed underneath the journal."""
