"""The transport interface: run a bash script with stdin, get exit code and output."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass


@dataclass(frozen=True)
class Result:
    exit_code: int
    stdout: bytes
    stderr: bytes

    @property
    def text(self) -> str:
        return self.stdout.decode("utf-8", "replace")


class Transport(ABC):
    """One connection to a target, reused for every command of a runner."""

    name: str = "transport"

    @abstractmethod
    def run(self, script: str, *, stdin: bytes = b"", timeout: float = 60.0) -> Result:
        """Run `script` with bash; raise CommandTimeout past `timeout`, TransportError if unreachable."""

    def close(self) -> None:  # noqa: B027 - optional for transports without a connection
        """Release the connection."""

    def __enter__(self) -> Transport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
