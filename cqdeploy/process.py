"""Starting processes that must outlive their caller: runners and sandbox daemons."""

from __future__ import annotations

import os
import shutil
import subprocess


def spawn_detached(argv: list[str], *, log_path: str, env: dict[str, str]) -> None:
    """Start `argv` in its own session with stdin closed and stderr/stdout to `log_path`.

    `setsid --fork` makes it an orphan of init at once, so neither a closed terminal nor the
    caller's exit reaches it, and no zombie or unwaited child is left in a long-lived caller.
    """
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        setsid = shutil.which("setsid")
        if setsid:
            done = subprocess.run(
                [setsid, "--fork", *argv],
                stdin=subprocess.DEVNULL,
                stdout=fd,
                stderr=fd,
                env=env,
                check=False,
                close_fds=True,
            )
            if done.returncode != 0:
                raise OSError(f"setsid --fork exited {done.returncode}")
        else:  # pragma: no cover - util-linux is installed wherever cqdeploy runs
            child = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=fd,
                stderr=fd,
                env=env,
                start_new_session=True,
                close_fds=True,
            )
            child.returncode = 0  # deliberately not waited: it is meant to outlive us
    finally:
        os.close(fd)
