"""Ranking models: hand-computed layers and optimisers, learning planted interactions, the
trainer glue (two optimisers, resume), persistence and train/serve equality of scores, CLI."""

from __future__ import annotations

import itertools
import json

import numpy as np
import polars as pl
import pytest
import torch
from conftest import make_rating_log  # tests/ is on sys.path under pytest
from typer.testing import CliRunner

from recstack.cli import app
from recstack.data.synthetic_ctr import SyntheticCTR, SyntheticCTRConfig
from recstack.features import BagLayout, Categorical, Layout, Numeric
from recstack.models.ctr import FTRL, CTRModel, FusedEmbedding, MultiOptimizer, RowWiseAdagrad
from recstack.models.ctr.models.dcn import CrossNetV1
from recstack.models.ctr.models.dcnv2 import CrossNetV2
from recstack.models.ctr.models.dlrm import dot_interaction
from recstack.models.ctr.models.fm import fm_interaction
from recstack.models.ctr.optim import coalesce_rows
from recstack.models.ctr.tasks import interactions_ctr_task
from recstack.models.registry import create_model, model_names

ALL = ["lr", "fm", "wide_deep", "deepfm", "dcn", "dcnv2", "xdeepfm", "autoint", "dlrm", "mmoe",
       "din", "youtube_rank"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ---- layers, by hand ------------------------------------------------------------------------------
def test_fm_and_dot_interactions_equal_explicit_pairs():
    e = torch.randn(3, 4, 5, dtype=torch.float64)
    pairs = sum((e[:, i] * e[:, j]).sum(1) for i, j in itertools.combinations(range(4), 2))
    torch.testing.assert_close(fm_interaction(e), pairs)
    li, lj = torch.tril_indices(4, 4, offset=-1)
    z = dot_interaction(e, li, lj)
    assert z.shape == (3, 6)
    expected = torch.stack([(e[:, i] * e[:, j]).sum(1) for i, j in zip(li.tolist(), lj.tolist(), strict=True)], 1)
    torch.testing.assert_close(z, expected)


def test_cross_layers_by_hand():
    x0 = torch.tensor([[1.0, 2.0]])
    v1 = CrossNetV1(2, 1)
    with torch.no_grad():
        v1.w.copy_(torch.tensor([[0.5, -1.0]]))
        v1.b.copy_(torch.tensor([[0.1, 0.2]]))
    # x1 = x0 * (x0 . w) + b + x0 = [1, 2] * (-1.5) + [0.1, 0.2] + [1, 2]
    torch.testing.assert_close(v1(x0), torch.tensor([[-0.4, -0.8]]))
    v2 = CrossNetV2(2, 1)
    with torch.no_grad():
        v2.maps[0].weight.copy_(torch.tensor([[1.0, 0.0], [1.0, 1.0]]))
        v2.maps[0].bias.copy_(torch.tensor([0.5, -1.0]))
    # W x0 + b = [1.5, 2.0]; x1 = x0 * [1.5, 2.0] + x0 = [2.5, 6.0]
    torch.testing.assert_close(v2(x0), torch.tensor([[2.5, 6.0]]))


def test_fused_embedding_offsets_missing_rows_and_masked_bags():
    t = FusedEmbedding([3, 4], dim=2, init_std=1.0)
    w = t.weight.detach()
    assert torch.equal(w[0], torch.zeros(2)) and torch.equal(w[3], torch.zeros(2))  # code 0 of each field
    codes = torch.tensor([[2, 1], [0, 3]])
    out = t(codes)
    assert torch.equal(out[0, 0], w[2]) and torch.equal(out[0, 1], w[3 + 1]) and torch.equal(out[1, 1], w[6])
    bag = t.bag(torch.tensor([[1, 3, 0, 0], [0, 0, 0, 0]]), f=1)
    torch.testing.assert_close(bag[0], (w[4] + w[6]) / 2)  # padding ignored, mean of 2
    assert torch.equal(bag[1], torch.zeros(2))


# ---- optimisers, by hand --------------------------------------------------------------------------
def test_rowwise_adagrad_sparse_duplicates_equal_dense_and_by_hand():
    idx = torch.tensor([[2, 0, 2, 4]])
    vals = torch.tensor([[1.0, 1.0], [3.0, 4.0], [2.0, 3.0], [0.0, 0.0]])
    g = torch.sparse_coo_tensor(idx, vals, (5, 2))
    rows, summed = coalesce_rows(g)
    assert rows[:3].tolist() == [0, 2, 4] and summed[:3].tolist() == [[3, 4], [3, 4], [0, 0]]
    assert summed[3:].abs().sum() == 0  # fixed-size tail: zeros, no host sync needed
    a = torch.nn.Parameter(torch.ones(5, 2))
    b = torch.nn.Parameter(torch.ones(5, 2))
    a.grad, b.grad = g, g.to_dense()
    RowWiseAdagrad([a], lr=0.1).step()
    RowWiseAdagrad([b], lr=0.1).step()
    torch.testing.assert_close(a.detach(), b.detach())
    # row 0: g = [3, 4], accumulator = mean(g^2) = 12.5, step = 0.1 * g / sqrt(12.5)
    torch.testing.assert_close(a[0].detach(), 1 - 0.1 * torch.tensor([3.0, 4.0]) / 12.5 ** 0.5)
    assert torch.equal(a[1].detach(), torch.ones(2))  # untouched row


def test_ftrl_by_hand_and_l1_sparsity():
    w = torch.nn.Parameter(torch.zeros(2))
    opt = FTRL([w], lr=0.1, beta=1.0, l1=0.0)
    w.grad = torch.tensor([1.0, 0.0])
    opt.step()
    # n = 1, sigma = (1 - 0) / 0.1 = 10, z = 1 - 10 * 0 = 1, w = -z / ((1 + 1) / 0.1) = -0.05
    torch.testing.assert_close(w.detach(), torch.tensor([-0.05, 0.0]))
    v = torch.nn.Parameter(torch.zeros(2))
    opt = FTRL([v], lr=0.1, l1=2.0)
    v.grad = torch.tensor([1.0, 3.0])
    opt.step()  # |z| = 1 <= l1 -> exactly 0; z = 3 -> -(3 - 2) / ((1 + 3) / 0.1)
    torch.testing.assert_close(v.detach(), torch.tensor([0.0, -1.0 / 40.0]))


def test_multi_optimizer_state_and_scheduler():
    p, q = torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(2, 2))
    opt = MultiOptimizer([torch.optim.Adam([p], lr=0.01), RowWiseAdagrad([q], lr=0.5)])
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="max", factor=0.5, patience=0)
    p.grad, q.grad = torch.ones(3), torch.ones(2, 2)
    opt.step()
    sched.step(1.0)
    sched.step(0.5)  # worse -> every child's lr halves
    assert [g["lr"] for g in opt.optimizers[0].param_groups + opt.optimizers[1].param_groups] == [0.005, 0.25]
    state = opt.state_dict()
    other = MultiOptimizer([torch.optim.Adam([p], lr=1.0), RowWiseAdagrad([q], lr=1.0)])
    other.load_state_dict(state)
    assert other.optimizers[1].param_groups[0]["lr"] == 0.25
    assert torch.equal(other.optimizers[1].state[q]["sum"], torch.ones(2))


