"""The journal: fenced appends, replay, the JSONL mirror and its repair, verification."""

from __future__ import annotations

import multiprocessing
import os
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from journal import GENESIS, AppendConflict, Journal, canonical, verify

ROOT = Path(__file__).parents[1]


@pytest.fixture
def journal(tmp_path: Path):
    with Journal(tmp_path / "j") as j:
        yield j


def fill(j: Journal, stream: str, n: int) -> None:
    for i in range(n):
        j.append(stream, i, "tick", {"i": i})


def test_append_assigns_seq_and_chains_hashes(journal: Journal):
    a = journal.append("s", 0, "first", {"x": 1})
    b = journal.append("s", 1, "second", {"x": 2})
    assert (a.seq, b.seq) == (1, 2)
    assert a.prev == GENESIS and b.prev == a.hash
    assert a.hash == a.expected_hash() and b.hash != a.hash
    assert [e.type for e in journal.read("s")] == ["first", "second"]
    assert [e.seq for e in journal.read("s", 2)] == [2]


def test_conflicting_append_raises_and_writes_nothing(journal: Journal):
    fill(journal, "s", 2)
    with pytest.raises(AppendConflict, match="expected last seq 1, found 2"):
        journal.append("s", 1, "late", {})
    assert journal.last_seq("s") == 2
    assert len(journal.mirror_path("s").read_text().splitlines()) == 2


def test_batch_is_all_or_nothing(journal: Journal):
    fill(journal, "s", 1)
    with pytest.raises(AppendConflict):
        journal.append_batch("s", 0, [("a", {}), ("b", {})])
    events = journal.append_batch("s", 1, [("a", {}), ("b", {})])
    assert [e.seq for e in events] == [2, 3]
    assert events[1].prev == events[0].hash


def test_streams_lists_each_stream_with_its_last_seq(journal: Journal):
    fill(journal, "a", 3)
    fill(journal, "b", 1)
    assert [(s.stream, s.last_seq) for s in journal.streams()] == [("a", 3), ("b", 1)]


@pytest.mark.parametrize("bad", ["", "../x", "a b", "-x", "a/b"])
def test_stream_ids_that_are_not_file_names_are_refused(journal: Journal, bad: str):
    with pytest.raises(ValueError, match="invalid stream id"):
        journal.append(bad, 0, "x", {})


def test_mirror_is_one_canonical_line_per_event(journal: Journal):
    fill(journal, "s", 3)
    lines = journal.mirror_path("s").read_text().splitlines()
    assert lines == [canonical(e.as_dict()) for e in journal.read("s")]


def test_files_are_private(tmp_path: Path):
    with Journal(tmp_path / "p") as j:
        fill(j, "s", 1)
    for path in [tmp_path / "p", tmp_path / "p" / "jobs"]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o700
    for path in [tmp_path / "p" / "journal.db", tmp_path / "p" / "jobs" / "s.jsonl"]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_lost_mirror_line_is_repaired_on_next_open(tmp_path: Path):
    with Journal(tmp_path / "j") as j:
        fill(j, "s", 3)
        path = j.mirror_path("s")
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:1]))  # the process died after two SQLite commits
    with Journal(tmp_path / "j") as j:
        assert path.read_text() == "".join(lines)
        assert verify(j) == []


def test_torn_mirror_line_is_cut_and_rewritten(tmp_path: Path):
    with Journal(tmp_path / "j") as j:
        fill(j, "s", 2)
        path = j.mirror_path("s")
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) - 40])  # died in the middle of line 2
    with Journal(tmp_path / "j") as j:
        assert path.read_bytes() == whole
        j.append("s", 2, "after", {})
        assert verify(j) == []


def test_append_after_a_crash_catches_the_mirror_up_first(tmp_path: Path):
    with Journal(tmp_path / "j", repair=False) as j:
        fill(j, "s", 2)
        path = j.mirror_path("s")
        path.write_text(path.read_text().splitlines(keepends=True)[0])
        j.append("s", 2, "next", {})
        assert [e.seq for e in j.read("s")] == list(range(1, 4))
        assert verify(j) == []


