"""Tests for recstack.data.transforms: hand-checked tiny cases plus reference comparisons."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recstack.data.dataset import TEST, TRAIN, VALID, FeatureTable, Interactions, from_raw
from recstack.data.errors import DataError
from recstack.data.transforms import (
    Split,
    build_sequences,
    deduplicate,
    filter_by_count,
    kcore,
    load_split,
    save_split,
    split,
    split_kfold,
    split_leave_one_out,
    split_predefined,
    split_ratio,
    split_temporal,
    to_implicit,
    user_sequences,
)


def make(users, items, **cols) -> Interactions:
    return from_raw(np.asarray(users), np.asarray(items), **cols)


def rows(d: Interactions, *extra: str) -> list[tuple]:
    """Interactions as sorted tuples of raw ids (+ extra columns), independent of indexing."""
    cols = [d.user_vocab.decode(d.user).tolist(), d.item_vocab.decode(d.item).tolist()]
    cols += [getattr(d, c).tolist() for c in extra]
    return sorted(zip(*cols, strict=True))


def random_data(seed: int, n: int = 400, nu: int = 40, ni: int = 30, ts_kind: str = "int"
                ) -> Interactions:
    """Random interactions with many ties in time. ts_kind: "int" (small range), "float", or
    "huge" (int64 range too wide to pack with the user index, exercising the rank fallback)."""
    rng = np.random.default_rng(seed)
    u = rng.integers(0, nu, n)
    i = (rng.pareto(1.0, n) * 3).astype(np.int64) % ni  # skewed item popularity
    ts = rng.integers(0, 50, n)
    if ts_kind == "float":
        ts = ts / 7.0 - 3.0
    elif ts_kind == "huge":
        ts = ts * (2**56) - 2**62
    return make(u, i, timestamp=ts, rating=rng.integers(1, 6, n))


# ---- to_implicit -----------------------------------------------------------------------------
def test_to_implicit_threshold_and_log():
    d = make(["a", "a", "b", "c"], [1, 2, 1, 3], rating=[5.0, 2.0, 4.0, np.nan])
    d.log.append("loaded")
    out = to_implicit(d, 4)
    assert rows(out, "rating") == [("a", 1, 5.0), ("b", 1, 4.0)]
    assert out.n_users == 3 and out.n_items == 3  # vocabularies untouched
    assert out.log[:-1] == ["loaded"] and d.log == ["loaded"]  # input not mutated
    line = out.log[-1]
    assert "kept 2 of 4" in line and "removed 2" in line and "1 with missing rating" in line
    assert "1 users and 2 items left with no interactions" in line
    assert len(d) == 4


def test_to_implicit_none_and_errors():
    d = make([1, 2], [1, 1])
    out = to_implicit(d)
    assert out is not d and len(out) == 2 and "kept all 2" in out.log[-1]
    with pytest.raises(DataError, match="rating"):
        to_implicit(d, 3.0)


# ---- deduplicate -----------------------------------------------------------------------------
@pytest.fixture
def dup() -> Interactions:
    # (a,1) three times with times 5,1,5 (tie at 5: row 2 is later); (b,2) twice; (a,2) once
    return make(
        ["a", "a", "a", "b", "b", "a"], [1, 1, 1, 2, 2, 2],
        timestamp=[5, 1, 5, 3, 2, 9], rating=[3.0, 5.0, 1.0, 2.0, 4.0, 1.0],
    )


def test_deduplicate_first_last(dup):
    last = deduplicate(dup, "last")
    assert rows(last, "timestamp", "rating") == [("a", 1, 5, 1.0), ("a", 2, 9, 1.0), ("b", 2, 3, 2.0)]
    first = deduplicate(dup, "first")
    assert rows(first, "timestamp", "rating") == [("a", 1, 1, 5.0), ("a", 2, 9, 1.0), ("b", 2, 2, 4.0)]
    assert "merged 3 duplicate rows of 2 (user,item) pairs; 6 -> 3" in last.log[-1]
    # original row order is kept: rows 2 (a,1), 3 (b,2), 5 (a,2)
    assert last.timestamp.tolist() == [5, 3, 9]


def test_deduplicate_sum_max(dup):
    s = deduplicate(dup, "sum")
    assert rows(s, "weight", "timestamp") == [("a", 1, 3.0, 5), ("a", 2, 1.0, 9), ("b", 2, 2.0, 3)]
    assert s.weight.dtype == np.float32 and "1 per row" in s.log[-1]
    w = make(["a", "a", "b"], [1, 1, 1], weight=[0.5, 2.0, 1.0])
    assert rows(deduplicate(w, "sum"), "weight") == [("a", 1, 2.5), ("b", 1, 1.0)]
    m = deduplicate(dup, "max")
    assert rows(m, "rating", "timestamp") == [("a", 1, 5.0, 1), ("a", 2, 1.0, 9), ("b", 2, 4.0, 2)]
    # rating ties -> latest row wins
    t = make(["a", "a", "a"], [1, 1, 1], timestamp=[1, 3, 2], rating=[4.0, 4.0, 1.0])
    assert rows(deduplicate(t, "max"), "timestamp") == [("a", 1, 3)]


def test_deduplicate_row_order_and_folds():
    d = make(["a", "a", "b"], [1, 1, 1], fold=[TRAIN, TEST, TRAIN])
    out = deduplicate(d, "first")
    assert out.fold.tolist() == [TRAIN, TRAIN] and "by row order" in out.log[-1]
    assert "1 merged pairs spanned several folds" in out.log[-1]
    with pytest.raises(ValueError):
        deduplicate(d, "mean")


# ---- k-core ----------------------------------------------------------------------------------
def kcore_reference(u, i, uk, ik) -> set[int]:
    """Slow, obviously-correct iterative k-core on row ids."""
    alive = set(range(len(u)))
    while True:
        uc, ic = {}, {}
        for r in alive:
            uc[u[r]] = uc.get(u[r], 0) + 1
            ic[i[r]] = ic.get(i[r], 0) + 1
        drop = {r for r in alive if uc[u[r]] < uk or ic[i[r]] < ik}
        if not drop:
            return alive
        alive -= drop


def test_kcore_hand_case():
    # items 3 and 9 have 1 interaction each -> both rows of c go in round 1; then stable
    d = make(["a", "a", "b", "b", "c", "c"], [1, 2, 1, 2, 3, 9], timestamp=np.arange(6))
    out = kcore(d, 2, 2)
    assert rows(out) == [("a", 1), ("a", 2), ("b", 1), ("b", 2)]
    assert out.n_users == 2 and out.n_items == 2
    assert out.user.max() == 1 and out.item.max() == 1  # re-indexed
    assert ("k-core(user>=2,item>=2): 1 rounds, removed 2 interactions, 1 users, 2 items; "
            "kept 4 interactions, 2 users, 2 items") == out.log[-1]


@pytest.mark.parametrize("seed", range(6))
def test_kcore_matches_reference(seed):
    rng = np.random.default_rng(seed)
    uk, ik = int(rng.integers(1, 8)), int(rng.integers(1, 8))
    d = random_data(seed, n=300)
    d = make(d.user, d.item, timestamp=np.arange(len(d)))  # timestamp = row id
    ref = kcore_reference(d.user.tolist(), d.item.tolist(), uk, ik)
    if not ref:
        with pytest.raises(DataError, match="removed all"):
            kcore(d, uk, ik)
        return
    out = kcore(d, uk, ik)
    assert sorted(out.timestamp.tolist()) == sorted(ref)
    if len(out):  # core property holds and nothing empty is left in the vocabularies
        assert out.user_counts().min() >= uk and out.item_counts().min() >= ik
    assert f"removed {len(d) - len(out):,} interactions" in out.log[-1]


def test_kcore_drops_preexisting_empty_and_max_rounds():
    d = to_implicit(make(["a", "a", "b"], [1, 2, 3], rating=[5.0, 5.0, 1.0]), 3)
    out = kcore(d, 1, 1)
    assert "0 rounds" in out.log[-1] and "also dropped 1 users and 1 items" in out.log[-1]
    chain = make(["a", "a", "b", "b", "c"], [1, 2, 2, 3, 3])  # peels one step per round
    with pytest.warns(RuntimeWarning):
        part = kcore(chain, 2, 2, max_rounds=1)
    assert "NOT converged" in part.log[-1]
    with warnings.catch_warnings(), pytest.raises(DataError, match=r"k-core\(user>=2,item>=2\) removed all"):
        warnings.simplefilter("error")
        kcore(chain, 2, 2)  # an empty k-core is an error, not empty data


def test_filter_by_count_single_pass():
    d = make(["a", "a", "b", "b", "c"], [1, 2, 1, 3, 1])
    out = filter_by_count(d, min_user=2, min_item=2)
    # one pass: item counts taken before removing user c, so (a,1),(b,1) stay
    assert rows(out) == [("a", 1), ("b", 1)]
    assert out.n_users == 2 and out.n_items == 1
    assert "removed 3 interactions; 1 users and 2 items lost" in out.log[-1]
    keep_vocab = filter_by_count(d, 2, 2, compact=False)
    assert keep_vocab.n_users == 3


@pytest.mark.parametrize("apply, message", [
    (lambda d: kcore(d, 3, 3), "k-core(user>=3,item>=3) removed all 5 interactions; lower the minimums"),
    (lambda d: filter_by_count(d, 3, 1), "filter_by_count(user>=3,item>=1) removed all 5 interactions; lower the minimums"),
    (lambda d: to_implicit(d, 6), "to_implicit(rating>=6) removed all 5 interactions; lower the threshold"),
], ids=["kcore", "filter_by_count", "to_implicit"])
def test_filter_removing_every_row_fails_with_one_line(apply, message):
    """Issue 22: an empty result is a one-line DataError naming the filter and its setting, never
    empty data that a split and the metrics turn into NaN further down."""
    d = make(["a", "a", "b", "b", "c"], [1, 2, 3, 4, 5], rating=[1.0, 2.0, 3.0, 4.0, 5.0])
    d.name = "tiny"
    with pytest.raises(DataError) as e:
        apply(d)
    assert str(e.value) == f"tiny: {message}"
    assert len(kcore(make([], []), 3, 3)) == 0  # empty input stays empty (nothing was removed)


# ---- leave-one-out ---------------------------------------------------------------------------
@pytest.fixture
def loo_data() -> Interactions:
    return make(
        ["a", "a", "a", "a", "b", "b", "c", "d", "d", "d"],
        [1, 2, 3, 4, 1, 2, 1, 5, 6, 7],
        #  a: item 4 is latest; items 2,3 tie at t=7 -> row order: 3 is later
        timestamp=[1, 7, 7, 9, 5, 4, 1, 2, 2, 2],
    )


def test_loo_hand_case(loo_data):
    s = split_leave_one_out(loo_data)
    assert rows(s.test) == [("a", 4), ("b", 1), ("d", 7)]
    assert rows(s.valid) == [("a", 3), ("d", 6)]
    assert rows(s.train) == [("a", 1), ("a", 2), ("b", 2), ("c", 1), ("d", 5)]
    for p in (s.train, s.valid, s.test):
        assert p.n_users == loo_data.n_users and p.n_items == loo_data.n_items
        assert p.user_vocab is loo_data.user_vocab
    assert s.protocol == "loo"
    assert s.info["users_train_only"] == 1 and s.info["users_without_valid"] == 1
    line = s.test.log[-1]
    assert "train 5 / valid 2 / test 3" in line and "1 users with a single interaction" in line
    assert "1 users with 2 interactions have train+test only" in line


def test_loo_no_valid_and_by_order(loo_data):
    s = split_leave_one_out(loo_data, valid=False)
    assert s.valid is None and len(s.train) == 7 and rows(s.test) == [("a", 4), ("b", 1), ("d", 7)]
    o = split_leave_one_out(loo_data, by="order")
    assert rows(o.test) == [("a", 4), ("b", 2), ("d", 7)]
    with pytest.raises(DataError, match="timestamp"):
        split_leave_one_out(make([1, 1], [1, 2]))


def loo_reference(d: Interactions, valid: bool) -> np.ndarray:
    fold = np.zeros(len(d), np.int8)
    per_user: dict[int, list[tuple[int, int]]] = {}
    for r, (u, t) in enumerate(zip(d.user.tolist(), d.timestamp.tolist(), strict=True)):
        per_user.setdefault(u, []).append((t, r))
    for evs in per_user.values():
        evs.sort()
        if len(evs) >= 2:
            fold[evs[-1][1]] = TEST
        if valid and len(evs) >= 3:
            fold[evs[-2][1]] = VALID
    return fold


def fold_of(s: Split, n: int) -> np.ndarray:
    """Recover each original row's part, using timestamp = row id."""
    fold = np.full(n, -1)
    for code, p in ((TRAIN, s.train), (VALID, s.valid), (TEST, s.test)):
        if p is not None:
            fold[p.weight.astype(np.int64)] = code
    return fold


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10**6), valid=st.booleans(), ts_kind=st.sampled_from(["int", "float"]))
def test_loo_properties(seed, valid, ts_kind):
    d = random_data(seed, n=200, nu=30, ts_kind=ts_kind)
    d = make(d.user, d.item, timestamp=d.timestamp, weight=np.arange(len(d)))  # weight = row id
    s = split_leave_one_out(d, valid=valid)
    fold = fold_of(s, len(d))
    assert (fold >= 0).all()  # a partition of the rows
    assert (fold == loo_reference(d, valid)).all()
    # no leakage: (time, row) of test > valid > every train row of the same user
    key = np.lexsort((np.arange(len(d)), d.timestamp)).argsort()  # rank by (time, row)
    for code_hi, code_lo in ((TEST, TRAIN), (TEST, VALID), (VALID, TRAIN)):
        hi = np.full(d.n_users, np.iinfo(np.int64).max)
        lo = np.full(d.n_users, np.iinfo(np.int64).min)
        np.minimum.at(hi, d.user[fold == code_hi], key[fold == code_hi])
        np.maximum.at(lo, d.user[fold == code_lo], key[fold == code_lo])
        assert (hi > lo).all()


