"""The workspace: one private directory (CQDEPLOY_HOME) holding config, journal and logs."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from journal import Journal


@dataclass(frozen=True)
class Workspace:
    home: Path

    @classmethod
    def from_env(cls) -> Workspace:
        home = os.environ.get("CQDEPLOY_HOME") or os.path.join(os.getcwd(), ".cqdeploy")
        return cls(Path(home).absolute())

    @property
    def config_path(self) -> Path:
        return self.home / "config.toml"

    @property
    def manifest_path(self) -> Path:
        return self.home / "manifest.toml"

    @property
    def runner_logs(self) -> Path:
        return self.home / "runners"

    @property
    def sandbox_dir(self) -> Path:
        return self.home / "sandbox"

    def ensure(self) -> Workspace:
        """Create the workspace private to its owner (0700 directories, 0600 files)."""
        os.umask(0o077)
        for path in (self.home, self.runner_logs):
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(path, 0o700)
        return self

    def journal(self) -> Journal:
        from journal import Journal, JournalError

        from .errors import JournalProblem

        self.ensure()
        try:
            return Journal(self.home)
        except JournalError as e:
            raise JournalProblem(str(e)) from e

    def runner_log(self, job_id: str) -> Path:
        return self.runner_logs / f"{job_id}.log"


def write_private(path: Path, text: str) -> None:
    """Write a file atomically with mode 0600: a reader sees the old or the new, never half."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