# ---- learning ---------------------------------------------------------------------------------------
def synthetic_frames(n=6000, seed=0):
    """Few categories, strong planted pairwise interactions, weak first-order effects."""
    cfg = SyntheticCTRConfig(cardinalities=(12,) * 6, n_dense=3, n_pairs=4, first_order_std=0.2,
                             pair_strength=1.5, base_rate=0.4, seed=seed)
    df = SyntheticCTR(cfg).frame(n).with_columns(like=pl.col("label"), weight=pl.lit(2.0),
                                                 history=pl.concat_list(["C1", "C2"]))
    feats = [*(Numeric(f"I{i}", transforms=("log", "standardize")) for i in (1, 2, 3)),
             *(Categorical(f"C{i}") for i in range(1, 7))]
    return df[: n * 7 // 10], df[n * 7 // 10: n * 8 // 10], df[n * 8 // 10:], feats


def test_models_learn_planted_pairs_and_second_order_beats_lr():
    train, valid, test, feats = synthetic_frames()
    from recstack.features import IdSequence

    feats = [*feats, IdSequence("history", vocab_of="C1", max_len=2)]
    res = {}
    for name in ALL:
        kw = dict(lr=0.01 if name in ("lr", "fm") else 3e-3)
        if name == "xdeepfm":
            kw["cin_layers"] = (16, 16)
        if name == "mmoe":
            kw["tasks"] = ("label", "like")
        r = create_model(name, device="cpu", progress=False, epochs=6, batch_size=256, dim=8,
                         patience=2, **kw)
        res[name] = r.fit(train, valid, features=feats).evaluate(test)["auc"]
    assert all(v > 0.6 for v in res.values()), res
    # the label depends on products of categories: models with pairwise terms must beat LR
    assert res["fm"] > res["lr"] + 0.03, res
    assert max(res["deepfm"], res["dlrm"], res["dcnv2"]) > res["lr"] + 0.03, res


def test_wide_deep_uses_ftrl_and_adam_and_resumes_exactly(tmp_path):
    train, valid, _, feats = synthetic_frames(n=1500)

    def make(epochs, ckpt=None):
        return create_model("wide_deep", device="cpu", progress=False, epochs=epochs,
                            batch_size=128, patience=0, dim=4, hidden=(16,), checkpoint_dir=ckpt)

    full = make(4).fit(train, valid, features=feats)
    opt = full.module_.make_optimizer(full.train_config)
    assert [type(o).__name__ for o in opt.optimizers] == ["FTRL", "Adam"]
    make(2, str(tmp_path / "ck")).fit(train, valid, features=feats)
    resumed = make(4, str(tmp_path / "ck")).fit(train, valid, features=feats)
    assert [h["loss"] for h in resumed.train_result_.history] == [h["loss"] for h in full.train_result_.history]
    for (k, a), b in zip(full.module_.state_dict().items(), resumed.module_.state_dict().values(), strict=True):
        assert torch.equal(a, b), k


def test_sparse_tables_train_with_rowwise_adagrad():
    train, valid, test, feats = synthetic_frames(n=3000)
    r = create_model("dlrm", device="cpu", progress=False, epochs=3, batch_size=256, dim=8,
                     sparse=True, embedding_lr=0.1)
    r.fit(train, valid, features=feats)
    opt = r.module_.make_optimizer(r.train_config)
    assert isinstance(opt.optimizers[0], RowWiseAdagrad)
    batch = {k: v[:64] for k, v in r.examples(train).items()}
    r.module_.zero_grad()
    r.module_.loss(r.module_(batch), batch).backward()
    assert r.module_.embed.table.weight.grad.is_sparse
    assert r.evaluate(test)["auc"] > 0.6


def test_partial_fit_streams_chunks():
    train, _, test, feats = synthetic_frames(n=3000)
    from recstack.features.pipeline import FeaturePipeline

    r = create_model("deepfm", device="cpu", batch_size=256, dim=8, lr=3e-3)
    pipe = FeaturePipeline(feats).fit(train[:500])
    with pytest.raises(ValueError, match="fitted FeaturePipeline"):
        r.partial_fit(train[:100])
    for _ in range(3):
        for k in range(0, train.height, 700):
            r.partial_fit(train[k:k + 700], pipe)
    assert r.stream_rows_ == 3 * train.height
    assert r.evaluate(test)["auc"] > 0.6


# ---- model-specific behaviour ----------------------------------------------------------------------
def test_din_attention_depends_on_candidate_and_ignores_padding():
    lay = Layout(cat_names=["item"], cat_sizes=[10], bags=[BagLayout("hist", 0, 4, "item", True)])
    from recstack.models.ctr.models.din import DINConfig, DINNet

    m = DINNet(lay, DINConfig(dim=4, init_std=0.5, activation="prelu")).eval()
    hist = torch.tensor([[0, 0, 3, 4]])
    b1 = {"cat": torch.tensor([[5]]), "bag.hist": hist, "num": torch.zeros(1, 0), "emb": torch.zeros(1, 0)}
    b2 = {**b1, "cat": torch.tensor([[6]])}
    v1, v2 = m.interest(b1), m.interest(b2)
    assert not torch.allclose(v1, v2)  # the same history read differently for another candidate
    b3 = {**b1, "bag.hist": torch.tensor([[0, 0, 0, 0]])}
    assert torch.equal(m.interest(b3), torch.zeros(1, 4))
    w = m.embed.table.weight.detach()
    with torch.no_grad():  # changing the padding row's vector changes nothing
        m.embed.table.weight[0] = 7.0
        torch.testing.assert_close(m.interest(b1), v1)
        m.embed.table.weight.copy_(w)


def test_din_activation_unit_matches_the_papers_concatenation():
    """The split first layer equals MLP([h, t, h - t, h * t]) computed literally, per row and
    with one history shared (expanded) across a request's candidates."""
    from recstack.models.ctr.models.din import DINConfig, DINNet

    lay = Layout(cat_names=["item"], cat_sizes=[20], bags=[BagLayout("hist", 0, 5, "item", True)])
    torch.manual_seed(0)
    m = DINNet(lay, DINConfig(dim=6, init_std=0.5, activation="dice")).eval()

    def literal(codes: torch.Tensor, cand: torch.Tensor) -> torch.Tensor:
        h = m.embed.table.field(codes, 0)
        t = m.embed.table.field(cand, 0).unsqueeze(1).expand_as(h)
        a = m.attention[0](torch.cat([h, t, h - t, h * t], -1)).squeeze(-1) * (codes > 0)
        return (a.unsqueeze(-1) * h).sum(1)

    cand = torch.tensor([[3], [7], [11]])
    per_row = torch.tensor([[0, 1, 2, 3, 4], [0, 0, 9, 8, 7], [5, 6, 7, 8, 9]])
    shared = torch.tensor([[0, 2, 4, 6, 8]]).expand(3, -1)
    assert shared.stride(0) == 0
    with torch.no_grad():
        for codes in (per_row, shared):
            b = {"cat": cand, "bag.hist": codes, "num": torch.zeros(3, 0), "emb": torch.zeros(3, 0)}
            torch.testing.assert_close(m.interest(b), literal(codes, cand[:, 0]), rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(m.interest(b), literal(codes.contiguous(), cand[:, 0]), rtol=1e-5, atol=1e-6)


def test_youtube_weighted_logistic_loss_by_hand():
    from recstack.models.ctr.models.youtube_rank import YouTubeRankConfig, YouTubeRankNet

    lay = Layout(cat_names=["a"], cat_sizes=[3])
    m = YouTubeRankNet(lay, YouTubeRankConfig())
    z = torch.tensor([0.0, 1.0])
    batch = {"label": torch.tensor([1.0, 0.0]), "weight": torch.tensor([5.0, 9.0])}
    # positive weighted 5, negative weighted 1 (its weight column is ignored)
    expected = (5 * np.log(2) + np.log(1 + np.e)) / 2
    assert m.loss(z, batch).item() == pytest.approx(expected, rel=1e-6)
    assert YouTubeRankNet.expected_weight(torch.tensor([np.log(3.0)])).item() == pytest.approx(3.0)


# ---- persistence, serving ----------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["din", "wide_deep", "mmoe"])
def test_save_load_and_score_candidates_equal_offline_scores(tmp_path, name):
    task = interactions_ctr_task(make_rating_log(), history_len=5)
    r = create_model(name, device="cpu", progress=False, epochs=2, batch_size=64, dim=4)
    r.fit(task)
    test = task.test
    offline = r.predict_proba(test)
    r.save(tmp_path / "m")
    files = {p.name for p in (tmp_path / "m").rglob("*") if p.is_file()}
    assert not any(f.endswith((".pkl", ".pt", ".pickle")) for f in files)
    loaded = CTRModel.load(tmp_path / "m", device="cpu")
    np.testing.assert_array_equal(loaded.predict_proba(test), offline)
    for i in range(0, test.height, 9):
        row = test.row(i, named=True)
        for model in (r, loaded):
            state = {k: row[k] for k in ("liked", "user_prev_count", "user_prev_rate")}
            served = model.score_candidates(row["user_id"], [row["item_id"], row["item_id"]],
                                            history=row["history"], context=state)
            np.testing.assert_allclose(served, offline[i], rtol=1e-6)
    # by index: the store's row order is the data set's index order
    users = task.store.users["user_id"].to_list()
    items = task.store.items["item_id"].to_list()
    np.testing.assert_array_equal(loaded.score_candidates(3, [0, 5], by_index=True),
                                  loaded.score_candidates(users[3], [items[0], items[5]]))


def test_registry_and_bad_params():
    assert set(model_names("ctr")) == set(ALL)
    with pytest.raises(ValueError, match="unknown hyper-parameter"):
        create_model("deepfm", nope=1)
    with pytest.raises(ValueError, match="unknown model 'deepfmx'"):
        create_model("deepfmx")
    r = create_model("deep-fm", lr="3e-4", hidden=[8], epochs="3")  # as `--set` gives them
    assert r.train_config.lr == 3e-4 and r.train_config.epochs == 3 and r.config.hidden == (8,)
    with pytest.raises(ValueError, match="expected a number"):
        create_model("deepfm", lr="fast")
    with pytest.raises(ValueError, match="dropout"):
        create_model("deepfm", dropout=1.5)


def test_cli_trains_a_ranker_and_prints_auc_logloss(tmp_path):
    rng = np.random.default_rng(0)
    n = 1500
    u, i = rng.integers(0, 40, n), rng.integers(0, 30, n)
    rating = np.where((u % 2) == (i % 2), 5.0, 2.0) + rng.integers(-1, 2, n)  # planted taste
    pl.DataFrame({"user": u, "item": i, "rating": rating, "timestamp": rng.integers(0, 10000, n)}
                 ).write_csv(tmp_path / "log.csv")
    res = CliRunner().invoke(app, ["train", "--model", "deepfm", "--data", f"csv:{tmp_path / 'log.csv'}",
                                   "--device", "cpu", "--set", "epochs=5", "--set", "dim=4",
                                   "--set", "batch_size=64", "--set", "lr=0.01",
                                   "--set", "progress=false", "--out", str(tmp_path / "run")])
    assert res.exit_code == 0, res.output
    r = json.loads(res.stdout.strip().splitlines()[-1])
    assert r["model"] == "deepfm" and {"auc", "logloss", "train_seconds"} <= set(r)
    assert r["auc"] > 0.7 and 0 < r["logloss"] < 0.7
    assert (tmp_path / "run" / "model" / "weights.safetensors").exists()
