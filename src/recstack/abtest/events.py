"""The service's A/B event log (`recstack serve --event-log`), joined for analysis.

Lines are JSON objects of two types (see `recstack.serving.abtest`):

    {"type": "impression", "request_id": "...", "variant": "B", "propensity": 0.3,
     "unit": "user", "unit_id": "42", "items": [{"item": 7, "pos": 0}, ...], ...}
    {"type": "feedback", "request_id": "...", "variant": "B", "item": 7, "click": true, "reward": 1.0}

Feedback is joined to its impression through `request_id`. A request's outcome is, for the
`ctr` metric, 1 when any of its feedback is a click (or, without a click field, a positive
reward) and 0 otherwise; for the `reward` metric, the sum of its feedback rewards. Analysed
`by="unit"` (the default), each assignment unit (user, session, or the request itself for
anonymous traffic) is one observation: the mean outcome over its requests. That is the unit
the traffic was randomised by, so observations are independent and the sample-ratio check
counts what the split actually assigned; `by="request"` treats every request as one.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from recstack.abtest.analysis import ips_estimate, iter_jsonl
from recstack.data.errors import DataError

METRICS = ("ctr", "reward")


@dataclass
class JoinedLog:
    """Per-variant observations of a joined event log."""

    values: dict[str, np.ndarray]  # one value per unit (or per request), by variant
    impressions: dict[str, int]
    outcome_sum: dict[str, float]  # requests with a click (ctr) or summed reward, by variant
    shares: dict[str, float]  # logged assignment probability (impression `propensity`)
    experiments: list[str]
    feedback: int = 0
    unjoined_feedback: int = 0  # no request_id, or a request_id without an impression
    crossover_units: int = 0  # units seen in more than one variant
    # per request, for off-policy estimates
    request_ids: list[str] = field(default_factory=list)
    request_variant: list[str] = field(default_factory=list)
    request_propensity: np.ndarray = field(default_factory=lambda: np.zeros(0))
    request_outcome: np.ndarray = field(default_factory=lambda: np.zeros(0))


def is_event_log(path: str | Path) -> bool:
    """True when the first non-empty line carries a `type` field (the service's format); False
    for the plain one-row-per-observation format of `read_log`."""
    with Path(path).open() as f:
        for line in f:
            if line.strip():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    return False
                return isinstance(row, dict) and "type" in row
    return False


def _outcome(fb: dict[str, Any], metric: str) -> float:
    click, reward = fb.get("click"), fb.get("reward")
    if metric == "ctr":
        if click is not None:
            return 1.0 if click else 0.0
        return 1.0 if reward is not None and float(reward) > 0 else 0.0
    if reward is not None:
        return float(reward)
    return 1.0 if click else 0.0


def join_events(path: str | Path, metric: str = "ctr", by: str = "unit") -> JoinedLog:
    """Read an event log and join feedback to impressions.

    Raises:
        DataError: a line that is not JSON or lacks a required field (named with the file and
            line number), or a log without impressions.
        ValueError: unknown `metric` / `by`.
    """
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    if by not in ("unit", "request"):
        raise ValueError(f"by must be 'unit' or 'request', got {by!r}")
    p = Path(path)
    imp: dict[str, tuple[str, str, float]] = {}  # request_id -> (variant, unit_id, propensity)
    order: list[str] = []
    outcome: dict[str, float] = defaultdict(float)
    shares: dict[str, float] = {}
    experiments: list[str] = []
    feedback = unjoined = 0
    pending: list[tuple[str | None, float, int]] = []
    for ln, row in iter_jsonl(p):
        kind = row.get("type") if isinstance(row, dict) else None
        if kind == "impression":
            for name in ("request_id", "variant"):
                if row.get(name) is None:
                    raise DataError("missing field", path=str(p), line=ln, field=name)
            rid, v = str(row["request_id"]), str(row["variant"])
            prop = float(row.get("propensity") or 1.0)
            if rid not in imp:
                order.append(rid)
            imp[rid] = (v, str(row.get("unit_id", rid)), prop)
            shares.setdefault(v, prop)
            e = row.get("experiment")
            if e is not None and e not in experiments:
                experiments.append(e)
        elif kind == "feedback":
            feedback += 1
            if row.get("click") is None and row.get("reward") is None:
                raise DataError("feedback without click or reward", path=str(p), line=ln, field="reward")
            try:
                val = _outcome(row, metric)
            except (TypeError, ValueError) as e:
                raise DataError(f"reward is not a number: {row.get('reward')!r}", path=str(p), line=ln,
                                field="reward") from e
            rid = row.get("request_id")
            pending.append((None if rid is None else str(rid), val, ln))
        else:
            raise DataError(f"unknown event type {kind!r}", path=str(p), line=ln, field="type")
    if not imp:
        raise DataError("the log has no impressions", path=str(p))
    for rid, val, _ in pending:  # feedback may come before its impression line (buffered writers)
        if rid is None or rid not in imp:
            unjoined += 1
        elif metric == "ctr":
            outcome[rid] = max(outcome[rid], val)
        else:
            outcome[rid] += val
    req_variant = [imp[r][0] for r in order]
    req_out = np.array([outcome.get(r, 0.0) for r in order], np.float64)
    req_prop = np.array([imp[r][2] for r in order], np.float64)
    impressions: dict[str, int] = defaultdict(int)
    sums: dict[str, float] = defaultdict(float)
    for v, o in zip(req_variant, req_out.tolist(), strict=True):
        impressions[v] += 1
        sums[v] += o
    values: dict[str, list[float]] = defaultdict(list)
    crossovers = 0
    if by == "request":
        for v, o in zip(req_variant, req_out.tolist(), strict=True):
            values[v].append(o)
    else:
        acc: dict[tuple[str, str], list[float]] = {}
        unit_variants: dict[str, set[str]] = defaultdict(set)
        for r, o in zip(order, req_out.tolist(), strict=True):
            v, u, _ = imp[r]
            a = acc.setdefault((v, u), [0.0, 0.0])
            a[0] += o
            a[1] += 1
            unit_variants[u].add(v)
        for (v, _u), (s, n) in acc.items():
            values[v].append(s / n)
        crossovers = sum(len(vs) > 1 for vs in unit_variants.values())
    return JoinedLog({v: np.asarray(x) for v, x in values.items()}, dict(impressions), dict(sums), shares,
                     experiments, feedback, unjoined, crossovers, order, req_variant, req_prop, req_out)


def read_target_propensities(path: str | Path) -> dict[str, float]:
    """`{"request_id": ..., "propensity": p}` lines: a new policy's probability of the logged
    slate of each request."""
    out = {}
    p = Path(path)
    for ln, row in iter_jsonl(p):
        try:
            out[str(row["request_id"])] = float(row["propensity"])
        except (KeyError, TypeError, ValueError) as e:
            raise DataError(f"expected {{request_id, propensity}}: {e!r}", path=str(p), line=ln) from e
    return out


def ips_from_log(log: JoinedLog, policy: str, clip: float = 10.0) -> dict[str, Any]:
    """Off-policy estimate (clipped IPS, SNIPS) of a ranking policy's per-request outcome from
    the logged requests.

    `policy` is a variant name (the policy "serve this variant to all traffic": target
    probability 1 for requests that variant served, 0 otherwise; logged probability = its
    traffic share) or a JSON-lines file of target propensities (`read_target_propensities`;
    requests it does not list get 0)."""
    if policy in log.shares:
        target = np.array([1.0 if v == policy else 0.0 for v in log.request_variant])
        kind = "variant"
    elif Path(policy).is_file():
        tp = read_target_propensities(policy)
        target = np.array([tp.get(r, 0.0) for r in log.request_ids])
        kind = "file"
    else:
        raise ValueError(f"--ips-policy {policy!r}: neither a variant in the log ({sorted(log.shares)}) nor a file")
    est = ips_estimate(log.request_outcome, log.request_propensity, target, clip=clip)
    return {"policy": policy, "kind": kind, "clip": clip, **est}
