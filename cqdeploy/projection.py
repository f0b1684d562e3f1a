"""What `job status` shows: a pure fold of a job's events, validated by the state machine."""

from __future__ import annotations

import copy
from typing import Any

from .machine import STEPS, JobMachine, State


class JobView:
    """The job as its events describe it; `as_dict()` is the `--json` shape."""

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        self.machine = JobMachine()
        self.seq = 0
        self.data: dict[str, Any] = {
            "jobId": job_id,
            "service": None,
            "providerId": None,
            "requestedCommit": None,
            "resolvedCommit": None,
            "entry": None,
            "repo": None,
            "timeoutMs": None,
            "who": None,
            "manifestDigest": None,
            "createdAt": None,
            "endedAt": None,
            "updatedAt": None,
            "runner": None,
            "runners": 0,
            "steps": [
                {
                    "name": s,
                    "state": "pending",
                    "attempt": 0,
                    "startedAt": None,
                    "endedAt": None,
                    "remoteLog": None,
                    "remoteDir": None,
                    "exitCode": None,
                }
                for s in STEPS
            ],
            "error": None,
            "failedStep": None,
            "logTail": None,
            "mismatch": None,
            "rollbackOf": None,
            "lastHeartbeat": None,
            "leaseS": None,
            "cancelRequested": None,
        }

    @property
    def state(self) -> State:
        return self.machine.state

    def step(self, name: str) -> dict[str, Any]:
        return self.data["steps"][STEPS.index(name)]

    def apply(self, seq: int, ts: str, type: str, data: dict[str, Any]) -> None:
        if seq != self.seq + 1:
            from .errors import IllegalEvent

            raise IllegalEvent(f"job {self.job_id}: event seq {seq} follows {self.seq}")
        if type == "job.created":
            if seq != 1:
                from .errors import IllegalEvent

                raise IllegalEvent("job.created may appear only as the first event")
        else:
            self.machine.apply(type, data)
        self.seq = seq
        self._fold(ts, type, data)

    def _fold(self, ts: str, type: str, data: dict[str, Any]) -> None:
        d = self.data
        d["updatedAt"] = ts
        if type == "job.created":
            d.update(
                service=data["service"],
                providerId=data["provider"],
                requestedCommit=data["requested"],
                entry=data.get("entry"),
                repo=data.get("repo"),
                timeoutMs=data.get("timeout_ms"),
                who=data.get("who"),
                manifestDigest=(data.get("manifest") or {}).get("digest"),
                createdAt=ts,
                rollbackOf=data.get("rollback_of"),
            )
        elif type in ("runner.started", "job.resumed"):
            d["runner"] = {"pid": data.get("pid"), "host": data.get("host"), "since": ts}
            d["runners"] += 1
            d["lastHeartbeat"], d["leaseS"] = ts, data.get("lease_s")
        elif type == "runner.heartbeat":
            d["lastHeartbeat"] = ts
        elif type == "job.cancel_requested":
            by = data.get("by") or {}
            d["cancelRequested"] = f"{by.get('user', '?')}@{by.get('host', '?')}"
        elif type == "step.started":
            s = self.step(data["step"])
            s.update(state="running", attempt=data["attempt"], startedAt=ts, endedAt=None, exitCode=None)
        elif type == "step.remote_log":
            self.step(data["step"]).update(remoteLog=data["log"], remoteDir=data.get("dir"))
        elif type == "commit.resolved":
            d["resolvedCommit"] = data["commit"]
        elif type == "step.sentinel_seen":
            self.step(data["step"])["exitCode"] = data["exit_code"]
        elif type == "step.completed":
            self.step(data["step"]).update(state="succeeded", endedAt=ts)
        elif type == "step.failed":
            self.step(data["step"]).update(state="failed", endedAt=ts)
            d.update(error=data.get("error"), failedStep=data["step"], logTail=data.get("log_tail"))
        elif type == "health.commit_mismatch":
            d["mismatch"] = {"expected": data["expected"], "actual": data["actual"]}
        elif type in ("job.succeeded", "job.failed", "job.timed_out", "job.cancelled"):
            d["endedAt"] = ts
            if data.get("error") and not d["error"]:
                d["error"] = data["error"]
            for s in d["steps"]:
                if s["state"] == "running":
                    s.update(state="failed" if type != "job.succeeded" else s["state"], endedAt=ts)

    def as_dict(self) -> dict[str, Any]:
        out = copy.deepcopy(self.data)
        out["state"] = self.state.value
        out["currentStep"] = self.machine.current_step
        out["nextStep"] = self.machine.next_step
        out["seq"] = self.seq
        return out

    def snapshot(self) -> dict[str, Any]:
        return {"seq": self.seq, "machine": self.machine.snapshot(), "data": self.data}

    @classmethod
    def restore(cls, job_id: str, snap: dict[str, Any]) -> JobView:
        view = cls(job_id)
        view.seq = snap["seq"]
        view.machine = JobMachine.restore(snap["machine"])
        view.data = snap["data"]
        return view
