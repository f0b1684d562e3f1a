"""cqdeploy's errors, each with the exit code the CLI gives it.

CqdeployError (1)
├── InvalidInput (2)        bad commit id, refused option, unknown provider
├── ConfigError (3)         config.toml or the desired manifest is wrong
├── UnknownJob (4)          no job with that id in the journal
├── JobStateError (5)       the job cannot do that now (resume a finished job)
├── LockHeld (9)            another job holds the (provider, service) deploy lock
├── IllegalEvent (7)        an event that the job's state machine refuses
├── JournalProblem (7)      the journal failed to verify or to store
├── TransportError (6)      the target could not be reached or a command misbehaved
│   ├── ConnectError (6)    unreachable, or our keys were refused
│   ├── HostKeyError (6)    the host key is unknown or changed: nothing was sent
│   ├── ConnectionLost (6)  the link broke while a command ran
│   └── CommandTimeout (6)
├── StepFailed (1)          a pipeline step exited non-zero
├── HealthCheckFailed (1)   /health did not prove the new commit
└── SandboxError (8)        the embedded sandbox could not be created or driven
"""

from __future__ import annotations


class CqdeployError(Exception):
    """Base of every error cqdeploy raises on purpose."""

    exit_code = 1


class InvalidInput(CqdeployError):
    exit_code = 2


class ConfigError(CqdeployError):
    exit_code = 3


class UnknownJob(CqdeployError):
    exit_code = 4


class JobStateError(CqdeployError):
    exit_code = 5


class LockHeld(CqdeployError):
    exit_code = 9


class TransportError(CqdeployError):
    exit_code = 6


class CommandTimeout(TransportError):
    pass


class ConnectError(TransportError):
    """The target could not be reached or refused us."""


class HostKeyError(TransportError):
    """The target's host key is unknown or changed; nothing was sent to it."""


class ConnectionLost(TransportError):
    """The link broke while a command ran; the command's outcome is unknown."""


class IllegalEvent(CqdeployError):
    exit_code = 7


class JournalProblem(CqdeployError):
    exit_code = 7


class StepFailed(CqdeployError):
    pass


class HealthCheckFailed(CqdeployError):
    pass


class SandboxError(CqdeployError):
    exit_code = 8
