"""Runs scripts on this machine with bash: the sandbox target and the tests."""

from __future__ import annotations

import subprocess

from ..errors import CommandTimeout, TransportError
from .base import Result, Transport


class LocalTransport(Transport):
    name = "local"

    def run(self, script: str, *, stdin: bytes = b"", timeout: float = 60.0) -> Result:
        try:
            done = subprocess.run(
                ["bash", "-c", script],
                input=stdin,
                capture_output=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as e:
            raise CommandTimeout(f"local command did not finish within {timeout:.1f}s") from e
        except OSError as e:
            raise TransportError(f"cannot run bash locally: {e}") from e
        return Result(done.returncode, done.stdout, done.stderr)
