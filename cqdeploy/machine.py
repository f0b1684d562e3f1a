"""The job's state machine: a pure fold of journal events into a state.

No I/O and no clock: the same events always give the same state, and an event that is
illegal where the job stands raises `IllegalEvent` instead of being skipped.
"""

from __future__ import annotations

from enum import Enum
from typing import Any

from transitions import Machine, MachineError

from .errors import IllegalEvent

STEPS: tuple[str, ...] = ("fetch", "rsync", "build", "import", "apply", "pin", "restart", "verify")


class State(Enum):
    PENDING = "pending"
    FETCH = "fetch"
    RSYNC = "rsync"
    BUILD = "build"
    IMPORT = "import"
    APPLY = "apply"
    PIN = "pin"
    RESTART = "restart"
    VERIFY = "verify"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset({State.SUCCEEDED, State.FAILED, State.TIMED_OUT, State.CANCELLED})
STEP_STATES = [State(s) for s in STEPS]
LIVE = [State.PENDING, *STEP_STATES]

# event type -> trigger; every event the runner or the CLI appends appears here
TRIGGERS: dict[str, str] = {
    "runner.started": "note_runner",
    "job.resumed": "note_runner",
    "runner.heartbeat": "note_runner",
    "job.cancel_requested": "note_runner",
    "commit.resolved": "resolve",
    "step.remote_log": "step_event",
    "step.sentinel_seen": "step_event",
    "step.completed": "complete_step",
    "step.failed": "step_event",
    "health.commit_mismatch": "mismatch",
    "job.succeeded": "succeed",
    "job.failed": "fail",
    "job.timed_out": "time_out",
    "job.cancelled": "cancel",
}


def _transitions() -> list[dict[str, Any]]:
    table: list[dict[str, Any]] = []
    previous = State.PENDING
    for state in STEP_STATES:
        table.append(
            {
                "trigger": f"start_{state.value}",
                "source": previous,
                "dest": state,
                "conditions": "_previous_done",
                "after": "_opened",
            }
        )
        table.append(
            {
                "trigger": f"start_{state.value}",
                "source": state,
                "dest": state,
                "conditions": "_retry_allowed",
                "after": "_opened",
            }
        )
        previous = state
    table += [
        {"trigger": "note_runner", "source": LIVE, "dest": None},
        {"trigger": "resolve", "source": State.FETCH, "dest": None, "conditions": "_in_open_step"},
        {"trigger": "step_event", "source": STEP_STATES, "dest": None, "conditions": "_in_open_step"},
        {
            "trigger": "complete_step",
            "source": STEP_STATES,
            "dest": None,
            "conditions": "_in_open_step",
            "after": "_closed",
        },
        {"trigger": "mismatch", "source": State.VERIFY, "dest": None, "conditions": "_in_open_step"},
        {
            "trigger": "succeed",
            "source": State.VERIFY,
            "dest": State.SUCCEEDED,
            "conditions": "_previous_done",
        },
        {"trigger": "fail", "source": LIVE, "dest": State.FAILED},
        {"trigger": "time_out", "source": LIVE, "dest": State.TIMED_OUT},
        {"trigger": "cancel", "source": LIVE, "dest": State.CANCELLED},
    ]
    return table


class JobMachine:
    """Where a job stands: its state, which steps completed, each step's attempt."""

    state: State
    trigger: Any  # bound by transitions.Machine

    def __init__(
        self,
        state: State = State.PENDING,
        completed: list[str] | None = None,
        attempts: dict[str, int] | None = None,
        open_step: bool = False,
    ) -> None:
        self.completed: list[str] = list(completed or [])
        self.attempts: dict[str, int] = dict(attempts or {})
        self.open_step = open_step
        self._machine = Machine(
            model=self,
            states=State,
            initial=state,
            transitions=_transitions(),
            auto_transitions=False,
            send_event=True,
        )

    # -- the one entry point -------------------------------------------------

    def apply(self, type: str, data: dict[str, Any]) -> None:
        """Fold one event in, or raise IllegalEvent naming it and the state."""
        if type == "step.started":
            step = data.get("step")
            if step not in STEPS:
                raise IllegalEvent(f"step.started names unknown step {step!r}")
            trigger = f"start_{step}"
        elif type in TRIGGERS:
            trigger = TRIGGERS[type]
        else:
            raise IllegalEvent(f"unknown event type {type!r}")
        try:
            moved = self.trigger(trigger, **data)
        except MachineError as e:
            raise IllegalEvent(f"{type} is not allowed in state {self.state.value}") from e
        if not moved:
            raise IllegalEvent(f"{type} {_brief(data)} is not allowed in state {self.state.value}")

    @property
    def current_step(self) -> str | None:
        return self.state.value if self.state in STEP_STATES else None

    @property
    def next_step(self) -> str | None:
        """The step a runner must run (or re-attach to) next; None when terminal."""
        if self.state.terminal:
            return None
        if self.state is State.PENDING:
            return STEPS[0]
        step = self.state.value
        if step not in self.completed:
            return step
        index = STEPS.index(step)
        return STEPS[index + 1] if index + 1 < len(STEPS) else None

    def snapshot(self) -> dict[str, Any]:
        return {
            "state": self.state.value,
            "completed": self.completed,
            "attempts": self.attempts,
            "open_step": self.open_step,
        }

    @classmethod
    def restore(cls, snap: dict[str, Any]) -> JobMachine:
        return cls(State(snap["state"]), snap["completed"], snap["attempts"], snap["open_step"])

    # -- conditions and callbacks (called by transitions) ---------------------

    def _previous_done(self, event: Any) -> bool:
        return self.state is State.PENDING or self.state.value in self.completed

    def _retry_allowed(self, event: Any) -> bool:
        step = self.state.value
        attempt = event.kwargs.get("attempt", 0)
        return step not in self.completed and attempt == self.attempts.get(step, 0) + 1

    def _in_open_step(self, event: Any) -> bool:
        step = event.kwargs.get("step", self.state.value)
        return self.open_step and step == self.state.value

    def _opened(self, event: Any) -> None:
        self.attempts[self.state.value] = event.kwargs.get("attempt", 1)
        self.open_step = True

    def _closed(self, event: Any) -> None:
        self.completed.append(self.state.value)
        self.open_step = False


def _brief(data: dict[str, Any]) -> str:
    step = data.get("step")
    return f"(step {step})" if step else ""


def replay(events: list[tuple[str, dict[str, Any]]]) -> JobMachine:
    """Rebuild the machine from (type, data) pairs; the first must be job.created."""
    if not events or events[0][0] != "job.created":
        raise IllegalEvent("a job's first event must be job.created")
    machine = JobMachine()
    for type, data in events[1:]:
        if type == "job.created":
            raise IllegalEvent("job.created may appear only once, first")
        machine.apply(type, data)
    return machine