# ---- temporal / ratio / predefined -------------------------------------------------------------
def test_temporal_hand_case():
    d = make(["a", "a", "b", "b", "c", "a", "d", "b", "a", "e"],
             [1, 2, 1, 2, 1, 3, 1, 4, 2, 1], timestamp=np.arange(10) * 10)
    s = split_temporal(d, valid_frac=0.2, test_frac=0.3)
    # 10 rows: test = the last 3 (t >= 70), valid = the 2 before (t >= 50)
    assert rows(s.train, "timestamp") == [("a", 1, 0), ("a", 2, 10), ("b", 1, 20), ("b", 2, 30),
                                          ("c", 1, 40)]
    assert rows(s.valid, "timestamp") == [("a", 3, 50), ("d", 1, 60)]
    assert rows(s.test, "timestamp") == [("a", 2, 80), ("b", 4, 70), ("e", 1, 90)]
    i = s.info
    assert (i["cut_valid"], i["cut_test"]) == (50, 70)
    assert (i["n_train"], i["n_valid"], i["n_test"]) == (5, 2, 3)
    assert i["valid_cold_users"] == 1 and i["valid_rows_cold_user"] == 1  # d
    assert i["valid_cold_items"] == 1 and i["valid_rows_cold_item"] == 1  # item 3
    assert i["test_cold_users"] == 1 and i["test_cold_items"] == 1 and i["test_rows_cold_item"] == 1
    assert "cold, not removed" in s.test.log[-1] and "test keeps 1 rows of 1 users" in s.test.log[-1]


