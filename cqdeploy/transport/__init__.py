"""Transports run shell scripts on the target; they know nothing about steps."""

from __future__ import annotations

from .base import Result, Transport


def open_transport(provider: object) -> Transport:
    """The transport a provider's config names."""
    from ..config import Provider

    assert isinstance(provider, Provider)
    if provider.transport == "local":
        from .local import LocalTransport

        return LocalTransport()
    if provider.transport == "ssh":
        from pathlib import Path

        from .ssh import open_ssh

        return open_ssh(provider, Path(provider.known_hosts or "known_hosts"))
    from ..errors import ConfigError

    raise ConfigError(f"provider {provider.id}: transport {provider.transport!r} is not available")


__all__ = ["Result", "Transport", "open_transport"]
