"""Scripts that run a step detached on the target and let a runner find it again.

A step lives in a private directory named for (job, step, attempt):

    <tmp>/unidesk-deploy-<job>-<n>-<step>-a<attempt>.d/   0700: pid, exit, result, done (fifo)
    <tmp>/unidesk-deploy-<job>-<n>-<step>-a<attempt>.log  0600: the step's output

`launch` refuses to start a directory that exists, so no step ever starts twice. The step
writes its exit code to `exit` (atomically, by rename) and then 512 bytes into the `done` fifo;
`wait` blocks on that fifo, so the runner hears of the end at once, without polling, and
re-checks `exit` every second. Several bytes, because bash's `read -t` first selects and then
reads: two waiters woken by a single byte would leave one blocked in read() for good (an orphaned
waiter of a killed runner and the new runner's waiter do meet).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from .machine import STEPS

q = shlex.quote


@dataclass(frozen=True)
class StepRun:
    job_id: str
    step: str
    attempt: int
    tmp_dir: str

    @property
    def name(self) -> str:
        return f"unidesk-deploy-{self.job_id}-{STEPS.index(self.step) + 1}-{self.step}-a{self.attempt}"

    @property
    def dir(self) -> str:
        return f"{self.tmp_dir}/{self.name}.d"

    @property
    def log(self) -> str:
        return f"{self.tmp_dir}/{self.name}.log"

    @property
    def sentinel(self) -> str:
        return f"{self.dir}/exit"


def env_file(secret_env: dict[str, str]) -> bytes:
    """The body `launch` reads from stdin: one `export K=V` per line, values quoted."""
    return "".join(f"export {k}={q(v)}\n" for k, v in sorted(secret_env.items())).encode()


def launch(run: StepRun, script: str, path_prepend: tuple[str, ...] = ()) -> str:
    """Start `script` in its own session; reads the secret env file from stdin."""
    d, log = q(run.dir), q(run.log)
    path = "".join(f"{q(p)}:" for p in path_prepend)
    wrapper = (
        f"echo $$ > {d}/pid.tmp && mv {d}/pid.tmp {d}/pid\n"
        "cd /\n"
        f"export CQDEPLOY_STEP_DIR={d}\n"
        f'export PATH={path}"$PATH"\n'
        f"set -a; . {d}/env; set +a; rm -f {d}/env\n"
        f"bash {d}/script >> {log} 2>&1 < /dev/null\n"
        "rc=$?\n"
        f"printf '%s\\n' \"$rc\" > {d}/exit.tmp && mv {d}/exit.tmp {d}/exit\n"
        f"printf %0512d 0 1<> {d}/done\n"
    )
    return (
        "set -eu\n"
        "trap '' HUP\n"
        "umask 077\n"
        f"mkdir -p {q(run.tmp_dir)}\n"
        f"mkdir -m 700 {d} 2>/dev/null || {{ echo already-started; exit 17; }}\n"
        f"cat > {d}/env\n"
        f"printf '%s' {q(script)} > {d}/script\n"
        f"printf '%s' {q(wrapper)} > {d}/wrapper\n"
        f"mkfifo {d}/done\n"
        f": > {log}\n"
        f"setsid nohup bash {d}/wrapper > /dev/null 2>&1 < /dev/null &\n"
        "echo started $!\n"
    )


ALREADY_STARTED = 17


def wait(run: StepRun, limit_s: int) -> str:
    """Block until the step ends or `limit_s` passes; print `exit N` then its result, or
    `waiting` (still running), `absent` (never started) or `lost` (gone without an exit code)."""
    d = q(run.dir)
    return (
        f"d={d}\n"
        'if [ ! -d "$d" ]; then echo absent; exit 0; fi\n'
        'if [ ! -e "$d/pid" ] && [ ! -e "$d/exit" ] && [ $(( $(date +%s) - $(stat -c %Y "$d") )) -gt 5 ]; then\n'
        "  echo absent; exit 0\n"  # the launch died before the step began: it never started
        "fi\n"
        'exec 3<>"$d/done"\n'
        f"end=$((SECONDS + {int(limit_s)}))\n"
        'while [ ! -e "$d/exit" ]; do\n'
        '  if [ "$SECONDS" -ge "$end" ]; then echo waiting; exit 0; fi\n'
        '  pid=$(cat "$d/pid" 2>/dev/null || true)\n'
        '  if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null && [ ! -e "$d/exit" ]; then\n'
        "    echo lost; exit 0\n"
        "  fi\n"
        "  read -t 1 -n 1 -u 3 _ || true\n"
        "done\n"
        'printf \'exit %s\\n\' "$(cat "$d/exit")"\n'
        'if [ -e "$d/result" ]; then cat "$d/result"; fi\n'
    )


def kill(run: StepRun) -> str:
    """Stop the step's whole process group (it is its own session)."""
    d = q(run.dir)
    return (
        f"pid=$(cat {d}/pid 2>/dev/null) || exit 0\n"
        'kill -TERM -- "-$pid" 2>/dev/null || true\n'
        "sleep 0.2\n"
        'kill -KILL -- "-$pid" 2>/dev/null || true\n'
    )


def tail(path: str, nbytes: int) -> str:
    return f"tail -c {int(nbytes)} {q(path)} 2>/dev/null || true"
