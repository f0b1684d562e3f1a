"""The stored event and its canonical, hashable form."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

GENESIS = "0" * 64


def canonical(obj: Any) -> str:
    """One spelling per value: sorted keys, no spaces, UTF-8 kept as is."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def digest(stream: str, seq: int, ts: str, type: str, data: Any, prev: str) -> str:
    body = {"stream": stream, "seq": seq, "ts": ts, "type": type, "data": data, "prev": prev}
    return hashlib.sha256(canonical(body).encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Event:
    """One immutable fact in a stream; `hash` covers every other field."""

    stream: str
    seq: int
    ts: str
    type: str
    data: dict[str, Any]
    prev: str
    hash: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "stream": self.stream,
            "seq": self.seq,
            "ts": self.ts,
            "type": self.type,
            "data": self.data,
            "prev": self.prev,
            "hash": self.hash,
        }

    def line(self) -> str:
        """The event's JSONL mirror line, without the newline."""
        return canonical(self.as_dict())

    def expected_hash(self) -> str:
        return digest(self.stream, self.seq, self.ts, self.type, self.data, self.prev)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Event:
        return cls(d["stream"], d["seq"], d["ts"], d["type"], d["data"], d["prev"], d["hash"])
