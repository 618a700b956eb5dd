"""Evaluation protocols as named values: how a data set is split, what is excluded from the
ranking, and how ties are broken.

Every figure recstack prints names its protocol (`Protocol.to_dict()` in the JSON line of
`recstack train`, the quickstart report, the benchmark scripts). The names:

| name | split, ranking, exclusion |
|---|---|
| ``s3rec`` | leave-one-out in sequence order (last item test, second-to-last validation); full ranking; the items already in the user's sequence are excluded, as S3-Rec's evaluation code does (and FMLP-Rec, ICSRec, BSARec, which build on it; RecBole masks the same) |
| ``lightgcn`` | the given train/test split (LightGCN, NGCF); full ranking; the user's training items excluded |
| ``loo`` | leave-one-out by timestamp; full ranking; the user's known (train + validation) items excluded |
| ``temporal`` | a global time cut; full ranking; known items excluded |
| ``ratio`` | per-user random 80/10/10; full ranking; known items excluded |
| ``given-files`` | the train / (valid) / test split the data files give (RecBole's pre-split ``NAME.train/.valid/.test.inter``), used as is, never split again; full ranking; known (train + validation) items excluded |
| ``<name>-keep-history`` | the same split with nothing excluded: items the user has already interacted with stay rankable (repeat-consumption data). A different protocol: its figures are not comparable with ``<name>``'s. |

Ties (all protocols, unless ``ties="index"`` is asked for): equal scores are ordered by a
seeded hash of (user, item) (:func:`recstack.evaluation.ranking.tie_keys`), so a model gets
the chance value of a tie, never credit for low item ids; identical on CPU and CUDA.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

from recstack.evaluation.ranking import check_ties

__all__ = ["PROTOCOLS", "SPLITS", "Protocol", "get_protocol"]

#: Split kinds (``recstack.data.transforms.split``).
SPLITS: tuple[str, ...] = ("loo", "temporal", "ratio", "given")

_KEEP = "-keep-history"


@dataclass(frozen=True)
class Protocol:
    """One evaluation protocol.

    Attributes:
        name: ``s3rec``, ``lightgcn``, ``loo``, ``temporal``, ``ratio`` or ``given-files``, with the suffix
            ``-keep-history`` when nothing is excluded.
        split: One of :data:`SPLITS`.
        split_text: The split in words.
        exclude_history: Whether the user's history (``history_text``) is removed from
            the ranking.
        history_text: What the user's history is under this split.
        ties: Tie rule, one of :data:`~recstack.evaluation.ranking.TIE_RULES`.
        tie_seed: Seed of the random tie rule.
        source: Where the protocol comes from (papers, code), for the docs and reports.
    """

    name: str
    split: str
    split_text: str
    exclude_history: bool
    history_text: str
    ties: str = "random"
    tie_seed: int = 0
    source: str = ""

    def __post_init__(self) -> None:
        if self.split not in SPLITS:
            raise ValueError(f"protocol {self.name!r}: split must be one of {SPLITS}, got {self.split!r}")
        check_ties(self.ties, self.tie_seed)

    @property
    def exclude_text(self) -> str:
        if self.exclude_history:
            return f"{self.history_text} excluded"
        return f"nothing excluded ({self.history_text} stay rankable)"

    @property
    def ties_text(self) -> str:
        if self.ties == "random":
            return f"ties broken at random (seeded hash of user and item, seed {self.tie_seed})"
        return "ties broken by lower item index (optimistic where ids follow popularity)"

    @property
    def description(self) -> str:
        """One line: split; full ranking; what is excluded; the tie rule."""
        return f"{self.name}: {self.split_text}; full ranking; {self.exclude_text}; {self.ties_text}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: name, split, exclusion and tie rule in fields, plus the one-line text."""
        d = asdict(self)
        d.pop("split_text")
        d.pop("history_text")
        d["excluded"] = self.history_text if self.exclude_history else "nothing"
        d["ties"] = f"random(seed={self.tie_seed})" if self.ties == "random" else "index"
        d.pop("tie_seed")
        d["description"] = self.description
        return d

    def with_options(self, exclude_history: bool | None = None, split: str | None = None,
                     ties: str | None = None, tie_seed: int | None = None) -> Protocol:
        """This protocol with options changed; the name and texts follow the options used.

        Another split gives that split's protocol (with this one's exclusion); turning the
        exclusion off appends ``-keep-history`` to the name.
        """
        p = self
        if split is not None and split != p.split:
            p = replace(get_protocol(_BY_SPLIT[split]), exclude_history=p.exclude_history,
                        ties=p.ties, tie_seed=p.tie_seed)
            p = replace(p, name=_name(p.name, p.exclude_history))
        if exclude_history is not None and exclude_history != p.exclude_history:
            p = replace(p, exclude_history=exclude_history, name=_name(p.name, exclude_history))
        if ties is not None or tie_seed is not None:
            p = replace(p, ties=ties if ties is not None else p.ties,
                        tie_seed=tie_seed if tie_seed is not None else p.tie_seed)
        return p


def _name(name: str, exclude_history: bool) -> str:
    base = name.removesuffix(_KEEP)
    return base if exclude_history else base + _KEEP


#: The named protocols (history excluded; ``get_protocol("<name>-keep-history")`` for the
#: variant that keeps history items rankable).
PROTOCOLS: dict[str, Protocol] = {
    p.name: p
    for p in (
        Protocol("s3rec", "loo", "leave-one-out in sequence order (last item test, second-to-last "
                 "validation)", True, "items already in the user's sequence",
                 source="S3-Rec (Zhou et al., CIKM 2020) evaluation code; FMLP-Rec, ICSRec, BSARec; "
                        "RecBole masks the same items"),
        Protocol("lightgcn", "given", "the given train/test split", True, "the user's training items",
                 source="NGCF (Wang et al., SIGIR 2019) and LightGCN (He et al., SIGIR 2020) evaluation"),
        Protocol("loo", "loo", "leave-one-out by time (last item test, second-to-last validation)",
                 True, "the user's known (train + validation) items"),
        Protocol("temporal", "temporal", "global time split", True,
                 "the user's known (train + validation) items"),
        Protocol("ratio", "ratio", "per-user random 80/10/10", True,
                 "the user's known (train + validation) items"),
        Protocol("given-files", "given", "the train / valid / test split given by the data files, "
                 "used as is", True, "the user's known (train + validation) items",
                 source="RecBole's pre-split atomic files (benchmark_filename: NAME.train/.valid/.test.inter)"),
    )
}
_BY_SPLIT = {"loo": "loo", "temporal": "temporal", "ratio": "ratio", "given": "lightgcn"}


def get_protocol(name: str) -> Protocol:
    """A named protocol (see the module docs); ``<name>-keep-history`` excludes nothing.

    Raises:
        ValueError: unknown name (the message lists the valid ones).
    """
    base = name.removesuffix(_KEEP)
    if base not in PROTOCOLS:
        names = [*PROTOCOLS, *(n + _KEEP for n in PROTOCOLS)]
        raise ValueError(f"unknown protocol {name!r}; valid: {', '.join(names)}")
    p = PROTOCOLS[base]
    return p if base == name else replace(p, exclude_history=False, name=name)

