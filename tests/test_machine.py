"""The job state machine: legal paths, refused events, deterministic replay."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cqdeploy.errors import IllegalEvent
from cqdeploy.machine import STEPS, TERMINAL, JobMachine, State, replay


def happy_path() -> list[tuple[str, dict]]:
    events: list[tuple[str, dict]] = [("job.created", {}), ("runner.started", {})]
    for s in STEPS:
        events += [("step.started", {"step": s, "attempt": 1}), ("step.completed", {"step": s})]
    return [*events, ("job.succeeded", {})]


def test_the_eight_steps_in_order_end_succeeded():
    m = replay(happy_path())
    assert m.state is State.SUCCEEDED
    assert m.completed == list(STEPS)
    assert m.next_step is None


def test_next_step_follows_the_last_completed_one():
    m = replay(happy_path()[:6])  # fetch and rsync completed
    assert (m.state, m.next_step) == (State.RSYNC, "build")
    m.apply("step.started", {"step": "build", "attempt": 1})
    assert (m.current_step, m.next_step) == ("build", "build")


@pytest.mark.parametrize(
    ("prefix", "event", "message"),
    [
        (2, ("step.started", {"step": "rsync", "attempt": 1}), "not allowed in state pending"),
        (4, ("step.started", {"step": "fetch", "attempt": 1}), "not allowed in state fetch"),
        (4, ("step.started", {"step": "build", "attempt": 1}), "not allowed in state fetch"),
        (3, ("step.completed", {"step": "rsync"}), "not allowed in state fetch"),
        (2, ("job.succeeded", {}), "not allowed in state pending"),
        (17, ("job.succeeded", {}), "not allowed in state verify"),
        (2, ("commit.resolved", {"commit": "a" * 40}), "not allowed in state pending"),
        (2, ("step.started", {"step": "deploy", "attempt": 1}), "unknown step"),
        (2, ("made.up", {}), "unknown event type"),
    ],
)
def test_illegal_events_raise_instead_of_being_skipped(prefix, event, message):
    m = replay(happy_path()[:prefix])
    with pytest.raises(IllegalEvent, match=message):
        m.apply(*event)


def test_nothing_follows_a_terminal_state():
    for end in ("job.failed", "job.timed_out", "job.cancelled"):
        m = replay([("job.created", {}), ("runner.started", {}), (end, {})])
        assert m.state in TERMINAL
        with pytest.raises(IllegalEvent):
            m.apply("runner.started", {})


def test_a_step_restarts_only_with_the_next_attempt_and_only_if_unfinished():
    m = replay(happy_path()[:3])  # fetch started, attempt 1
    with pytest.raises(IllegalEvent):
        m.apply("step.started", {"step": "fetch", "attempt": 1})
    m.apply("step.started", {"step": "fetch", "attempt": 2})
    assert m.attempts["fetch"] == 2
    m.apply("step.completed", {"step": "fetch"})
    with pytest.raises(IllegalEvent):
        m.apply("step.started", {"step": "fetch", "attempt": 3})


def test_job_created_only_first():
    with pytest.raises(IllegalEvent, match="first event"):
        replay([("runner.started", {})])
    with pytest.raises(IllegalEvent, match="only once"):
        replay([("job.created", {}), ("job.created", {})])


def test_snapshot_restores_the_same_machine():
    m = replay(happy_path()[:7])
    again = JobMachine.restore(m.snapshot())
    assert again.snapshot() == m.snapshot()
    again.apply("step.completed", {"step": "build"})
    assert again.next_step == "import"


EVENTS = st.one_of(
    st.tuples(
        st.just("step.started"),
        st.fixed_dictionaries({"step": st.sampled_from(STEPS), "attempt": st.integers(1, 3)}),
    ),
    st.tuples(st.just("step.completed"), st.fixed_dictionaries({"step": st.sampled_from(STEPS)})),
    st.tuples(
        st.sampled_from(
            ["runner.started", "job.resumed", "job.succeeded", "job.failed", "job.timed_out", "job.cancelled"]
        ),
        st.just({}),
    ),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(EVENTS, max_size=40))
def test_random_sequences_never_reach_an_illegal_state_and_replay_is_deterministic(seq):
    m = JobMachine()
    accepted = [("job.created", {})]
    for type, data in seq:
        before = m.snapshot()
        try:
            m.apply(type, data)
        except IllegalEvent:
            assert m.snapshot() == before  # a refused event changes nothing
            continue
        accepted.append((type, data))
        # invariants: steps complete in order, a terminal success only after all eight
        assert m.completed == list(STEPS[: len(m.completed)])
        if m.state is State.SUCCEEDED:
            assert m.completed == list(STEPS)
    assert replay(accepted).snapshot() == m.snapshot()
