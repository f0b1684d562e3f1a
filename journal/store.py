"""Append-only event store: SQLite (through sqlite-utils) is the truth, JSONL the mirror.

Every append runs in one `BEGIN IMMEDIATE` transaction fenced by the expected seq, so two
writers can never both extend a stream. The mirror line is written after the commit while a
file lock on the stream's JSONL is held; a process that dies in between leaves the mirror one
line short, and the next open (or the next append) copies the missing lines from SQLite.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .errors import AppendConflict, StorageError, UnknownStream
from .event import GENESIS, Event, canonical, digest

STREAM_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")

SCHEMA_VERSION = 1
SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    stream TEXT NOT NULL,
    seq INTEGER NOT NULL,
    ts TEXT NOT NULL,
    type TEXT NOT NULL,
    data TEXT NOT NULL,
    prev TEXT NOT NULL,
    hash TEXT NOT NULL,
    PRIMARY KEY (stream, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS snapshots (
    stream TEXT NOT NULL,
    name TEXT NOT NULL,
    seq INTEGER NOT NULL,
    hash TEXT NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (stream, name)
);
CREATE TABLE IF NOT EXISTS mirror (
    stream TEXT PRIMARY KEY,
    bytes INTEGER NOT NULL
);
CREATE TRIGGER IF NOT EXISTS events_no_update BEFORE UPDATE ON events
BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;
CREATE TRIGGER IF NOT EXISTS events_no_delete BEFORE DELETE ON events
BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;
"""


def utc_now() -> datetime:
    return datetime.now(UTC)


def format_ts(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True, slots=True)
class StreamInfo:
    stream: str
    first_ts: str
    last_seq: int


