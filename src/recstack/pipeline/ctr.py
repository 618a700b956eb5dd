"""Adapter: a CTR model of `recstack.models.ctr` (DeepFM, DIN target attention, ...) as a pipeline
ranker. Its feature pipeline and feature store travel with it (`CTRModel.save` directory, shipped
in a bundle's `extras/`), so serving computes exactly the training-time features.

    rankers: {"din": {"kind": "ctr", "extra": "din"}}     # extras/din = CTRModel.save(...)

Two paths, same features:

* `FastCTRRanker` (used whenever every feature is an item attribute, a user attribute or the
  request's item history): at load, the fitted feature pipeline encodes every catalog item and
  every known user once; a request then only gathers rows of those code tables, encodes its
  history with an item -> code array, and runs one batched forward over all candidates under
  `torch.inference_mode` (no polars, no per-candidate Python): ~1-3 ms for 200 candidates.
  FM and DIN go further (same scores, to float rounding): their item-only and user-only parts
  are precomputed per catalog item / per user at load, so a request computes only what mixes
  candidate and history (FM: one pooled history row; DIN: the attention unit after its first
  layer): ~0.1 ms (FM, 380 candidates) and ~0.5 ms (DIN, 200 candidates, 20 history items).
* `CTRRanker`: the generic path through `score_candidates` (a polars frame per request, tens of
  ms), for schemas with request context, crosses or precomputed vectors.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch

from recstack.features.specs import (
    Bucketized,
    Categorical,
    IdSequence,
    MultiHot,
    Numeric,
    column_of,
)
from recstack.models.capabilities import ScoresFeatureRows
from recstack.pipeline.catalog import ItemCatalog, UserStore


class CTRRanker:
    """Scores candidates with `ranker.score_candidates(raw user, raw items, raw history, context)`.

    Unknown / anonymous users are scored with a missing user id (the model's out-of-vocabulary
    embedding) and the request's history.
    """

    def __init__(self, name: str, ranker: Any, catalog: ItemCatalog, users: UserStore) -> None:
        if not isinstance(ranker, ScoresFeatureRows):
            raise TypeError(f"ranker '{name}': {type(ranker).__name__} does not score feature rows "
                            "(ScoresFeatureRows: predict_proba, score_candidates)")
        self.name, self.ranker, self.catalog, self.users = name, ranker, catalog, users

    def score(self, user: int | None, items: np.ndarray, history: np.ndarray,
              context: Mapping[str, Any]) -> np.ndarray | None:
        raw_user = self.users.ids[user].item() if user is not None else None
        raw_items = self.catalog.ids[items]
        raw_hist = self.catalog.ids[history].tolist()
        scores = self.ranker.score_candidates(raw_user, raw_items, history=raw_hist, context=dict(context))
        return np.asarray(scores, np.float32).reshape(len(items), -1)[:, 0]  # multi-task: primary task


class Unsupported(ValueError):
    """The ranker's schema has features the fast path cannot precompute."""


def _table(keys: np.ndarray, key: str, attrs: pl.DataFrame | None) -> pl.DataFrame:
    """Rows aligned with `keys` (raw ids): `key` + the attribute columns of `attrs` (null where
    the id is unknown to it)."""
    frame = pl.DataFrame([pl.Series(key, keys)])
    if attrs is None or attrs.width <= 1:
        return frame
    look = attrs[key].cast(pl.String)
    rows = frame[key].cast(pl.String).replace_strict(look, pl.Series(np.arange(attrs.height, dtype=np.int64)),
                                                     default=None, return_dtype=pl.Int64)
    extra = [c for c in attrs.columns if c != key]
    return frame.with_columns(attrs.select(extra).select(pl.all().gather(rows)).get_columns())


def _nulls(frame: pl.DataFrame, like: pl.DataFrame, skip: set[str]) -> pl.DataFrame:
    """`frame` + every column of `like` it lacks, all null (same dtypes)."""
    add = [pl.lit(None, dtype=like[c].dtype).alias(c) for c in like.columns
           if c not in frame.columns and c not in skip]
    return frame.with_columns(add) if add else frame


