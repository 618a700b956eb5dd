"""A/B experiments in the service: the experiment config, the per-request assignment and the
structured event log.

An experiment splits traffic between two or more bundles (variants) by a hash of the assignment
unit, so a user always sees the same variant:

    unit = user_id           when the request names a user (known to the bundle or not)
         = session_id        anonymous request with a session id
         = the request id    otherwise (anonymous, no session: each request is its own unit)

Config (JSON or YAML; relative bundle paths are resolved against the config file's folder):

    name: ranker-v2
    salt: ranker-v2-2026-11        # default: the name; a new salt reshuffles users
    control: A                     # default: the first variant
    variants:
      - {name: A, bundle: bundles/v1, weight: 0.7}
      - {name: B, bundle: bundles/v2, weight: 0.3}

The event log is JSON lines, written by a background thread (the request only queues a dict):
one `impression` per /recommend answer and one `feedback` per /feedback call, joined on
`request_id` by `recstack abtest analyze`.
"""

from __future__ import annotations

import json
import math
import queue
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from recstack.abtest.assign import assign_variant

DEFAULT_VARIANT = "default"
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


@dataclass
class VariantConfig:
    name: str
    bundle: str
    weight: float = 1.0

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise ValueError(f"variant name {self.name!r}: use 1-64 letters, digits, '_', '.', '-'")
        try:
            self.weight = float(self.weight)
        except (TypeError, ValueError):
            raise ValueError(f"variant {self.name}: weight {self.weight!r} is not a number") from None
        if not math.isfinite(self.weight) or self.weight <= 0:
            raise ValueError(f"variant {self.name}: weight must be a positive number, got {self.weight}")
        self.bundle = str(self.bundle)


@dataclass
class ABTestConfig:
    """Variants served side by side; `salt` (default: `name`) keys the hash."""

    name: str
    variants: list[VariantConfig]
    salt: str | None = None
    control: str | None = None
    shares: dict[str, float] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise ValueError(f"experiment name {self.name!r}: use 1-64 letters, digits, '_', '.', '-'")
        self.variants = [v if isinstance(v, VariantConfig) else _variant(v) for v in self.variants or []]
        if not self.variants:
            raise ValueError(f"experiment {self.name}: no variants")
        names = [v.name for v in self.variants]
        if len(set(names)) != len(names):
            raise ValueError(f"experiment {self.name}: variant names repeat: {names}")
        self.salt = self.name if self.salt is None else str(self.salt)
        self.control = self.control or names[0]
        if self.control not in names:
            raise ValueError(f"experiment {self.name}: control {self.control!r} is not a variant ({names})")
        total = sum(v.weight for v in self.variants)
        self.shares = {v.name: v.weight / total for v in self.variants}

    @property
    def names(self) -> list[str]:
        return [v.name for v in self.variants]

    def assign(self, unit: str | int) -> str:
        """The variant of an assignment unit (deterministic)."""
        if len(self.variants) == 1:
            return self.variants[0].name
        return assign_variant(unit, self.names, [v.weight for v in self.variants], salt=self.salt)

    @classmethod
    def from_dict(cls, d: dict[str, Any], base: Path | None = None) -> ABTestConfig:
        if not isinstance(d, dict):
            raise ValueError("experiment config: expected a mapping with name and variants")
        unknown = set(d) - {"name", "variants", "salt", "control"}
        if unknown:
            raise ValueError(f"experiment config: unknown field(s) {sorted(unknown)}")
        if "name" not in d or "variants" not in d:
            raise ValueError("experiment config: needs `name` and `variants`")
        if not isinstance(d["variants"], list):
            raise ValueError("experiment config: `variants` must be a list")
        variants = [_variant(v) for v in d["variants"]]
        if base is not None:
            for v in variants:
                if not Path(v.bundle).is_absolute():
                    v.bundle = str(base / v.bundle)
        return cls(name=d["name"], variants=variants, salt=d.get("salt"), control=d.get("control"))

    @classmethod
    def load(cls, path: str | Path) -> ABTestConfig:
        """From a JSON or YAML file (relative bundle paths: relative to the file's folder)."""
        p = Path(path)
        return cls.from_dict(yaml.safe_load(p.read_text()), base=p.parent)

    @classmethod
    def single(cls, bundle: str | Path) -> ABTestConfig:
        """Plain serving: one variant named `default`."""
        return cls(name=DEFAULT_VARIANT, variants=[VariantConfig(DEFAULT_VARIANT, str(bundle))])

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "salt": self.salt, "control": self.control,
                "variants": [{"name": v.name, "bundle": v.bundle, "weight": v.weight} for v in self.variants]}


def _variant(v: Any) -> VariantConfig:
    if not isinstance(v, dict) or not {"name", "bundle"} <= set(v) or set(v) - {"name", "bundle", "weight"}:
        raise ValueError(f"experiment variant {v!r}: expected {{name, bundle, weight}}")
    return VariantConfig(v["name"], v["bundle"], v.get("weight", 1.0))


def parse_variant(spec: str) -> VariantConfig:
    """`name=PATH:weight` (or `name=PATH`, weight 1) -> VariantConfig."""
    if "=" not in spec:
        raise ValueError(f"--variant expects name=PATH[:weight], got {spec!r}")
    name, rest = spec.split("=", 1)
    path, weight = rest, 1.0
    if ":" in rest:
        head, tail = rest.rsplit(":", 1)
        try:
            weight = float(tail)
            path = head
        except ValueError:
            pass  # a colon inside the path
    if not path:
        raise ValueError(f"--variant {spec!r}: no bundle path")
    return VariantConfig(name.strip(), path, weight)


class EventLog:
    """Append-only JSON-lines log written by a daemon thread. `write(event)` only puts the dict
    on a queue (no serialisation, no I/O on the request path); the thread drains the queue,
    writes a batch and flushes it, so lines reach the file within milliseconds. `flush()`
    waits until everything queued is written; `close()` flushes and stops the thread."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f = self.path.open("a", encoding="utf-8")
        self._q: queue.SimpleQueue[dict[str, Any] | None] = queue.SimpleQueue()
        self._pending = 0
        self._cv = threading.Condition()
        self.written = 0
        self._thread = threading.Thread(target=self._run, name="recstack-event-log", daemon=True)
        self._thread.start()

    def write(self, event: dict[str, Any]) -> None:
        with self._cv:
            self._pending += 1
        self._q.put(event)

    def _run(self) -> None:
        stop = False
        while not stop:
            batch = [self._q.get()]
            while True:  # drain what is queued, then write it in one go
                try:
                    batch.append(self._q.get_nowait())
                except queue.Empty:
                    break
            events = [e for e in batch if e is not None]
            stop = len(events) < len(batch)
            if events:
                self._f.write("".join(json.dumps(e, separators=(",", ":"), default=str) + "\n" for e in events))
                self._f.flush()
                self.written += len(events)
            with self._cv:
                self._pending -= len(events)
                self._cv.notify_all()

    def flush(self, timeout: float = 10.0) -> None:
        with self._cv:
            self._cv.wait_for(lambda: self._pending <= 0, timeout=timeout)

    def close(self) -> None:
        if self._thread.is_alive():
            self.flush()
            self._q.put(None)
            self._thread.join(timeout=10)
        self._f.close()


def now() -> float:
    return round(time.time(), 6)
