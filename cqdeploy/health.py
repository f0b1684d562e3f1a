"""Reading a service's /health through backend-core's microservice proxy, with httpx.

backend-core serves every microservice at `<backend_url>/api/microservices/<service>/proxy<path>`;
going through it (not straight to a pod) is what proves the commit that users reach.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import httpx

from .errors import HealthCheckFailed, TransportError


def proxy_url(backend_url: str, service: str, path: str) -> str:
    if not path.startswith("/"):
        path = "/" + path
    return f"{backend_url.rstrip('/')}/api/microservices/{service}/proxy{path}"


@dataclass(frozen=True)
class Answer:
    status: int
    body: Any
    text: str


def get(
    backend_url: str,
    service: str,
    path: str,
    *,
    timeout: float = 5.0,
    transport: httpx.BaseTransport | None = None,
) -> Answer:
    """One GET through the proxy; httpx errors become TransportError here and nowhere else."""
    url = proxy_url(backend_url, service, path)
    try:
        with httpx.Client(timeout=timeout, transport=transport, trust_env=False) as client:
            response = client.get(url)
    except httpx.HTTPError as e:
        raise TransportError(f"backend proxy {backend_url} unreachable for {service}: {e}") from e
    try:
        body = response.json()
    except (ValueError, json.JSONDecodeError):
        body = None
    return Answer(response.status_code, body, response.text)


def deployed_commit(answer: Answer) -> str | None:
    body = answer.body
    if isinstance(body, dict) and isinstance(body.get("deploy"), dict):
        commit = body["deploy"].get("commit")
        return commit if isinstance(commit, str) else None
    return None


def await_healthy(
    backend_url: str,
    service: str,
    path: str,
    *,
    within_s: float,
    transport: httpx.BaseTransport | None = None,
    pause_s: float = 0.2,
    on_wait: Any = None,
) -> Answer:
    """The first 200 answer within `within_s`; connection errors and 5xx are retried."""
    end = time.monotonic() + within_s
    last = "no answer"
    while True:
        try:
            answer = get(backend_url, service, path, timeout=min(5.0, max(0.5, within_s)), transport=transport)
            if answer.status == 200:
                return answer
            last = f"HTTP {answer.status}"
        except TransportError as e:
            last = str(e)
        if time.monotonic() + pause_s > end:
            raise HealthCheckFailed(f"{service} {path} not healthy within {within_s:.0f}s: {last}")
        time.sleep(pause_s)
        if on_wait is not None:
            on_wait()
