"""The reconciler every entry point calls: desired manifest in, one job per drifted service out.

`deploy apply` deploys only what drifted unless forced; `codex deploy` and `deploy rollback`
are explicit requests for one commit and always force.
"""

from __future__ import annotations

import os
import shlex
from typing import Any

from . import lock
from .config import load_config, pick_provider
from .errors import CqdeployError
from .jobs import holder_state, job_created, new_job_id, spawn_runner
from .manifest import Manifest
from .workspace import Workspace

DEFAULT_TIMEOUT_MS = 900_000
TAIL_BYTES = 30_000


def plans(ws: Workspace, manifest: Manifest, services: list[str]) -> list[Any]:
    """Desired against live for each service, read from its provider."""
    from .plan import plan
    from .transport import open_transport

    providers = load_config(ws.config_path)
    out = []
    for name in services:
        desired = manifest.service(name)
        provider = pick_provider(providers, desired.provider)
        with open_transport(provider) as transport:
            out.append(plan(transport, provider, desired))
    return out


def reconcile(
    ws: Workspace,
    manifest: Manifest,
    services: list[str],
    *,
    entry: str,
    timeout_ms: int = DEFAULT_TIMEOUT_MS,
    force: bool = True,
    rollback_of: str | None = None,
    spawn: bool = True,
    wait_s: float = 0.0,
) -> list[dict[str, Any]]:
    """Start a job for each service that needs one; all is validated before the first job is written."""
    providers = load_config(ws.config_path)
    wanted = [manifest.service(name) for name in services]
    for desired in wanted:
        pick_provider(providers, desired.provider)
    in_sync = {}
    if not force:
        in_sync = {p.service: p for p in plans(ws, manifest, services) if p.in_sync}
    results = []
    with ws.journal() as journal:
        for desired in wanted:
            if desired.service in in_sync:
                p = in_sync[desired.service]
                results.append({**p.as_dict(), "jobId": None})
                continue
            job_id = new_job_id()
            created = job_created(ws, manifest, desired, entry=entry, timeout_ms=timeout_ms, rollback_of=rollback_of)
            lock.acquire(
                journal,
                desired.provider,
                desired.service,
                job_id,
                holder_state=holder_state(journal),
                wait_s=wait_s,
                along=[(job_id, 0, [("job.created", created)])],
            )
            if spawn:
                try:
                    spawn_runner(ws, job_id)
                except OSError as e:
                    journal.append(job_id, 1, "job.failed", {"step": None, "error": f"runner could not start: {e}"})
                    lock.release(journal, desired.provider, desired.service, job_id, "runner could not start")
                    raise CqdeployError(f"job {job_id}: runner could not start: {e}") from e
            results.append(job_summary(ws, job_id, desired.service, desired.provider, desired.requested))
    return results


def job_summary(ws: Workspace, job_id: str, service: str, provider: str, requested: str) -> dict[str, Any]:
    prefix = ""
    if os.environ.get("CQDEPLOY_HOME"):
        prefix = f"CQDEPLOY_HOME={shlex.quote(str(ws.home))} "
    return {
        "jobId": job_id,
        "service": service,
        "providerId": provider,
        "requestedCommit": requested,
        "statusCommand": f"{prefix}cqdeploy job status {job_id}",
        "tailCommand": f"{prefix}cqdeploy job status {job_id} --tail-bytes {TAIL_BYTES}",
    }
