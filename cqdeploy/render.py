"""Human-readable text for job views: pure functions from dicts to strings."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any


def parse_ts(ts: str | None) -> datetime | None:
    return datetime.strptime(ts, "%Y-%m-%dT%H:%M:%S.%f%z") if ts else None


def seconds(a: str | None, b: str | None) -> float | None:
    start, end = parse_ts(a), parse_ts(b)
    return (end - start).total_seconds() if start and end else None


def age(ts: str | None, now: datetime | None = None) -> str:
    moment = parse_ts(ts)
    if moment is None:
        return "-"
    delta = int(((now or datetime.now(UTC)) - moment).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if delta >= size:
            return f"{delta // size}{unit}"
    return f"{delta}s"


def status_text(view: dict[str, Any], tail: str | None = None) -> str:
    lines = [
        f"job {view['jobId']}: {view['service']} on {view['providerId']} — {view['state']}"
        + (
            f" (step {view['currentStep']})"
            if view["currentStep"] and view["state"] not in ("succeeded", "failed", "timed_out", "cancelled")
            else ""
        ),
        f"requested {view['requestedCommit']}  resolved {view['resolvedCommit'] or '-'}",
        f"entry {view['entry']}  created {view['createdAt']}"
        + (f"  ended {view['endedAt']}" if view["endedAt"] else ""),
    ]
    if view.get("runnerLost"):
        lines.append(f"runner lost: {view['runnerLost']}")
    lines.append("")
    lines.append(f"{'step':<8} {'state':<10} {'attempt':>7} {'took':>8}  remote log")
    for s in view["steps"]:
        took = seconds(s["startedAt"], s["endedAt"])
        took_text = f"{took:.2f}s" if took is not None else ("…" if s["state"] == "running" else "")
        lines.append(f"{s['name']:<8} {s['state']:<10} {s['attempt'] or '':>7} {took_text:>8}  {s['remoteLog'] or ''}")
    if view.get("mismatch"):
        m = view["mismatch"]
        lines += ["", f"health.commit_mismatch: expected {m['expected']}, /health answered {m['actual']}"]
    if view["error"]:
        lines += ["", f"error: {view['error']}"]
    if tail:
        step = view.get("failedStep") or view["currentStep"]
        lines += [
            "",
            f"--- last {len(tail.encode())} bytes of the {step} log ---",
            tail.rstrip("\n"),
        ]
    return "\n".join(lines)


def progress_line(step: dict[str, Any]) -> str:
    took = seconds(step["startedAt"], step["endedAt"])
    suffix = f" in {took:.2f}s" if took is not None else ""
    return f"  {step['name']:<8} {step['state']}{suffix}"


def jobs_table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "no jobs yet"
    out = [f"{'job':<27} {'service':<11} {'commit':<12} {'state':<10} age"]
    for r in rows:
        commit = (r["resolvedCommit"] or r["requestedCommit"] or "")[:12]
        out.append(f"{r['jobId']:<27} {r['service']:<11} {commit:<12} {r['state']:<10} {age(r['createdAt'])}")
    return "\n".join(out)


def history_table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "no deploys yet"
    out = [f"{'job':<27} {'service':<11} {'commit':<12} {'who':<20} {'entry':<9} {'started':<20} {'took':>7} result"]
    for r in rows:
        took = f"{r['durationS']:.1f}s" if r["durationS"] is not None else "-"
        entry = r["entry"] + ("*" if r.get("rollbackOf") else "")
        out.append(
            f"{r['jobId']:<27} {r['service']:<11} {(r['commit'] or '')[:12]:<12} {r['who'][:20]:<20} "
            f"{entry:<9} {r['startedAt'][:19]:<20} {took:>7} {r['result']}"
        )
    return "\n".join(out)


def describe(type: str, data: dict[str, Any]) -> str:
    """One event in words, for the replay timeline."""
    step = data.get("step")
    if type == "job.created":
        who = data.get("who") or {}
        return (
            f"{data['service']} on {data['provider']}, requested {data['requested']} "
            f"via {data.get('entry')} by {who.get('user')}@{who.get('host')}"
            + (f", rollback of {data['rollback_of']}" if data.get("rollback_of") else "")
        )
    if type in ("runner.started", "job.resumed"):
        return f"pid {data.get('pid')} on {data.get('host')}"
    if type == "step.started":
        return f"{step} (attempt {data.get('attempt')})"
    if type == "step.remote_log":
        return f"{step} log {data.get('log')}"
    if type == "step.sentinel_seen":
        return f"{step} exit {data.get('exit_code')}"
    if type == "commit.resolved":
        return str(data.get("commit"))
    if type == "step.completed":
        took = data.get("duration_s")
        return f"{step}" + (f" in {took:.3f}s" if isinstance(took, int | float) else "")
    if type == "step.failed":
        return f"{step}: {data.get('error')}"
    if type == "health.commit_mismatch":
        return f"expected {data.get('expected')}, /health answered {data.get('actual')}"
    if type in ("job.succeeded", "job.failed", "job.timed_out", "job.cancelled"):
        return str(data.get("error") or data.get("commit") or "")
    return ", ".join(f"{k}={v}" for k, v in sorted(data.items()) if k != "log_tail")


def replay_text(view: dict[str, Any], events: list[tuple[int, str, str, dict[str, Any]]]) -> str:
    start = events[0][1]
    out = [f"job {view['jobId']}: {view['state']}"]
    for seq, ts, type, data in events:
        offset = seconds(start, ts) or 0.0
        out.append(f"  +{offset:8.3f}s  #{seq:<4} {type:<22} {describe(type, data)}")
    out.append("")
    out.append(
        "per step: "
        + "  ".join(
            f"{s['name']} {took:.3f}s"
            if (took := seconds(s["startedAt"], s["endedAt"])) is not None
            else f"{s['name']} -"
            for s in view["steps"]
        )
    )
    return "\n".join(out)