def test_temporal_ties_stay_together_and_no_valid():
    d = make([1, 2, 3, 4], [1, 1, 1, 1], timestamp=[1, 2, 2, 2])
    s = split_temporal(d, valid_frac=0.0, test_frac=0.25)
    assert s.valid is None and len(s.test) == 3 and len(s.train) == 1
    with pytest.raises(ValueError):
        split_temporal(d, 0.5, 0.5)
    with pytest.raises(DataError):
        split_temporal(make([1], [1]))


def test_ratio_split_counts_and_determinism():
    rng = np.random.default_rng(0)
    c = np.array([1, 2, 3, 10, 25])
    u = np.repeat(np.arange(5), c)
    d = make(u, rng.integers(0, 50, len(u)), weight=np.arange(len(u)))
    s = split_ratio(d, valid_frac=0.1, test_frac=0.2, seed=1)
    per = {k: np.bincount(p.user, minlength=5).tolist() for k, p in s.parts().items()}
    assert per["test"] == [0, 1, 1, 2, 5]  # >= 1 for c >= 2; round(0.2 c) otherwise
    assert per["valid"] == [0, 0, 0, 1, 3]  # round(0.1 * 25) = 3 (half up)
    assert per["train"] == [1, 1, 2, 7, 17]
    assert (fold_of(s, len(d)) >= 0).all()
    again = split_ratio(d, valid_frac=0.1, test_frac=0.2, seed=1)
    other = split_ratio(d, valid_frac=0.1, test_frac=0.2, seed=2)
    assert (fold_of(again, len(d)) == fold_of(s, len(d))).all()
    assert (fold_of(other, len(d)) != fold_of(s, len(d))).any()
    assert "seed=1" in s.train.log[-1]


