"""cqdeploy: an event-sourced deploy orchestrator for Code Queue on a self-hosted k3s host."""

__version__ = "0.1.0"
