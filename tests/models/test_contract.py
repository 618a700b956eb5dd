"""The model contract, checked for every model in the registry.

Every model fits on tiny data on the CPU, is deterministic for a seed, round-trips save / load
with identical scores, excludes seen items when asked, returns exactly k items when k <= the
candidates left, speaks raw ids, round-trips `clone`, and rejects a bad hyper-parameter with a
one-line error that names it.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recstack.data import from_raw
from recstack.models.capabilities import RecommendsTopK, ScoresFeatureRows, capabilities
from recstack.models.registry import create_model, entry, model_class, model_names

NEURAL = {"epochs": 2, "batch_size": 64, "progress": False, "seed": 3}
SEQ = {**NEURAL, "max_len": 8, "dim": 16}
CTR = {"epochs": 1, "batch_size": 64, "dim": 4, "progress": False, "seed": 3}
#: small settings so the whole registry runs in seconds; every other value is the default
FAST: dict[str, dict] = {
    "bspm": {"rank": 8}, "gfcf": {"rank": 8},
    "blend": {"members": [{"model": "ease"}, {"model": "itemknn", "params": {"k": 5}}]},
    "mf": {**NEURAL, "dim": 8, "n_negatives": 8},
    "lightgcn": {**NEURAL, "dim": 8, "n_negatives": 8},
    "neumf": {**NEURAL, "dim": 4, "mlp_layers": (16, 8, 4)},
    "multvae": {**NEURAL, "hidden": 16, "latent": 8},
    "two_tower": {**NEURAL, "dim": 8, "tower": (16,), "id_dim": 8, "n_negatives": 8},
    "youtube_dnn": {**NEURAL, "dim": 8, "tower": (16,), "history_dim": 8, "n_negatives": 8},
    "gru4rec": SEQ, "caser": {**SEQ, "window": 3}, "sasrec": SEQ, "bert4rec": SEQ,
}


def _params(name: str) -> dict:
    return dict(FAST.get(name, CTR if entry(name).task == "ctr" else {}))


@pytest.fixture(scope="module")
def interactions():
    """40 users x 30 items with string ids, in time order; each user likes one of three groups."""
    rng = np.random.default_rng(0)
    users, items, ts = [], [], []
    for u in range(40):
        group = u % 3
        chosen = rng.choice(np.arange(group * 10, group * 10 + 10), size=7, replace=False)
        for t, i in enumerate(chosen):
            users.append(f"u{u:02d}")
            items.append(f"i{i:02d}")
            ts.append(1000 * u + t)
    return from_raw(np.array(users), np.array(items), rating=np.full(len(users), 4.0),
                    timestamp=np.array(ts))


@pytest.fixture(scope="module")
def ctr_task():
    from conftest import make_rating_log

    from recstack.models.ctr import interactions_ctr_task

    return interactions_ctr_task(make_rating_log(), history_len=5)


def _fit(name: str, interactions, ctr_task):
    model = create_model(name, device="cpu", **_params(name))
    return model.fit(ctr_task if entry(name).task == "ctr" else interactions)


def _scores(model, interactions, ctr_task) -> np.ndarray:
    """Something that must be identical across equal models: every user's scores (retrieval,
    sequential) or the test rows' probabilities (CTR)."""
    if isinstance(model, ScoresFeatureRows):
        return model.predict_proba(ctr_task.test)
    return model.score_all(torch.arange(interactions.n_users)).cpu().numpy()


def _users(model, interactions, ctr_task) -> tuple[list, dict]:
    """Three raw user ids and their seen (training) raw items."""
    if entry(model.name).task == "ctr":
        frame = ctr_task.train
        users = sorted(set(frame["user_id"].to_list()))[:3]
        seen = {u: set(frame.filter(frame["user_id"] == u)["item_id"].to_list()) for u in users}
        return users, seen
    raw_u = interactions.user_vocab.decode(interactions.user)
    raw_i = interactions.item_vocab.decode(interactions.item)
    users = ["u00", "u01", "u05"]
    return users, {u: set(raw_i[raw_u == u].tolist()) for u in users}


def test_the_registry_holds_every_model():
    names = model_names()
    assert len(names) >= 28 and len(set(names)) == len(names)
    for name in names:
        cls = model_class(name)
        assert cls.name == name and cls.task == entry(name).task, name
        assert "recommends_top_k" in capabilities(cls), name


@pytest.mark.parametrize("name", model_names())
def test_model_contract(name, interactions, ctr_task, tmp_path):
    model = _fit(name, interactions, ctr_task)
    assert isinstance(model, RecommendsTopK)
    scores = _scores(model, interactions, ctr_task)
    assert np.isfinite(scores).any()

    # deterministic for a seed: an unfitted clone has the same parameters and refits to the same
    twin = model.clone()
    assert twin.get_params() == model.get_params() and twin is not model
    assert not hasattr(twin, "n_items_") and not hasattr(twin, "module_")
    twin.fit(ctr_task if entry(name).task == "ctr" else interactions)
    np.testing.assert_array_equal(_scores(twin, interactions, ctr_task), scores)

    # save / load: JSON + safetensors (+ Parquet), never pickle; identical scores
    model.save(tmp_path / "m")
    assert not [p for p in (tmp_path / "m").rglob("*") if p.suffix in (".pkl", ".pickle", ".pt", ".npy")]
    from recstack.models import load_model

    loaded = load_model(tmp_path / "m", device="cpu")
    assert type(loaded) is type(model) and loaded.get_params() == model.get_params()
    np.testing.assert_array_equal(_scores(loaded, interactions, ctr_task), scores)

    # raw ids in and out; seen items excluded when asked; exactly k items when k <= candidates
    users, seen = _users(model, interactions, ctr_task)
    n_items = len(ctr_task.store.items) if entry(name).task == "ctr" else interactions.n_items
    k = n_items - max(len(s) for s in seen.values())
    for m in (model, loaded):
        items, sc = m.recommend(users, k=k, exclude_seen=True)
        assert items.shape == (3, k) and sc.shape == (3, k)
        for row, u in enumerate(users):
            got = items[row].tolist()
            assert None not in got and len(set(got)) == k, (name, u, got)
            assert not set(got) & seen[u], (name, u)
        all_items, _ = m.recommend(users[:1], k=n_items, exclude_seen=False)
        assert len(set(all_items[0].tolist())) == n_items
    raw = all_items[0].tolist()
    known = set(ctr_task.store.items["item_id"].to_list()) if entry(name).task == "ctr" else \
        set(interactions.item_vocab.raw.tolist())
    assert set(raw) == known  # raw ids out, the catalogue's own
    with pytest.raises(ValueError, match="unknown user id"):
        model.recommend(["no-such-user"], k=3)


@pytest.mark.parametrize("name", model_names())
def test_bad_hyper_parameters_are_rejected_clearly(name):
    with pytest.raises(ValueError, match=f"unknown hyper-parameter of '{name}'.*valid: ") as e:
        create_model(name, no_such_parameter=1)
    assert "\n" not in str(e.value)
    specs = model_class(name).param_specs()
    # a value outside the declared range, or not one of the choices, names the key and the range
    checked = [(k, s) for k, s in specs.items() if s.range is not None or s.choices is not None]
    if not checked:  # pop has no hyper-parameters; blend's are lists of models
        assert name in ("pop", "blend"), name
        return
    key, spec = checked[0]
    bad = "not-a-choice" if spec.choices is not None else -(10 ** 9)
    with pytest.raises(ValueError, match=key) as e:
        create_model(name, **{key: bad})
    assert "default" in str(e.value) and "\n" not in str(e.value)