def test_kfold_tests_every_interaction_once():
    rng = np.random.default_rng(0)
    c = np.array([1, 2, 3, 7, 12])
    u = np.repeat(np.arange(5), c)
    d = make(u, rng.permutation(60)[: len(u)], weight=np.arange(len(u), dtype=float))
    folds = split_kfold(d, k=3, seed=4)
    assert len(folds) == 3
    tested = np.concatenate([f.test.weight for f in folds])  # weight = the row id
    assert sorted(tested.tolist()) == list(range(1, len(u)))  # all but the 1-interaction user's row
    for f in folds:
        assert len(f.train) + len(f.test) == len(d) and f.valid is None
        assert set(f.train.user.tolist()) == set(range(5))  # everyone keeps a train interaction
        per = np.bincount(f.test.user, minlength=5)
        assert per[0] == 0 and per[3] in (2, 3) and per[4] == 4  # ceil/floor of c / k
    again = split_kfold(d, k=3, seed=4)
    assert all((a.test.weight == b.test.weight).all() for a, b in zip(folds, again, strict=True))
    with pytest.raises(ValueError, match="k must be"):
        split_kfold(d, k=1)


def test_predefined_and_dispatch():
    d = make([1, 1, 2, 2], [1, 2, 1, 2], fold=[TRAIN, TEST, TRAIN, VALID])
    s = split(d, "given")
    assert rows(s.train) == [(1, 1), (2, 1)] and rows(s.valid) == [(2, 2)] and rows(s.test) == [(1, 2)]
    assert split_predefined(make([1, 2], [1, 1], fold=[TRAIN, TEST])).valid is None
    with pytest.raises(DataError):
        split_predefined(make([1], [1]))
    with pytest.raises(DataError):
        split_predefined(make([1, 2], [1, 1], fold=[TRAIN, 7]))
    with pytest.raises(ValueError, match="unknown split"):
        split(d, "kfold")
    assert split(make([1, 1], [1, 2], timestamp=[1, 2]), "loo", valid=False).protocol == "loo"


