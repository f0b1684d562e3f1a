"""The desired manifest: which commit of which repo each service should run, and where.

    # manifest.toml in the workspace
    [services.code-queue]
    repo = "https://git.example.com/unidesk.git"   # or an absolute path, file:// or ssh URL
    commit = "4f2a9c1"          # 7-40 hex; or instead: branch = "main"
    provider = "D601"           # optional, D601 by default

Errors name the file and the field path, e.g. `manifest.toml: services.code-queue.commit`.
"""

from __future__ import annotations

import hashlib
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import DEFAULT_PROVIDER
from .errors import ConfigError, InvalidInput

COMMIT = re.compile(r"^[0-9a-fA-F]{7,40}$")
SERVICE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
BRANCH = re.compile(r"^(?!-)(?!.*\.\.)(?!.*//)[A-Za-z0-9._/-]{1,200}(?<![./])$")
REPO = re.compile(r"^(?!-)[A-Za-z0-9._~:/@%+=-]+$")


@dataclass(frozen=True)
class ServiceSpec:
    """How a service is built and rolled out; code-queue's values come from the specification."""

    name: str
    image: str
    k8s_manifest: str
    deployment: str
    restart: tuple[str, ...]
    health_path: str = "/health"
    commit_annotation: str = "cqdeploy.unidesk.io/commit"


SPECS: dict[str, ServiceSpec] = {
    "code-queue": ServiceSpec(
        name="code-queue",
        image="unidesk-code-queue:d601",
        k8s_manifest="src/components/microservices/v3sctl-adapter/v3s/code-queue.k8s.yaml",
        deployment="code-queue",
        restart=("d601-tcp-egress-gateway", "code-queue"),
    )
}


@dataclass(frozen=True)
class Desired:
    """One service's desired state."""

    service: str
    repo: str
    provider: str
    commit: str | None = None
    branch: str | None = None

    @property
    def requested(self) -> str:
        """What the job asks for: the commit, or `branch:<name>`."""
        return self.commit if self.commit else f"branch:{self.branch}"

    @property
    def spec(self) -> ServiceSpec:
        return SPECS[self.service]


@dataclass(frozen=True)
class Manifest:
    source: str
    services: dict[str, Desired]
    digest: str

    def service(self, name: str) -> Desired:
        if name not in self.services:
            known = ", ".join(sorted(self.services)) or "none"
            raise InvalidInput(f"{self.source}: no service {name!r} (services: {known})")
        return self.services[name]

    def as_data(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "digest": self.digest,
            "services": {
                name: {k: v for k, v in vars(d).items() if v is not None and k != "service"}
                for name, d in self.services.items()
            },
        }


def check_commit(commit: str) -> str:
    """A 7-40 character hex commit id, lower-cased; anything else is refused."""
    if not isinstance(commit, str) or not COMMIT.match(commit):
        raise InvalidInput(f"invalid commit id {commit!r}: expected 7-40 hex characters")
    return commit.lower()


def load_manifest(path: Path) -> Manifest:
    if not path.exists():
        raise ConfigError(f"{path}: desired manifest not found (`cqdeploy demo` writes one)")
    text = path.read_text()
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from e
    return parse_manifest(str(path), raw, text.encode())


def parse_manifest(source: str, raw: dict[str, Any], body: bytes | None = None) -> Manifest:
    unknown = set(raw) - {"services"}
    if unknown:
        raise ConfigError(f"{source}: {sorted(unknown)[0]}: unknown field (expected services)")
    services = raw.get("services")
    if not isinstance(services, dict) or not services:
        raise ConfigError(f"{source}: services: must be a table with at least one service")
    parsed = {name: _desired(source, name, table) for name, table in services.items()}
    if body is None:
        from journal import canonical

        body = canonical(raw).encode()
    return Manifest(source, parsed, "sha256:" + hashlib.sha256(body).hexdigest())


def _desired(source: str, name: str, table: Any) -> Desired:
    where = f"{source}: services.{name}"
    if not SERVICE.match(name):
        raise ConfigError(f"{where}: service names are lower-case letters, digits and '-'")
    if name not in SPECS:
        raise ConfigError(f"{where}: unknown service (known: {', '.join(sorted(SPECS))})")
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: must be a table")
    unknown = set(table) - {"repo", "commit", "branch", "provider"}
    if unknown:
        raise ConfigError(f"{where}.{sorted(unknown)[0]}: unknown field")
    repo = table.get("repo")
    if not isinstance(repo, str) or not REPO.match(repo):
        raise ConfigError(f"{where}.repo: required; a URL or absolute path (no spaces, no leading '-')")
    if _has_password(repo):
        raise ConfigError(f"{where}.repo: holds a password or token; use an SSH key or a git credential helper")
    commit, branch = table.get("commit"), table.get("branch")
    if (commit is None) == (branch is None):
        raise ConfigError(f"{where}: set exactly one of commit or branch")
    if commit is not None:
        try:
            commit = check_commit(commit)
        except InvalidInput as e:
            raise ConfigError(f"{where}.commit: {e}") from None
    if branch is not None and (not isinstance(branch, str) or not BRANCH.match(branch)):
        raise ConfigError(f"{where}.branch: not a valid branch name: {branch!r}")
    provider = table.get("provider", DEFAULT_PROVIDER)
    if not isinstance(provider, str) or not re.match(r"^[A-Za-z0-9_-]{1,64}$", provider):
        raise ConfigError(f"{where}.provider: must be a provider id such as D601")
    return Desired(name, repo, provider, commit, branch)


def _has_password(repo: str) -> bool:
    from urllib.parse import urlsplit

    return "://" in repo and urlsplit(repo).password is not None


def one_service(base: Manifest | None, service: str, commit: str, provider: str, repo: str | None) -> Manifest:
    """The temporary manifest `codex deploy` builds: only this service's repo and commit."""
    if repo is None:
        if base is None or service not in base.services:
            raise ConfigError(f"no repo known for {service}: add [services.{service}] with repo to manifest.toml")
        repo = base.services[service].repo
    raw = {"services": {service: {"repo": repo, "commit": commit, "provider": provider}}}
    return parse_manifest(f"codex deploy {commit}", raw)