def _rows_fn(layers: torch.nn.Sequential) -> Any:
    """`layers` (Linear / PReLU / Dice of a DIN tower, eval mode) as a function of [N, C] rows:
    Linear and the per-feature PReLU as direct functional calls (no module dispatch or reshapes
    per request), anything else through its module."""
    from recstack.models.ctr.models.din import PReLU

    layers.eval()
    steps = []
    for layer in layers:
        if type(layer) is torch.nn.Linear:
            bias = layer.bias.detach() if layer.bias is not None else None
            steps.append((torch.nn.functional.linear, (layer.weight.detach(), bias)))
        elif type(layer) is PReLU:  # 2-D input: torch.prelu reads the slopes along dim 1
            steps.append((torch.prelu, (layer.weight.detach(),)))
        else:
            steps.append((layer, ()))

    def run(x: torch.Tensor) -> torch.Tensor:
        for fn, args in steps:
            x = fn(x, *args)
        return x

    return run


class FastCTRRanker:
    """A fitted `recstack.models.ctr.CTRModel` scoring one request's candidates from precomputed code
    tables (see the module docstring). Returns P(click) of the primary task; abstains (None) on
    the cold-start path (no user, no history), like the other personalised rankers."""

    def __init__(self, name: str, ranker: Any, catalog: ItemCatalog, users: UserStore) -> None:
        self.name, self.ranker, self.catalog, self.users = name, ranker, catalog, users
        store, pipe = ranker.store_, ranker.pipeline_
        if store is None or store.items is None:
            raise Unsupported(f"ranker '{name}': no feature store with item attributes")
        ikey, ukey, hcol = store.item_key, store.user_key, store.history_column
        item_cols = set(store.items.columns)
        user_cols = {ukey} | set(store.users.columns if store.users is not None else ())
        state = store.histories
        state_cols = set(state.columns) - {ukey} if state is not None else set()
        if state_cols - {hcol}:
            raise Unsupported(f"ranker '{name}': stored request-time columns {sorted(state_cols - {hcol})}")
        # side of every output column, in the pipeline's output order
        cat_side, num_side, bag_side, side_of = [], [], {}, {}
        for s in pipe.specs:
            col = column_of(s)
            side = "item" if col in item_cols else "user" if col in user_cols else None
            if isinstance(s, IdSequence) and col == hcol:
                side = "history"
            if side is None or not isinstance(s, Categorical | Bucketized | Numeric | MultiHot | IdSequence):
                raise Unsupported(f"ranker '{name}': feature '{s.name}' (column '{col}') is neither an item "
                                  "attribute, a user attribute nor the history")
            side_of[s.name] = side
            if isinstance(s, Categorical | Bucketized):
                cat_side.append(side)
            elif isinstance(s, Numeric):
                num_side.append(side)
            else:
                bag_side[s.name] = (side, s)
        if sum(v[0] == "history" for v in bag_side.values()) > 1:
            raise Unsupported(f"ranker '{name}': more than one history sequence")
        # encode every catalog item and every known user (+ one anonymous row) once
        items = _table(catalog.ids, ikey, store.items)
        urows = _table(users.ids, ukey, store.users)
        urows = pl.concat([urows, urows.clear(1)])  # last row: anonymous (all missing)
        # empty histories and missing columns as broadcast literals: building them from Python
        # lists cost ~0.4 s per load (a hot swap's share of the GIL)
        empty = pl.lit([], dtype=pl.List(store.items[ikey].dtype)).alias(hcol)
        items = _nulls(items.with_columns(empty), urows, set())
        urows = _nulls(urows.with_columns(empty), items, set())
        it = pipe.transform(items, where=f"{name}: catalog items")
        ut = pipe.transform(urows, where=f"{name}: users")
        if it["emb"].shape[1] or it["cross"].shape[1]:
            raise Unsupported(f"ranker '{name}': crosses / precomputed vectors")
        ic, uc = np.array([s == "item" for s in cat_side]), np.array([s == "user" for s in num_side])
        self.item_cat, self.user_cat = it["cat"], ut["cat"]
        self.user_cat_cols = torch.from_numpy(np.flatnonzero(~ic))
        self.item_num, self.user_num = it["num"], ut["num"]
        self.user_num_cols = torch.from_numpy(np.flatnonzero(uc))
        self.bags: dict[str, tuple[str, torch.Tensor]] = {}
        self.history_bag: tuple[str, torch.Tensor, int] | None = None
        for bname, (side, spec) in bag_side.items():
            key = f"bag.{bname}"
            if side == "history":  # catalog index -> the sequence's code of that item
                codes = pipe._encode(pl.Series(catalog.ids), spec)
                self.history_bag = (key, torch.from_numpy(np.asarray(codes, np.int64)), spec.max_len)
            else:
                self.bags[key] = (side, it[key] if side == "item" else ut[key])
        self.module = ranker.module_
        self.module.eval()
        self.anonymous = users.n_users
        self._fm_users: tuple[torch.Tensor, ...] | None = None
        self._fm_history: tuple[torch.Tensor, torch.Tensor] | None = None
        self.fm_tables = self._fm_tables(side_of, num_side)
        self.din_tables = self._din_tables(side_of, num_side)

    def _pairs(self, users: torch.Tensor, items: torch.Tensor) -> dict[str, torch.Tensor]:
        """Model tensors of independent rows (users[r], items[r]) with empty histories: the
        batched form of `batch` for the load-time tables."""
        n = len(items)
        cat = self.item_cat[items]
        if len(self.user_cat_cols):
            cat[:, self.user_cat_cols] = self.user_cat[users][:, self.user_cat_cols]
        num = self.item_num[items]
        if len(self.user_num_cols):
            num[:, self.user_num_cols] = self.user_num[users][:, self.user_num_cols]
        out = {"cat": cat, "num": num, "emb": torch.zeros(n, 0), "cross": torch.zeros(n, 0, dtype=torch.long)}
        for key, (side, table) in self.bags.items():
            out[key] = table[items] if side == "item" else table[users]
        if self.history_bag is not None:
            key, _, max_len = self.history_bag
            out[key] = torch.zeros(n, max_len, dtype=torch.long)
        return out

    def _fm_tables(self, side_of: dict[str, str], num_side: list[str]) -> tuple[torch.Tensor, ...] | None:
        """For an FM, the item side of every catalog item, computed once (see `_score_fm`):
        (linear term with the anonymous user [n], sum of item-side field vectors [n, D], sum of
        their squared norms [n], item-side field mask [F]). None for other models."""
        from recstack.models.ctr.models.fm import FMNet

        m = self.module
        if type(m) is not FMNet:
            return None
        emb = m.embed
        names = [*emb.layout.cat_names, *(n for n, _ in emb.bag_fields)]
        if any(n not in side_of for n in names) or emb.emb_proj is not None:
            return None
        sides = [side_of[n] for n in names] + (num_side if emb.num_vectors is not None else [])
        item_f = torch.tensor([sd == "item" for sd in sides])
        if self.history_bag is not None:  # the history's field in the embedding / linear tables
            hist = self.history_bag[0].removeprefix("bag.")
            f_e, f_l = dict(emb.bag_fields).get(hist), dict(m.linear.bag_fields).get(hist)
            if f_e is None or f_l is None:
                return None
            # per catalog item: [its history-field embedding row, linear weight], zero where the
            # item has no sequence code (padding / outside the vocabulary); a request's history
            # field is then the mean of its items' rows (what the bag lookups compute)
            codes = self.history_bag[1]
            with torch.inference_mode():
                rows = torch.cat([emb.table.field(codes, f_e), m.linear.table.field(codes, f_l)], 1).float()
                valid = codes > 0
                self._fm_history = (rows * valid.unsqueeze(1).float(), valid.float())
        with torch.inference_mode():
            b = self.batch(None, np.arange(len(self.item_cat)), np.zeros(0, np.int64))
            lin = m.linear(b).float()
            e = emb(b)[:, item_f].float()
            # the user side of every user (+ the anonymous row) with an empty history, in one
            # batched forward: an empty history bag pools to exactly zero, so a request adds its
            # history's pooled vector and linear weight to its user's row (`_fm_user_side`)
            n_u = len(self.user_cat)
            ub = self._pairs(torch.arange(n_u), torch.zeros(n_u, dtype=torch.long))
            e_u = emb(ub)[:, ~item_f].float()
            self._fm_users = (m.linear(ub).float() - lin[0], e_u.sum(1), e_u.square().sum((1, 2)))
        return lin, e.sum(1), e.square().sum((1, 2)), item_f

    def _din_tables(self, side_of: dict[str, str], num_side: list[str]) -> dict[str, Any] | None:
        """For a DIN (one attended sequence = the history), the candidate-only parts of its
        forward for every catalog item and the user-only parts for every user (see
        `_score_din`). None for other models or layouts this split does not cover."""
        from recstack.models.ctr.models.din import DINNet

        m = self.module
        if type(m) is not DINNet or len(m.seqs) != 1 or self.history_bag is None:
            return None
        emb = m.embed
        names = [*emb.layout.cat_names, *(n for n, _ in emb.bag_fields)]
        if (f"bag.{m.seqs[0]}" != self.history_bag[0] or emb.emb_proj is not None
                or any(side_of.get(n) not in ("item", "user") for n in names)
                or side_of.get(m.target) != "item" or any(p.dtype != torch.float32 for p in m.parameters())):
            return None
        d, n_f = emb.dim, len(names)
        item_f = torch.tensor([side_of[n] == "item" for n in names])
        user_n = torch.tensor([sd == "user" for sd in num_side], dtype=torch.bool)
        first, unit = m.mlp[0], m.attention[0]
        w_e = first.weight[:, : n_f * d].reshape(-1, n_f, d)
        w_v = first.weight[:, n_f * d : (n_f + 1) * d]
        w_n = first.weight[:, (n_f + 1) * d :]
        w_h, w_t, w_d, w_p = unit[0].weight.split(d, dim=1)
        n_i, n_u = len(self.item_cat), len(self.user_cat)
        with torch.inference_mode():
            e_i = emb(self._pairs(torch.full((n_i,), self.anonymous), torch.arange(n_i)))
            e_u = emb(self._pairs(torch.arange(n_u), torch.zeros(n_u, dtype=torch.long)))
            # first MLP layer on [profile + candidate fields, v_U(t), numeric]: split by side
            item_pre = torch.einsum("nfd,hfd->nh", e_i[:, item_f], w_e[:, item_f]) + first.bias
            user_pre = torch.einsum("nfd,hfd->nh", e_u[:, ~item_f], w_e[:, ~item_f])
            if w_n.shape[1]:
                item_pre = item_pre + self.item_num[:, ~user_n] @ w_n[:, ~user_n].T
                user_pre = user_pre + self.user_num[:, user_n] @ w_n[:, user_n].T
            # attention unit, first layer: (W_t - W_d) t + b for every candidate t
            t = emb.table.field(self.item_cat[:, m.target_field], m.target_field)
            t_part = torch.nn.functional.linear(t, w_t - w_d, unit[0].bias)
            items = torch.cat([t, t_part, item_pre], 1).contiguous()
        return {"items": items, "users": user_pre.contiguous(), "split": (d, t_part.shape[1], item_pre.shape[1]),
                "w_hd": (w_h + w_d).T.contiguous().detach(), "w_p": w_p.T.contiguous().detach(),
                "w_v": w_v.T.contiguous().detach(), "unit_rest": _rows_fn(unit[1:]),
                "mlp_rest": _rows_fn(m.mlp[1:])}

    def _score_din(self, user: int | None, items: np.ndarray, history: np.ndarray) -> np.ndarray:
        """DIN scores equal to the full forward, with the per-candidate work reduced to what
        depends on both the candidate and the history (the attention unit after its first layer):
        candidate-only terms are gathered from `din_tables`, user-only terms are one row, and the
        history is embedded once per request, not once per candidate. Positions the model masks
        (code 0: padding or items outside the sequence vocabulary) are dropped: they attend to
        nothing."""
        t = self.din_tables
        d, h_dim, h1 = t["split"]
        _, codes, max_len = self.history_bag
        idx = torch.from_numpy(np.ascontiguousarray(items, np.int64))
        u = self.anonymous if user is None else int(user)
        h = np.ascontiguousarray(np.asarray(history, np.int64)[-max_len:])
        with torch.inference_mode():
            c = codes[torch.from_numpy(h)]
            c = c[c > 0]
            tv, tp, pre = t["items"].index_select(0, idx).split((d, h_dim, h1), 1)
            pre = pre + t["users"][u]
            n_l = len(c)
            if n_l:
                m = self.module
                hist = m.embed.table.field(c, m.target_field)  # [L, D]
                # (h * t) W_p^T for all (candidate, position) pairs as one [B, D] @ [D, L*H] product
                w_ph = (hist.T.unsqueeze(2) * t["w_p"].unsqueeze(1)).reshape(d, n_l * h_dim)
                hidden = torch.addmm((hist @ t["w_hd"]).reshape(1, -1), tv, w_ph)
                hidden = (hidden.view(len(idx), n_l, h_dim) + tp.unsqueeze(1)).view(-1, h_dim)
                a = t["unit_rest"](hidden).view(len(idx), n_l)  # attention weights
                pre = torch.addmm(pre, a @ hist, t["w_v"])
            return torch.sigmoid(t["mlp_rest"](pre).squeeze(1).float()).numpy()

    def batch(self, user: int | None, items: np.ndarray, history: np.ndarray) -> dict[str, torch.Tensor]:
        """The model tensors of one request (what `pipeline.transform` gives for its rows)."""
        u = self.anonymous if user is None else int(user)
        idx = torch.from_numpy(np.ascontiguousarray(items, np.int64))
        c = len(idx)
        cat = self.item_cat[idx]
        if len(self.user_cat_cols):
            cat[:, self.user_cat_cols] = self.user_cat[u, self.user_cat_cols]
        num = self.item_num[idx]
        if len(self.user_num_cols):
            num[:, self.user_num_cols] = self.user_num[u, self.user_num_cols]
        out = {"cat": cat, "num": num, "emb": torch.zeros(c, 0), "cross": torch.zeros(c, 0, dtype=torch.long)}
        for key, (side, table) in self.bags.items():
            out[key] = table[idx] if side == "item" else table[u].expand(c, -1)
        if self.history_bag is not None:
            key, codes, max_len = self.history_bag
            seq = torch.zeros(1, max_len, dtype=torch.long)
            h = np.ascontiguousarray(np.asarray(history, np.int64)[-max_len:])
            if len(h):
                seq[0, max_len - len(h):] = codes[torch.from_numpy(h)]
            out[key] = seq.expand(c, -1)
        return out

    def score(self, user: int | None, items: np.ndarray, history: np.ndarray,
              context: Mapping[str, Any]) -> np.ndarray | None:
        if user is None and len(history) == 0:
            return None  # cold start: nothing personal to score with; the stage keeps the order
        if len(items) == 0:
            return np.zeros(0, np.float32)
        if self.fm_tables is not None:
            return self._score_fm(user, items, history)
        if self.din_tables is not None:
            return self._score_din(user, items, history)
        with torch.inference_mode():
            z = self.module(self.batch(user, items, history))
            z = z[:, 0] if z.ndim == 2 else z  # multi-task: primary task
            return torch.sigmoid(z.float()).numpy()

    def score_batch(self, users: Sequence[int | None], items: Sequence[np.ndarray],
                    histories: Sequence[np.ndarray], contexts: Sequence[Mapping[str, Any]]
                    ) -> list[np.ndarray | None]:
        """`score` of several requests with one forward over all their candidates: the
        candidates are concatenated and each row carries its request's user / history side
        (FM: the pooled history rows; other models: the requests' model tensors stacked; DIN
        runs its split forward per request, see below). Equal to `score` to float rounding."""
        out: list[np.ndarray | None] = [None] * len(items)
        live = []
        for j, (u, it, h) in enumerate(zip(users, items, histories, strict=True)):
            if u is None and len(h) == 0:
                continue  # cold start: abstain, as `score`
            if len(it) == 0:
                out[j] = np.zeros(0, np.float32)
            else:
                live.append(j)
        if not live:
            return out
        sizes = [len(items[j]) for j in live]
        idx = torch.from_numpy(np.concatenate([np.asarray(items[j], np.int64) for j in live]))
        seg = torch.from_numpy(np.repeat(np.arange(len(live)), sizes))
        us = [users[j] for j in live]
        hs = [np.asarray(histories[j], np.int64) for j in live]
        with torch.inference_mode():
            if self.fm_tables is not None:
                p = self._score_fm_batch(us, idx, hs, seg)
            elif self.din_tables is not None:
                # DIN per request: its cost is the attention unit over every (candidate, history
                # position) pair, not per-call overhead; batched, the [N, L, H] intermediates
                # outgrow the CPU caches and cost ~3x more per request (measured: 200
                # candidates x 20 positions, 16 requests: 1.1 ms each alone, 3.1 ms batched)
                p = torch.cat([torch.from_numpy(self._score_din(u, items[j], h)) for u, j, h in zip(us, live, hs, strict=True)])
            else:
                parts = [self.batch(u, items[j], h) for u, j, h in zip(us, live, hs, strict=True)]
                z = self.module({key: torch.cat([b[key] for b in parts]) for key in parts[0]})
                z = z[:, 0] if z.ndim == 2 else z  # multi-task: primary task
                p = torch.sigmoid(z.float())
        for j, part in zip(live, torch.split(p, sizes), strict=True):
            out[j] = part.numpy()
        return out

    def _users(self, users: Sequence[int | None]) -> torch.Tensor:
        return torch.tensor([self.anonymous if u is None else int(u) for u in users], dtype=torch.long)

    def _histories(self, hs: Sequence[np.ndarray], max_len: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The last `max_len` items of each history, concatenated, with their request's row."""
        hs = [h[-max_len:] for h in hs]
        flat = torch.from_numpy(np.concatenate(hs)) if hs else torch.zeros(0, dtype=torch.long)
        return flat, torch.from_numpy(np.repeat(np.arange(len(hs)), [len(h) for h in hs]))

    def _score_fm_batch(self, users: Sequence[int | None], idx: torch.Tensor, hs: Sequence[np.ndarray],
                        seg: torch.Tensor) -> torch.Tensor:
        """`_score_fm` of several requests: user sides pooled with one `index_add_` each."""
        lin0, s_item, q_item, _ = self.fm_tables
        lin_t, s_t, q_t = self._fm_users
        u = self._users(users)
        lin_u, s_u, q_u = lin_t[u], s_t[u], q_t[u]
        if self._fm_history is not None:
            rows, valid = self._fm_history
            h, hseg = self._histories(hs, self.history_bag[2])
            pooled = torch.zeros(len(hs), rows.shape[1]).index_add_(0, hseg, rows[h])
            count = torch.zeros(len(hs)).index_add_(0, hseg, valid[h]).clamp_min(1.0)
            pooled = pooled / count.unsqueeze(1)
            e_h, l_h = pooled[:, :-1], pooled[:, -1]
            lin_u, s_u, q_u = lin_u + l_h, s_u + e_h, q_u + e_h.square().sum(1)
        s = s_item[idx] + s_u[seg]
        z = lin0[idx] + lin_u[seg] + 0.5 * (s.square().sum(1) - q_item[idx] - q_u[seg])
        return torch.sigmoid(z)

    def _score_fm(self, user: int | None, items: np.ndarray, history: np.ndarray) -> np.ndarray:
        """FM scores from the per-item tables and the request's user side; equal to the full
        forward (FM is linear + pairwise, so both split into item, user and cross parts):
            linear(u, i) = linear(anon, i) + linear(u, i0) - linear(anon, i0)
            pairs(u, i)  = 1/2 (|S_i + S_u|^2 - Q_i - Q_u)   (S: field-vector sums, Q: squared norms)."""
        lin0, s_item, q_item, _ = self.fm_tables
        idx = torch.from_numpy(np.ascontiguousarray(items, np.int64))
        with torch.inference_mode():
            lin_u, s_u, q_u = self._fm_user_side(user, history)
            s = s_item[idx] + s_u
            z = lin0[idx] + lin_u + 0.5 * (s.square().sum(1) - q_item[idx] - q_u)
            return torch.sigmoid(z).numpy()

    def _fm_user_side(self, user: int | None, history: np.ndarray) -> tuple[torch.Tensor, ...]:
        """(linear(u, i0) - linear(anon, i0), S_u, Q_u) of a request's user side: the user's
        load-time row (empty history) plus the history field, the mean of the history items'
        precomputed rows (one small gather instead of a forward pass; any history, no cache)."""
        lin_t, s_t, q_t = self._fm_users
        u = self.anonymous if user is None else int(user)
        if self._fm_history is None:
            return lin_t[u], s_t[u], q_t[u]
        rows, valid = self._fm_history
        max_len = self.history_bag[2]
        h = torch.from_numpy(np.ascontiguousarray(np.asarray(history, np.int64)[-max_len:]))
        pooled = rows[h].sum(0) / valid[h].sum().clamp_min(1.0)  # [D + 1]: embedding, linear
        e_h, l_h = pooled[:-1], pooled[-1]
        return lin_t[u] + l_h, s_t[u] + e_h, q_t[u] + e_h.square().sum()


def load_ctr_ranker(name: str, path: str | Path, catalog: ItemCatalog, users: UserStore,
                    fast: bool = True) -> CTRRanker | FastCTRRanker:
    """Load a `recstack.models.ctr.CTRModel` saved at `path` (JSON + safetensors + Parquet) on CPU:
    the precomputed fast path when its schema allows (and `fast`), else `score_candidates`."""
    from recstack.models.ctr import CTRModel

    r = CTRModel.load(path, device="cpu")
    if fast:
        try:
            return FastCTRRanker(name, r, catalog, users)
        except Unsupported:
            pass
    return CTRRanker(name, r, catalog, users)