def test_history(loo_data):
    s = split_leave_one_out(loo_data)
    h = s.history("train")
    assert h is not s.train and rows(h) == rows(s.train)
    hv = s.history("train+valid")
    assert rows(hv) == sorted(rows(s.train) + rows(s.valid)) and hv.n_users == loo_data.n_users
    with pytest.raises(ValueError):
        s.history("all")


# ---- sequences -------------------------------------------------------------------------------
def test_sequences_hand_case(loo_data):
    seqs, lengths = build_sequences(loo_data, max_len=3)
    item_idx = {raw: k + 1 for k, raw in enumerate(loo_data.item_vocab.raw.tolist())}  # shift 1
    a = [item_idx[x] for x in (2, 3, 4)]  # a: 1,2,3,4 in time order -> last 3
    assert seqs.tolist() == [a, [0, item_idx[2], item_idx[1]], [0, 0, item_idx[1]],
                             [item_idx[5], item_idx[6], item_idx[7]]]
    assert lengths.tolist() == [3, 2, 1, 3]
    indptr, items = user_sequences(loo_data)
    assert indptr.tolist() == [0, 4, 6, 7, 10]
    with pytest.raises(ValueError):
        build_sequences(loo_data, 3, pad=2)


@pytest.mark.parametrize("ts_kind", ["int", "float", "huge"])
@pytest.mark.parametrize("seed", range(3))
def test_sequences_match_reference(seed, ts_kind):
    d = random_data(seed, n=300, ts_kind=ts_kind)
    max_len, pad, shift = 7, -1, 3
    seqs, lengths = build_sequences(d, max_len, pad=pad, shift=shift)
    for u in range(d.n_users):
        r = np.flatnonzero(d.user == u)
        ev = sorted(zip(d.timestamp[r].tolist(), r.tolist(), d.item[r].tolist(), strict=True))
        tail = [it + shift for _, _, it in ev][-max_len:]
        assert seqs[u].tolist() == [pad] * (max_len - len(tail)) + tail
        assert lengths[u] == len(tail)