class Journal:
    """A directory holding `journal.db` and `jobs/<stream>.jsonl`."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        clock: Callable[[], datetime] = utc_now,
        synchronous: str = "FULL",
        busy_timeout_ms: int = 10_000,
        repair: bool = True,
        _filename: str = "journal.db",
    ) -> None:
        if synchronous not in {"FULL", "NORMAL", "EXTRA"}:
            raise ValueError(f"synchronous must be FULL, NORMAL or EXTRA, not {synchronous!r}")
        self.directory = Path(directory)
        self.mirror_dir = self.directory / "jobs"
        self.path = self.directory / _filename
        self.clock = clock
        old_umask = os.umask(0o077)
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            self.mirror_dir.mkdir(mode=0o700, exist_ok=True)
            self.conn = sqlite3.connect(self.path, timeout=busy_timeout_ms / 1000)
            self._db: Any = None
            self.conn.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
            if self._journal_mode() != "wal" or self._version() < SCHEMA_VERSION:
                self._set_up()
            self.conn.execute(f"PRAGMA synchronous={synchronous}")
            if repair:
                self.repair_mirror()
        except sqlite3.Error as e:
            raise StorageError(f"cannot open journal {self.path}: {e}") from e
        finally:
            os.umask(old_umask)

    @property
    def db(self) -> Any:
        """The sqlite-utils Database that every write goes through; made on first use, so a
        process that only reads (`job status`) does not pay for importing sqlite-utils."""
        if self._db is None:
            import sqlite_utils

            self._db = sqlite_utils.Database(self.conn, execute_plugins=False)
        return self._db

    def _journal_mode(self) -> str:
        return self.conn.execute("PRAGMA journal_mode").fetchone()[0]

    def _version(self) -> int:
        return self.conn.execute("PRAGMA user_version").fetchone()[0]

    def _set_up(self) -> None:
        """WAL and the schema, once: processes opening a new journal at the same moment take
        turns on a file lock (switching to WAL is not covered by SQLite's busy timeout)."""
        fd = os.open(self.directory / ".journal.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if self._journal_mode() != "wal":
                self.conn.execute("PRAGMA journal_mode=wal")
            if self._version() < SCHEMA_VERSION:
                self._migrate()
        finally:
            os.close(fd)

    def _migrate(self) -> None:
        """Bring an older (or new) database to SCHEMA_VERSION; every step is idempotent."""
        self.db.executescript(SCHEMA)
        with self.db.atomic():
            known = {row[0] for row in self.db.execute("SELECT stream FROM mirror")}
            for info in self.streams():
                if info.stream not in known:
                    size = sum(len(e.line().encode()) + 1 for e in self.iter(info.stream))
                    self.db.execute("INSERT INTO mirror (stream, bytes) VALUES (?, ?)", [info.stream, size])
            self.db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    # -- writing -------------------------------------------------------------

    def append(self, stream: str, expected_seq: int, type: str, data: dict[str, Any] | None = None) -> Event:
        """Append one event after `expected_seq` (0 for a new stream)."""
        return self.append_batch(stream, expected_seq, [(type, data or {})])[-1]

    def append_batch(self, stream: str, expected_seq: int, items: Iterable[tuple[str, dict[str, Any]]]) -> list[Event]:
        """Append several events in one transaction; all or nothing."""
        return self.append_many([(stream, expected_seq, list(items))])[0]

    def append_many(self, batches: list[tuple[str, int, list[tuple[str, dict[str, Any]]]]]) -> list[list[Event]]:
        """Append to several streams in one transaction (one commit, one fsync): every stream's
        expected seq must hold, or nothing at all is written."""
        streams = [stream for stream, _, _ in batches]
        if len(set(streams)) != len(streams):
            raise ValueError("append_many takes each stream once")
        for stream, _, items in batches:
            check_stream_id(stream)
            if not items:
                raise ValueError(f"no events to append to {stream}")
        with contextlib.ExitStack() as stack:
            mirrors = {s: stack.enter_context(self._locked_mirror(s)) for s in sorted(streams)}
            written: list[tuple[str, list[Event], int]] = []
            try:
                self.db.execute("BEGIN IMMEDIATE")
                try:
                    ts = format_ts(self.clock())
                    for stream, expected_seq, items in batches:
                        events, mirrored_bytes = self._stage(stream, expected_seq, items, ts)
                        written.append((stream, events, mirrored_bytes))
                    self.db.execute("COMMIT")
                except BaseException:
                    self.db.conn.rollback()
                    raise
            except sqlite3.IntegrityError as e:
                raise AppendConflict(streams[0], batches[0][1], self.last_seq(streams[0])) from e
            except sqlite3.Error as e:
                raise StorageError(f"append to {', '.join(streams)} failed: {e}") from e
            for stream, events, mirrored_bytes in written:
                mirror = mirrors[stream]
                if os.fstat(mirror.fileno()).st_size == mirrored_bytes:
                    _append_lines(mirror, events)  # the usual case: the mirror is exactly in step
                else:
                    self._write_mirror(stream, mirror, events)
        return [events for _, events, _ in written]

    def _stage(
        self, stream: str, expected_seq: int, items: list[tuple[str, dict[str, Any]]], ts: str
    ) -> tuple[list[Event], int]:
        """Inside the transaction: check the fence, insert the events, grow the mirror's size."""
        last_seq, prev = self._last(stream)
        if last_seq != expected_seq:
            raise AppendConflict(stream, expected_seq, last_seq)
        row = self.conn.execute("SELECT bytes FROM mirror WHERE stream = ?", [stream]).fetchone()
        events = []
        for offset, (type, data) in enumerate(items, start=1):
            seq = last_seq + offset
            h = digest(stream, seq, ts, type, data, prev)
            events.append(Event(stream, seq, ts, type, data, prev, h))
            prev = h
        added = sum(len(e.line().encode()) + 1 for e in events)
        self.db.execute(
            "INSERT INTO mirror (stream, bytes) VALUES (?, ?) "
            "ON CONFLICT(stream) DO UPDATE SET bytes = bytes + excluded.bytes",
            [stream, added],
        )
        self.db["events"].insert_all(_rows(events), batch_size=500)
        return events, row[0] if row else 0

    # -- reading -------------------------------------------------------------

    def read(self, stream: str, from_seq: int = 1) -> list[Event]:
        """Every event of `stream` with seq >= from_seq, in order."""
        return list(self.iter(stream, from_seq))

    def iter(self, stream: str, from_seq: int = 1) -> Iterator[Event]:
        import json

        try:
            cursor = self.conn.execute(
                "SELECT seq, ts, type, data, prev, hash FROM events WHERE stream = ? AND seq >= ? ORDER BY seq",
                [stream, from_seq],
            )
            loads = json.loads
            for seq, ts, type, data, prev, h in cursor:
                yield Event(stream, seq, ts, type, loads(data), prev, h)
        except sqlite3.Error as e:
            raise StorageError(f"reading {stream} failed: {e}") from e

    def require(self, stream: str) -> None:
        if self.last_seq(stream) == 0:
            raise UnknownStream(f"no such stream: {stream}")

    def last_seq(self, stream: str) -> int:
        return self._last(stream)[0]

    def event(self, stream: str, seq: int) -> Event | None:
        events = list(self.iter(stream, seq))
        return events[0] if events and events[0].seq == seq else None

    def streams(self) -> list[StreamInfo]:
        """Every stream, oldest first by its first event."""
        rows = self.conn.execute(
            "SELECT e.stream, e.ts, m.last FROM events e JOIN "
            "(SELECT stream, max(seq) AS last FROM events GROUP BY stream) m "
            "ON e.stream = m.stream AND e.seq = 1 ORDER BY e.ts, e.stream"
        ).fetchall()
        return [StreamInfo(s, ts, last) for s, ts, last in rows]

    def _last(self, stream: str) -> tuple[int, str]:
        row = self.conn.execute(
            "SELECT seq, hash FROM events WHERE stream = ? ORDER BY seq DESC LIMIT 1", [stream]
        ).fetchone()
        return (row[0], row[1]) if row else (0, GENESIS)

    # -- snapshots: derived caches, never the truth ---------------------------

    def save_snapshot(self, stream: str, name: str, seq: int, data: dict[str, Any]) -> None:
        """Cache a projection of events 1..seq; it is ignored if event `seq` ever changes."""
        event = self.event(stream, seq)
        if event is None:
            raise UnknownStream(f"no event {stream}#{seq} to snapshot")
        with self.db.atomic():
            self.db["snapshots"].upsert(
                {"stream": stream, "name": name, "seq": seq, "hash": event.hash, "data": canonical(data)},
                pk=("stream", "name"),
            )

    def load_snapshot(self, stream: str, name: str) -> tuple[int, dict[str, Any]] | None:
        import json

        row = self.conn.execute(
            "SELECT s.seq, s.data FROM snapshots s JOIN events e "
            "ON e.stream = s.stream AND e.seq = s.seq AND e.hash = s.hash "
            "WHERE s.stream = ? AND s.name = ?",
            [stream, name],
        ).fetchone()
        return (row[0], json.loads(row[1])) if row else None

    # -- mirror --------------------------------------------------------------

    def mirror_path(self, stream: str) -> Path:
        return self.mirror_dir / f"{stream}.jsonl"

    def repair_mirror(self, stream: str | None = None) -> list[str]:
        """Copy events the mirror lacks from SQLite; returns the streams repaired.

        SQLite records, in each append's transaction, how long the mirror must be; only a
        stream whose file size differs is opened, so a clean open costs one stat per stream.
        """
        repaired = []
        rows = self.conn.execute("SELECT stream, bytes FROM mirror").fetchall()
        targets = [stream] if stream else [s for s, size in rows if _size(self.mirror_path(s)) != size]
        for name in targets:
            with self._locked_mirror(name) as mirror:
                if self._write_mirror(name, mirror, []):
                    repaired.append(name)
        return repaired

    @contextmanager
    def _locked_mirror(self, stream: str) -> Iterator[Any]:
        path = self.mirror_path(stream)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "r+b", buffering=0) as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield f
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def _write_mirror(self, stream: str, f: Any, new: list[Event]) -> bool:
        """Bring the mirror up to date under its lock; True if it had fallen behind.

        A torn last line (the writer died mid-line) is cut only when it is a prefix of the
        line SQLite says belongs there; anything else is left for `verify` to report.
        """
        mirrored, partial_at = _mirror_tail(f)
        if mirrored is None:
            return False
        if partial_at is not None:
            expected = self.event(stream, mirrored + 1)
            os.lseek(f.fileno(), partial_at, os.SEEK_SET)
            partial = os.read(f.fileno(), 1 << 20)
            if expected is None or not expected.line().encode().startswith(partial):
                return False
            os.ftruncate(f.fileno(), partial_at)
        first_new = new[0].seq if new else self.last_seq(stream) + 1
        missing = [e for e in self.iter(stream, mirrored + 1) if e.seq < first_new]
        _append_lines(f, missing + new)
        return bool(missing) or partial_at is not None

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _rows(events: list[Event]) -> Iterator[dict[str, Any]]:
    """Events as rows of the `events` table."""
    for e in events:
        yield {"stream": e.stream, "seq": e.seq, "ts": e.ts, "type": e.type, "data": canonical(e.data),
               "prev": e.prev, "hash": e.hash}  # fmt: skip


def _append_lines(f: Any, events: list[Event]) -> None:
    """One canonical JSON line per event, in one write. (jsonlines reads the mirror back in
    `rebuild`; writing needs nothing from it, and importing it would cost every deploy command
    a tenth of its start-up budget.)"""
    if events:
        f.write("".join(e.line() + "\n" for e in events).encode())


def _mirror_tail(f: Any) -> tuple[int | None, int | None]:
    """(seq of the last complete line or 0, offset of a torn partial line or None).

    The seq is None when the last complete line is not one of ours.
    """
    import json

    fd = f.fileno()
    size = os.fstat(fd).st_size
    if size == 0:
        return 0, None
    chunk = min(size, 1 << 16)
    while True:
        os.lseek(fd, size - chunk, os.SEEK_SET)
        tail = os.read(fd, chunk)
        cut = tail.rfind(b"\n")
        if cut >= 0:
            prev_cut = tail.rfind(b"\n", 0, cut)
            if prev_cut >= 0 or chunk == size:
                break
        elif chunk == size:
            return 0, 0  # one torn line and nothing before it
        chunk = min(size, chunk * 4)
    partial_at = size - chunk + cut + 1 if cut + 1 < len(tail) else None
    line = tail[prev_cut + 1 : cut]
    try:
        return int(json.loads(line)["seq"]), partial_at
    except (ValueError, KeyError, TypeError):
        return None, partial_at


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return -1


def check_stream_id(stream: str) -> None:
    if not STREAM_ID.match(stream):
        raise ValueError(f"invalid stream id {stream!r}: use letters, digits, '.', '_' or '-'")


def delete_streams(journal: Journal, streams: list[str]) -> int:
    """Remove whole streams (SQLite rows, snapshots, mirror files); returns events removed.

    The append-only triggers are lifted only inside this one transaction. Callers decide what
    may go and journal the decision themselves.
    """
    if not streams:
        return 0
    marks = ",".join("?" for _ in streams)
    try:
        journal.db.execute("BEGIN IMMEDIATE")
        try:
            journal.db.execute("DROP TRIGGER events_no_delete")
            removed = journal.db.execute(f"DELETE FROM events WHERE stream IN ({marks})", streams).rowcount
            journal.db.execute(f"DELETE FROM snapshots WHERE stream IN ({marks})", streams)
            journal.db.execute(f"DELETE FROM mirror WHERE stream IN ({marks})", streams)
            journal.db.execute(
                "CREATE TRIGGER events_no_delete BEFORE DELETE ON events "
                "BEGIN SELECT RAISE(ABORT, 'events are append-only'); END"
            )
            journal.db.execute("COMMIT")
        except BaseException:
            journal.db.conn.rollback()
            raise
    except sqlite3.Error as e:
        raise StorageError(f"pruning failed: {e}") from e
    for stream in streams:
        journal.mirror_path(stream).unlink(missing_ok=True)
    return removed


def rebuild(directory: str | os.PathLike[str]) -> int:
    """Recreate `journal.db` from the JSONL mirror, checking every hash; returns events restored.

    Refuses to run over an existing database: move it aside first. A line that does not
    verify stops the rebuild with its file and line, and nothing is left half-written.
    """
    import jsonlines

    from .errors import CorruptJournal
    from .event import Event

    base = Path(directory)
    db_path = base / "journal.db"
    if db_path.exists():
        raise StorageError(f"{db_path} exists; move it aside before rebuilding from the mirror")
    streams: list[list[Event]] = []
    for path in sorted((base / "jobs").glob("*.jsonl")):
        events: list[Event] = []
        prev = GENESIS
        with jsonlines.open(path) as reader:
            try:
                for number, obj in enumerate(reader, start=1):
                    try:
                        event = Event.from_dict(obj)
                    except (KeyError, TypeError) as e:
                        raise CorruptJournal(f"{path}:{number}: not an event ({e})") from e
                    if event.stream != path.stem or event.seq != number or event.prev != prev:
                        raise CorruptJournal(f"{path}:{number}: seq {event.seq}: out of order or chain broken")
                    if event.hash != event.expected_hash():
                        raise CorruptJournal(f"{path}:{number}: seq {event.seq}: hash does not match content")
                    events.append(event)
                    prev = event.hash
            except jsonlines.InvalidLineError as e:
                raise CorruptJournal(f"{path}:{e.lineno}: not valid JSON") from e
        if events:
            streams.append(events)
    stamp = format_ts(utc_now()).replace(":", "")
    for suffix in ("-wal", "-shm"):  # a lost database's WAL must never be replayed onto the new one
        stale = base / f"journal.db{suffix}"
        if stale.exists():
            os.replace(stale, base / f"journal.db{suffix}.orphaned-{stamp}")
    tmp = base / "journal.db.rebuild"
    for leftover in base.glob("journal.db.rebuild*"):
        leftover.unlink()
    count = 0
    with Journal(base, repair=False, _filename=tmp.name) as fresh:
        fresh.db.execute("BEGIN IMMEDIATE")
        for events in streams:
            fresh.db["events"].insert_all(_rows(events), batch_size=500)
            size = sum(len(e.line().encode()) + 1 for e in events)
            fresh.db.execute("INSERT INTO mirror (stream, bytes) VALUES (?, ?)", [events[0].stream, size])
            count += len(events)
        fresh.db.execute("COMMIT")
        fresh.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    for suffix in ("-wal", "-shm"):
        (base / f"journal.db.rebuild{suffix}").unlink(missing_ok=True)
    os.replace(tmp, db_path)
    return count