def test_verify_names_file_line_and_seq_of_an_edited_mirror_line(journal: Journal):
    fill(journal, "s", 3)
    path = journal.mirror_path("s")
    lines = path.read_text().splitlines(keepends=True)
    lines[1] = lines[1].replace('"i":1', '"i":9')
    path.write_text("".join(lines))
    problems = verify(journal)
    assert [(p.file, p.line, p.seq) for p in problems] == [(str(path), 2, 2)]
    assert "edited" in problems[0].message


def test_verify_detects_a_removed_and_a_reordered_mirror_line(journal: Journal):
    fill(journal, "s", 3)
    path = journal.mirror_path("s")
    lines = path.read_text().splitlines(keepends=True)
    path.write_text(lines[0] + lines[2])
    problems = verify(journal)
    assert (problems[0].line, problems[0].seq) == (2, 2)
    assert "holds seq 3" in problems[0].message
    path.write_text(lines[1] + lines[0] + lines[2])
    assert [(p.line, p.seq) for p in verify(journal)] == [(1, 1), (2, 2)]


def test_verify_detects_an_edited_sqlite_row(journal: Journal):
    fill(journal, "s", 3)
    conn = sqlite3.connect(journal.path)
    conn.execute("DROP TRIGGER events_no_update")  # what someone rewriting history would do
    conn.execute("""UPDATE events SET data = '{"i":7}' WHERE stream = 's' AND seq = 2""")
    conn.commit()
    conn.close()
    problems = verify(journal)
    assert any(p.seq == 2 and "hash does not match" in p.message for p in problems)
    assert any(p.line == 2 and p.seq == 2 for p in problems)  # the mirror disagrees too


def test_sqlite_refuses_updates_and_deletes(journal: Journal):
    fill(journal, "s", 1)
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        journal.db.execute("UPDATE events SET type = 'x'")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        journal.db.execute("DELETE FROM events")


def test_snapshot_is_ignored_once_its_event_changes(journal: Journal):
    fill(journal, "s", 2)
    journal.save_snapshot("s", "view", 2, {"n": 2})
    assert journal.load_snapshot("s", "view") == (2, {"n": 2})
    journal.db.execute("DROP TRIGGER events_no_update")
    journal.db.execute("UPDATE events SET hash = 'x' WHERE seq = 2")
    journal.db.conn.commit()
    assert journal.load_snapshot("s", "view") is None


def _contend(directory: str, barrier, results) -> None:
    j = Journal(directory)
    barrier.wait()
    try:
        j.append("race", 1, "claim", {"pid": os.getpid()})
        results.put("won")
    except AppendConflict:
        results.put("lost")


def test_two_processes_appending_the_same_seq_exactly_one_wins(tmp_path: Path):
    directory = str(tmp_path / "j")
    with Journal(directory) as j:
        j.append("race", 0, "start", {})
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(4), ctx.Queue()
    procs = [ctx.Process(target=_contend, args=(directory, barrier, results)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    outcomes = sorted(results.get(timeout=5) for _ in procs)
    assert outcomes == ["lost", "lost", "lost", "won"]
    with Journal(directory) as j:
        assert j.last_seq("race") == 2
        assert verify(j) == []


OPEN = "import sys; from journal import Journal; Journal(sys.argv[1]).close()"


def test_many_processes_creating_one_new_journal_at_once_all_succeed(tmp_path):
    for round_ in range(5):
        directory = tmp_path / f"j{round_}"
        procs = [
            subprocess.Popen([sys.executable, "-c", OPEN, str(directory)], stderr=subprocess.PIPE, cwd=ROOT)
            for _ in range(10)
        ]
        for p in procs:
            with p.stderr:
                assert p.wait(30) == 0, p.stderr.read().decode()[-300:]
        with Journal(directory) as j:
            assert j.db.journal_mode == "wal"
