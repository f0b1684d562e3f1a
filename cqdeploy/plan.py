"""Desired against live: what `deploy plan` shows and what `deploy apply` acts on.

The live commit is what the target's Deployment annotation says (step 6 writes it); a branch in
the manifest is resolved with `git ls-remote` on the target, which is where the deploy fetches.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from typing import Any

from .config import Provider
from .errors import TransportError
from .manifest import Desired
from .transport import Transport

q = shlex.quote


@dataclass(frozen=True)
class Plan:
    service: str
    provider: str
    requested: str
    desired_commit: str | None
    live_commit: str | None

    @property
    def in_sync(self) -> bool:
        if not self.live_commit or not self.desired_commit:
            return False
        return self.live_commit.startswith(self.desired_commit)

    @property
    def action(self) -> str:
        return "none" if self.in_sync else "deploy"

    def as_dict(self) -> dict[str, Any]:
        return {
            "service": self.service,
            "providerId": self.provider,
            "requested": self.requested,
            "desiredCommit": self.desired_commit,
            "liveCommit": self.live_commit,
            "inSync": self.in_sync,
            "action": self.action,
        }


def with_path(script: str, provider: Provider) -> str:
    if not provider.path_prepend:
        return script
    return "export PATH=" + "".join(f"{q(p)}:" for p in provider.path_prepend) + '"$PATH"\n' + script


def live_commit(transport: Transport, provider: Provider, desired: Desired) -> str | None:
    """The commit annotated on the service's Deployment; None when it is not deployed."""
    spec = desired.spec
    script = f"kubectl -n {q(provider.namespace)} get {q('deployment/' + spec.deployment)} -o json"
    result = transport.run(with_path(script, provider), timeout=30)
    if result.exit_code != 0:
        if b"NotFound" in result.stderr or b"not found" in result.stderr:
            return None
        raise TransportError(f"reading {spec.deployment} on {provider.id} failed: {result.stderr.decode()[:300]}")
    try:
        annotations = json.loads(result.stdout)["metadata"].get("annotations") or {}
    except (ValueError, KeyError, TypeError) as e:
        raise TransportError(f"kubectl get {spec.deployment} on {provider.id} gave no JSON") from e
    value = annotations.get(spec.commit_annotation)
    return value if isinstance(value, str) else None


def desired_commit(transport: Transport, provider: Provider, desired: Desired) -> str | None:
    """The commit the manifest asks for: as written, or the branch's head on the remote."""
    if desired.commit:
        return desired.commit
    script = f"git ls-remote {q(desired.repo)} {q('refs/heads/' + str(desired.branch))}"
    result = transport.run(with_path(script, provider), timeout=60)
    if result.exit_code != 0:
        raise TransportError(f"git ls-remote of {desired.service}'s repo failed on {provider.id}")
    fields = result.text.split()
    return fields[0] if fields else None


def plan(transport: Transport, provider: Provider, desired: Desired) -> Plan:
    return Plan(
        desired.service,
        provider.id,
        desired.requested,
        desired_commit(transport, provider, desired),
        live_commit(transport, provider, desired),
    )