# ---- save / load -----------------------------------------------------------------------------
def assert_same(a: Interactions, b: Interactions) -> None:
    assert a.columns().keys() == b.columns().keys()
    for k, v in a.columns().items():
        w = b.columns()[k]
        assert v.dtype == w.dtype and np.array_equal(v, w, equal_nan=True), k
    assert np.array_equal(a.user_vocab.raw, b.user_vocab.raw) and a.user_vocab.name == b.user_vocab.name
    assert np.array_equal(a.item_vocab.raw, b.item_vocab.raw)
    assert a.log == b.log and a.name == b.name and a.fmt == b.fmt


def assert_same_features(a: FeatureTable | None, b: FeatureTable | None) -> None:
    assert (a is None) == (b is None)
    if a is None:
        return
    assert a.n == b.n and a.names() == b.names()
    for k in a.categorical:
        for x, y in zip(a.categorical[k], b.categorical[k], strict=True):
            assert x.tolist() == y.tolist()
    for k in a.multihot:
        for x, y in zip(a.multihot[k], b.multihot[k], strict=True):
            assert x.tolist() == y.tolist()
    for k in a.numeric:
        assert a.numeric[k].dtype == b.numeric[k].dtype
        assert np.array_equal(a.numeric[k], b.numeric[k], equal_nan=True)
    for k in a.text:
        assert a.text[k].tolist() == b.text[k].tolist()


def test_save_load_roundtrip(tmp_path, loo_data):
    d = make(["u10", "u2", "u2", "u3", "u3", "u3", "zz"], [7, 3, 7, 3, 5, 7, 9],
             timestamp=[1, 2, 3, 4, 5, 6, 7], rating=[1.5, 2, 3, 4, 5, np.nan, 1], weight=np.ones(7))
    d = to_implicit(d, None)
    d.item_features = FeatureTable(
        n=d.n_items,
        categorical={"genre": (np.array([0, 1, -1, 0]), np.array(["x", "y"], dtype=object))},
        multihot={"tags": (np.array([0, 2, 2, 3, 5]), np.array([0, 1, 1, 0, 2]), np.array([10, 20, 30]))},
        numeric={"price": np.array([1.0, np.nan, 3.0, 4.0], np.float32)},
        text={"title": np.array(["a", "b", "", "d"], dtype=object)},
    )
    for s in (split_leave_one_out(d), split_leave_one_out(d, valid=False),
              split_temporal(d, 0.2, 0.2), split_leave_one_out(loo_data)):
        out = tmp_path / s.protocol / str(s.valid is None) / str(len(s.test))
        save_split(s, out)
        t = load_split(out)
        assert t.protocol == s.protocol and t.info == s.info
        assert (t.valid is None) == (s.valid is None)
        for name, p in s.parts().items():
            assert_same(p, t.parts()[name])
            assert_same_features(p.item_features, t.parts()[name].item_features)
            assert_same_features(p.user_features, t.parts()[name].user_features)
    assert (tmp_path / "loo" / "False" / "3" / "valid.parquet").exists()
    with pytest.raises(DataError):
        load_split(tmp_path)


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 10**6))
def test_pipeline_roundtrip_random(tmp_path, seed):
    d = kcore(deduplicate(random_data(seed)), 2, 2)
    s = split_ratio(d, 0.1, 0.2, seed=seed)
    out = tmp_path / str(seed)
    t = load_split(save_split(s, out))
    for name, p in s.parts().items():
        assert_same(p, t.parts()[name])
        assert p.n_users == d.n_users


def test_load_split_sparse_int_ids_and_unknown_ids(tmp_path):
    import polars as pl

    # ids spread over a huge range take the hash-join path instead of the lookup table
    d = make([10**15, 3, 3, -(10**14)], [1, 2, 1, 2], timestamp=[1, 2, 3, 4])
    s = split_leave_one_out(d, valid=False)
    t = load_split(save_split(s, tmp_path / "s"))
    for name, p in s.parts().items():
        assert_same(p, t.parts()[name])
    bad = pl.read_parquet(tmp_path / "s" / "test.parquet").with_columns(pl.lit(7).alias("item_id"))
    bad.write_parquet(tmp_path / "s" / "test.parquet")
    with pytest.raises(DataError, match="item ids not in"):
        load_split(tmp_path / "s")
