"""Providers: the target hosts a deploy may go to, read from `config.toml` in the workspace.

[providers.D601]
active = true
transport = "local"                  # "local" runs on this machine (the sandbox)
deploy_dir = "/home/ubuntu/cq-deploy"
cache_dir = "/home/ubuntu/.cache/cqdeploy/code-queue.git"
tmp_dir = "/tmp"
backend_url = "http://127.0.0.1:8080"
build_proxy = "http://127.0.0.1:7890"   # or build_proxy_env = "CQDEPLOY_BUILD_PROXY"
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .errors import ConfigError, InvalidInput

DEFAULT_PROVIDER = "D601"
TRANSPORTS = ("local", "ssh")
_ABS_PATH = re.compile(r"^/[^\x00-\x1f\x7f]*$")


@dataclass(frozen=True)
class Provider:
    id: str
    active: bool = True
    transport: str = "local"
    deploy_dir: str = "/home/ubuntu/cq-deploy"
    cache_dir: str = "/home/ubuntu/.cache/cqdeploy/code-queue.git"
    tmp_dir: str = "/tmp"
    path_prepend: tuple[str, ...] = ()
    backend_url: str = "http://127.0.0.1:8080"
    build_proxy: str | None = field(default=None, repr=False)
    namespace: str = "unidesk"
    k3s_container: str = "unidesk-v8s-server"
    # transport = "ssh"
    ssh_host: str | None = None
    ssh_port: int | None = None
    ssh_user: str | None = None
    identity_files: tuple[str, ...] = ()
    use_agent: bool = True
    known_hosts: str | None = None
    ssh_config: str | None = "~/.ssh/config"
    host_key_policy: str = "strict"
    keepalive_s: float = 5.0
    keepalive_count: int = 3
    connect_timeout_s: float = 10.0

    def secrets(self) -> list[str]:
        """Values that must never reach a log, the journal or the terminal."""
        if not self.build_proxy:
            return []
        parts = urlsplit(self.build_proxy)
        found = [self.build_proxy]
        if parts.password:
            found.append(parts.password)
        return found


_FIELDS = {
    "active", "transport", "deploy_dir", "cache_dir", "tmp_dir", "path_prepend", "backend_url", "build_proxy",
    "build_proxy_env", "namespace", "k3s_container", "host", "port", "user", "identity_files", "use_agent",
    "known_hosts", "ssh_config", "host_key_policy", "keepalive_s", "keepalive_count", "connect_timeout_s",
}  # fmt: skip


def load_config(path: Path) -> dict[str, Provider]:
    """Every provider in config.toml; a missing file means no provider is configured."""
    if not path.exists():
        return {}
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from e
    providers = raw.get("providers", {})
    if not isinstance(providers, dict):
        raise ConfigError(f"{path}: providers: must be a table")
    return {pid: _provider(path, pid, table) for pid, table in providers.items()}


def _ssh_fields(where: str, table: dict[str, Any], workspace: Path) -> dict[str, Any]:
    values: dict[str, Any] = {}
    if "host" in table:
        host = table["host"]
        if not isinstance(host, str) or not re.match(r"^[A-Za-z0-9._:-]{1,253}$", host) or host.startswith("-"):
            raise ConfigError(f"{where}.host: must be a host name, address or ~/.ssh/config alias")
        values["ssh_host"] = host
    if "port" in table:
        if not isinstance(table["port"], int) or not 0 < table["port"] < 65536:
            raise ConfigError(f"{where}.port: must be a TCP port")
        values["ssh_port"] = table["port"]
    if "user" in table:
        if not isinstance(table["user"], str) or not re.match(r"^[a-z_][a-z0-9_.-]{0,31}$", table["user"]):
            raise ConfigError(f"{where}.user: must be a user name")
        values["ssh_user"] = table["user"]
    if "identity_files" in table:
        files = table["identity_files"]
        if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
            raise ConfigError(f"{where}.identity_files: must be a list of paths")
        values["identity_files"] = tuple(os.path.expanduser(f) for f in files)
    if "use_agent" in table:
        if not isinstance(table["use_agent"], bool):
            raise ConfigError(f"{where}.use_agent: must be true or false")
        values["use_agent"] = table["use_agent"]
    known = table.get("known_hosts", "known_hosts")
    if not isinstance(known, str):
        raise ConfigError(f"{where}.known_hosts: must be a path")
    values["known_hosts"] = str(workspace / os.path.expanduser(known))
    if "ssh_config" in table:
        values["ssh_config"] = table["ssh_config"] or None
    if "host_key_policy" in table:
        if table["host_key_policy"] not in ("strict", "accept-new"):
            raise ConfigError(f"{where}.host_key_policy: must be strict or accept-new")
        values["host_key_policy"] = table["host_key_policy"]
    for key, kind, low in (("keepalive_s", float, 0.2), ("keepalive_count", int, 1), ("connect_timeout_s", float, 0.5)):
        if key in table:
            value = table[key]
            if isinstance(value, bool) or not isinstance(value, int | float) or value < low:
                raise ConfigError(f"{where}.{key}: must be a number of at least {low}")
            values[key] = kind(value)
    if table.get("transport") == "ssh" and "ssh_host" not in values:
        raise ConfigError(f'{where}.host: required with transport = "ssh"')
    return values


def _provider(path: Path, pid: str, table: Any) -> Provider:
    where = f"{path}: providers.{pid}"
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: must be a table")
    unknown = set(table) - _FIELDS
    if unknown:
        raise ConfigError(f"{where}.{sorted(unknown)[0]}: unknown field")
    values: dict[str, Any] = {}
    for key in ("deploy_dir", "cache_dir", "tmp_dir"):
        if key in table:
            values[key] = _abs_path(f"{where}.{key}", table[key])
    if "path_prepend" in table:
        items = table["path_prepend"]
        if not isinstance(items, list):
            raise ConfigError(f"{where}.path_prepend: must be a list of absolute paths")
        values["path_prepend"] = tuple(_abs_path(f"{where}.path_prepend[{i}]", p) for i, p in enumerate(items))
    transport = table.get("transport", "local")
    if transport not in TRANSPORTS:
        raise ConfigError(f"{where}.transport: {transport!r} is not one of {', '.join(TRANSPORTS)}")
    values["transport"] = transport
    if not isinstance(table.get("active", True), bool):
        raise ConfigError(f"{where}.active: must be true or false")
    values["active"] = table.get("active", True)
    for key in ("backend_url", "build_proxy"):
        if key in table:
            values[key] = _url(f"{where}.{key}", table[key])
    if "build_proxy_env" in table and "build_proxy" not in table:
        value = os.environ.get(str(table["build_proxy_env"]))
        if value:
            values["build_proxy"] = _url(f"{where}.build_proxy_env", value)
    for key in ("namespace", "k3s_container"):
        if key in table:
            values[key] = _name(f"{where}.{key}", table[key])
    values.update(_ssh_fields(where, table, path.parent))
    return Provider(id=pid, **values)


def _abs_path(where: str, value: Any) -> str:
    if not isinstance(value, str) or not _ABS_PATH.match(value) or "/../" in f"{value}/":
        raise ConfigError(
            f"{where}: must be an absolute path without control characters or '..' segments, got {value!r}"
        )
    return value.rstrip("/") or "/"


def _url(where: str, value: Any) -> str:
    parts = urlsplit(value) if isinstance(value, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        # never echo the value: it may hold credentials
        raise ConfigError(f"{where}: must be an http:// or https:// URL with a host")
    return value


def _name(where: str, value: Any) -> str:
    if not isinstance(value, str) or not re.match(r"^[a-z0-9]([a-z0-9.-]{0,61}[a-z0-9])?$", value):
        raise ConfigError(f"{where}: must be a DNS-style name, got {value!r}")
    return value


def pick_provider(providers: dict[str, Provider], provider_id: str) -> Provider:
    """The active provider with that id, or an error naming the ones that exist."""
    provider = providers.get(provider_id)
    if provider is None or not provider.active:
        active = sorted(p for p, v in providers.items() if v.active)
        known = ", ".join(active) if active else "none (run `cqdeploy demo` or edit config.toml)"
        state = "inactive" if provider else "unknown"
        raise InvalidInput(f"provider {provider_id!r} is {state}; active providers: {known}")
    return provider
