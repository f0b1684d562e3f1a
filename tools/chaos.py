"""Fault injection: SIGKILL the runner at every step boundary and at random points inside every
step, resume, and check that nothing was run twice, lost or left behind.

    python tools/chaos.py [--trials N] [--max-seconds S] [--seed X] [--only SCENARIO,...] [--json]

Scenarios are `after-<step>` (the runner is held at that boundary and killed there) and
`in-<step>` (killed a random moment after the step started). Bounded: N trials per scenario and
S seconds in all. Prints a table; with --json, one JSON object. Exit 1 if any promise broke.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import table

from cqdeploy.jobs import load_view
from cqdeploy.machine import STEPS
from cqdeploy.sandbox import Sandbox
from cqdeploy.sandbox.cluster import pid_alive
from cqdeploy.workspace import Workspace
from journal import verify

SHIM_STEPS = ("build", "import", "apply", "pin", "restart")
EFFECTS = ("docker build", "ctr import", "kubectl apply", "kubectl rollout restart")
STEP_SLEEP_S = 0.3


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cqdeploy", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=60,
        check=False,
    )


def view_of(ws: Workspace, job: str):
    with ws.journal() as j:
        return load_view(j, job, save_snapshot=False)


def wait_for(ws: Workspace, job: str, predicate, limit_s: float = 60):
    end = time.monotonic() + limit_s
    while True:
        view = view_of(ws, job)
        if predicate(view) or time.monotonic() > end:
            return view
        time.sleep(0.01)


def trial(ws: Workspace, box: Sandbox, scenario: str, rng: random.Random) -> dict:
    kind, step = scenario.split("-", 1)
    env = {"CQDEPLOY_FAULT_HOLD_AFTER": step, "CQDEPLOY_FAULT_HOLD_S": "30"} if kind == "after" else {}
    before = box.counters()
    started = cli("codex", "deploy", box.head(), env=env)
    if started.returncode != 0:
        raise SystemExit(f"deploy refused: {started.stderr.strip()}")
    job = json.loads(started.stdout)["jobId"]
    if kind == "after":
        view = wait_for(ws, job, lambda v: step in v.machine.completed or v.state.terminal)
    else:
        view = wait_for(ws, job, lambda v: v.step(step)["attempt"] > 0 or v.state.terminal)
        time.sleep(rng.uniform(0, STEP_SLEEP_S if step in SHIM_STEPS else 0.05))
    killed = False
    pid = (view.data.get("runner") or {}).get("pid")
    if pid and not view.state.terminal:
        try:
            os.kill(pid, signal.SIGKILL)
            killed = True
        except ProcessLookupError:
            pass
    wait_for(ws, job, lambda v: not pid or not pid_alive(pid), 10)
    view = view_of(ws, job)
    if not view.state.terminal:
        resumed = cli("job", "resume", job)
        if resumed.returncode != 0:
            raise SystemExit(f"resume refused: {resumed.stderr.strip()}")
    view = wait_for(ws, job, lambda v: v.state.terminal)
    with ws.journal() as j:
        events = j.read(job)
        mirror_ok = verify(j, job) == []
    completed: set[str] = set()
    reruns = 0
    for e in events:
        if e.type == "step.completed":
            completed.add(e.data["step"])
        elif e.type == "step.started" and e.data["step"] in completed:
            reruns += 1
    after = box.counters()
    repeated = sum(1 for k in EFFECTS if after.get(k, 0) - before.get(k, 0) != 1)
    leftovers = 0
    for s in view.data["steps"]:
        if s["remoteDir"] and (Path(s["remoteDir"]) / "pid").exists():
            leftovers += pid_alive(int((Path(s["remoteDir"]) / "pid").read_text()))
    pods = [p for d in box.cluster.read()["deployments"].values() for p in d["pods"] if pid_alive(p["pid"])]
    leftovers += max(0, len(pods) - 2)
    return {
        "scenario": scenario,
        "job": job,
        "killed": killed,
        "state": view.state.value,
        "reruns": reruns,
        "repeated": repeated,
        "mirror_ok": mirror_ok,
        "leftovers": leftovers,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=3, help="trials per scenario")
    parser.add_argument("--max-seconds", type=float, default=900, help="stop starting trials after this")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--only", help="comma-separated scenarios, e.g. after-build,in-import")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    scenarios = [f"after-{s}" for s in STEPS] + [f"in-{s}" for s in STEPS]
    if args.only:
        scenarios = [s for s in args.only.split(",") if s in scenarios]
    rng = random.Random(args.seed)
    home = Path(os.environ.get("CQDEPLOY_HOME") or tempfile.mkdtemp(prefix="cqchaos-")) / "ws"
    os.environ["CQDEPLOY_HOME"] = str(home)
    ws = Workspace(home).ensure()
    box = Sandbox(ws)
    box.up()
    for s in SHIM_STEPS:
        box.set_fault(f"sleep.{s}", STEP_SLEEP_S)
    began = time.monotonic()
    results = []
    try:
        for _n in range(args.trials):
            for scenario in scenarios:
                if time.monotonic() - began > args.max_seconds:
                    break
                results.append(trial(ws, box, scenario, rng))
            else:
                continue
            break
    finally:
        box.down()
    rows = []
    for scenario in scenarios:
        mine = [r for r in results if r["scenario"] == scenario]
        if mine:
            rows.append(
                [
                    scenario,
                    len(mine),
                    sum(r["killed"] for r in mine),
                    sum(r["state"] == "succeeded" for r in mine),
                    sum(r["reruns"] for r in mine),
                    sum(r["repeated"] for r in mine),
                    sum(r["mirror_ok"] for r in mine),
                    sum(r["leftovers"] for r in mine),
                ]
            )
    totals = {
        "trials": len(results),
        "kills": sum(r["killed"] for r in results),
        "succeeded_after_resume": sum(r["state"] == "succeeded" for r in results),
        "steps_rerun_after_completed": sum(r["reruns"] for r in results),
        "side_effects_not_exactly_once": sum(r["repeated"] for r in results),
        "journal_equal_to_jsonl": sum(r["mirror_ok"] for r in results),
        "leftover_remote_processes": sum(r["leftovers"] for r in results),
        "seconds": round(time.monotonic() - began, 1),
    }
    if args.json:
        print(json.dumps({"totals": totals, "trials": results}))
    else:
        rows.append(
            [
                "total",
                totals["trials"],
                totals["kills"],
                totals["succeeded_after_resume"],
                totals["steps_rerun_after_completed"],
                totals["side_effects_not_exactly_once"],
                totals["journal_equal_to_jsonl"],
                totals["leftover_remote_processes"],
            ]
        )
        table(
            f"chaos: SIGKILL the runner, resume ({totals['seconds']} s)",
            [
                "scenario",
                "trials",
                "kills",
                "succeeded",
                "reruns (0)",
                "effects !=1 (0)",
                "journal=jsonl",
                "leftovers (0)",
            ],
            rows,
        )
    broken = (
        totals["steps_rerun_after_completed"]
        or totals["side_effects_not_exactly_once"]
        or totals["leftover_remote_processes"]
        or totals["journal_equal_to_jsonl"] != totals["trials"]
        or totals["succeeded_after_resume"] != totals["trials"]
    )
    return 1 if broken else 0


if __name__ == "__main__":
    raise SystemExit(main())
