"""Distributed training on 2 CPU processes (gloo) gives the 1-process result.

One fixture forks the 2 ranks once and runs every scenario there (forking keeps start-up under
a second); each scenario writes its results to files that the tests compare with runs made in
this process.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch
import torch.distributed as dist
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from recstack.data import from_raw
from recstack.data.transforms import split
from recstack.distributed import (
    RowShardedEmbedding,
    ShardedMF,
    evaluate_ranking_sharded,
    spawn_local,
)
from recstack.evaluation.ranking import evaluate_ranking
from recstack.models import MF
from recstack.models.mf import MFModule
from recstack.training.trainer import TrainConfig, Trainer

N_USERS, N_ITEMS, DIM = 30, 40, 8


# ---- shared problem: identical in every process ---------------------------------------------
def examples() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    n = 203  # batch 16: the last global batch has 11 examples, split 6 / 5
    return {"user": torch.randint(N_USERS, (n,), generator=g),
            "item": torch.randint(N_ITEMS, (n,), generator=g),
            "neg": torch.randint(N_ITEMS, (n,), generator=g)}


def valid_sets() -> tuple[sp.csr_matrix, sp.csr_matrix]:
    rng = np.random.default_rng(2)
    test = sp.random(N_USERS, N_ITEMS, density=0.1, format="csr", random_state=rng)
    excl = sp.random(N_USERS, N_ITEMS, density=0.1, format="csr", random_state=rng)
    return test, (excl - excl.multiply(test > 0)).tocsr()  # no test item is excluded


def module() -> MFModule:
    torch.manual_seed(0)
    return MFModule(N_USERS, N_ITEMS, DIM, init_std=0.1)  # item_bias stays unused by the loss


def bpr(m: MFModule, bias: bool = False):
    def loss(batch: dict[str, torch.Tensor], gen: torch.Generator) -> torch.Tensor:
        p = m.user(batch["user"])
        neg, pos = (p * m.item(batch["neg"])).sum(-1), (p * m.item(batch["item"])).sum(-1)
        if bias:  # then every parameter takes part in every step
            neg, pos = neg + m.item_bias(batch["neg"]).squeeze(-1), pos + m.item_bias(batch["item"]).squeeze(-1)
        return F.softplus(neg - pos).mean()
    return loss


def train(epochs: int, ckpt: str | None = None, find_unused: bool = True,
          bias: bool = False) -> tuple[MFModule, list[dict]]:
    m = module()
    test, excl = valid_sets()

    def validate() -> dict[str, float]:
        score = lambda users: m.user.weight[users] @ m.item.weight.T  # noqa: E731
        return evaluate_ranking_sharded(score, test, excl, ks=(5,), device="cpu").summary()

    cfg = TrainConfig(epochs=epochs, batch_size=16, lr=0.05, patience=0, plateau_factor=1.0,
                      monitor="ndcg@5", progress=False, checkpoint_dir=ckpt, seed=4, ddp_find_unused=find_unused)
    res = Trainer(cfg).fit(m, bpr(m, bias), examples(), validate, torch.device("cpu"))
    return m, res.history


def sharded_steps(table_cls: str) -> tuple[torch.Tensor, list[float]]:
    """3 SparseAdam steps on 11 x 4 rows; rank r takes its half of each 12-id global batch."""
    g = torch.Generator().manual_seed(5)
    full = torch.randn(11, 4, generator=g)
    coef = torch.randn(4, generator=g)
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    if table_cls == "sharded":
        table = RowShardedEmbedding(11, 4)
        table.load_full(full)
    else:
        table = torch.nn.Embedding(11, 4, sparse=True)
        table.weight.data.copy_(full)
    opt = torch.optim.SparseAdam(list(table.parameters()), lr=0.1)
    losses = []
    for _ in range(3):
        ids = torch.randint(11, (12,), generator=g)
        y = torch.randn(12, generator=g)
        part = torch.tensor_split(torch.arange(12), world)[rank]
        loss = (((table(ids[part]) * coef).sum(-1) - y[part]) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    w = table.full_weight() if table_cls == "sharded" else table.weight.detach()
    return w, losses


def sharded_trainer(epochs: int) -> torch.Tensor:
    torch.manual_seed(0)
    m = ShardedMF(N_USERS, N_ITEMS, DIM)
    g = torch.Generator().manual_seed(6)
    ex = {"user": torch.randint(N_USERS, (51,), generator=g), "item": torch.randint(N_ITEMS, (51,), generator=g),
          "neg": torch.randint(N_ITEMS, (51, 2), generator=g)}
    if dist.is_initialized():  # same initial tables as the 1-process run
        torch.manual_seed(0)
        ref = torch.nn.init.normal_(torch.empty(N_USERS, DIM), std=0.1)
        m.user.load_full(ref)
        m.item.load_full(torch.nn.init.normal_(torch.empty(N_ITEMS, DIM), std=0.1))
    cfg = TrainConfig(epochs=epochs, batch_size=16, lr=0.05, progress=False, seed=4)
    Trainer(cfg).fit(m, m.loss, ex, device=torch.device("cpu"),
                     make_optimizer=lambda mod, c: torch.optim.SparseAdam(list(mod.parameters()), lr=c.lr))
    return torch.cat([m.user.full_weight(), m.item.full_weight()])


def planted_split():
    rng = np.random.default_rng(0)
    users = np.repeat(np.arange(40), 6)
    items = (users % 2) * 10 + np.concatenate([rng.choice(10, 6, replace=False) for _ in range(40)])
    return split(from_raw(users, items, timestamp=np.arange(len(users))), "loo")


# ---- what each of the 2 ranks runs ----------------------------------------------------------
def _ranks(out: str) -> None:
    rank, o = dist.get_rank(), Path(out)
    m, hist = train(epochs=2)
    save_file({k: v.contiguous() for k, v in m.state_dict().items()}, str(o / f"ddp{rank}.safetensors"))
    (o / f"hist{rank}.json").write_text(json.dumps([{k: v for k, v in h.items() if k != "seconds"} for h in hist]))
    train(epochs=1, ckpt=str(o / "ckpt"))  # rank 0 writes the checkpoint resumed by a test
    m_static, _ = train(epochs=2, find_unused=False, bias=True)  # all parameters used: no search needed
    save_file({k: v.contiguous() for k, v in m_static.state_dict().items()}, str(o / f"ddpstatic{rank}.safetensors"))

    test, excl = valid_sets()
    w = module().user.weight.detach()
    res = evaluate_ranking_sharded(lambda u: w[u] @ w[: N_ITEMS % N_USERS].T.repeat(1, 4), test, excl,
                                   ks=(3, 10), device="cpu")
    save_file({k: torch.from_numpy(v) for k, v in res.per_user.items()} | {"users": torch.from_numpy(res.users)},
              str(o / f"eval{rank}.safetensors"))

    w, losses = sharded_steps("sharded")
    save_file({"w": w}, str(o / f"shard{rank}.safetensors"))
    save_file({"w": sharded_trainer(epochs=2)}, str(o / f"shardtrain{rank}.safetensors"))

    sp_ = planted_split()
    mf = MF(dim=8, n_negatives=4, epochs=2, batch_size=32, lr=0.05, device="cpu", progress=False,
            monitor="recall@10", patience=0).fit(sp_.train, valid=sp_.valid)
    save_file({k: v.contiguous() for k, v in mf.module_.state_dict().items()}, str(o / f"mf{rank}.safetensors"))
    (o / f"mfhist{rank}.json").write_text(json.dumps([h["valid_recall@10"] for h in mf.train_result_.history]))


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ranks")
    spawn_local(_ranks, 2, args=(str(out),))
    return out


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ---- tests ----------------------------------------------------------------------------------
def test_ddp_training_matches_one_process(two_ranks):
    m, hist = train(epochs=2)
    ref = m.state_dict()
    for rank in (0, 1):
        got = load_file(str(two_ranks / f"ddp{rank}.safetensors"))
        assert set(got) == set(ref)
        for k in ref:
            torch.testing.assert_close(got[k], ref[k], atol=1e-6, rtol=1e-5, msg=k)
        h2 = json.loads((two_ranks / f"hist{rank}.json").read_text())
        for a, b in zip(h2, hist, strict=True):
            assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
            assert a["valid_ndcg@5"] == pytest.approx(b["valid_ndcg@5"], abs=1e-9)
    assert not torch.equal(ref["user.weight"], module().user.weight)  # it did train
    ref_b = train(epochs=2, bias=True)[0].state_dict()
    for rank in (0, 1):  # DDP with ddp_find_unused=False (every parameter used) matches 1 process
        got = load_file(str(two_ranks / f"ddpstatic{rank}.safetensors"))
        for k in ref_b:
            torch.testing.assert_close(got[k], ref_b[k], atol=1e-6, rtol=1e-5, msg=k)
    assert not torch.equal(ref_b["item_bias.weight"], module().item_bias.weight)


def test_two_process_checkpoint_resumes_in_one_process(two_ranks, tmp_path):
    ckpt = tmp_path / "ckpt"
    shutil.copytree(two_ranks / "ckpt", ckpt)
    saved = load_file(str(ckpt / "last" / "state.safetensors"))
    assert not any(".module." in k for k in saved)  # no DDP prefix in the weights
    resumed, hist = train(epochs=2, ckpt=str(ckpt))
    full, full_hist = train(epochs=2)
    assert [h["epoch"] for h in hist] == [1, 2]
    for k, v in full.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[k], v, atol=1e-6, rtol=1e-5, msg=k)
    assert hist[1]["valid_ndcg@5"] == pytest.approx(full_hist[1]["valid_ndcg@5"], abs=1e-9)


def test_sharded_evaluation_is_exact(two_ranks):
    test, excl = valid_sets()
    w = module().user.weight.detach()
    ref = evaluate_ranking(lambda u: w[u] @ w[: N_ITEMS % N_USERS].T.repeat(1, 4), test, excl, ks=(3, 10),
                           device="cpu")
    for rank in (0, 1):
        got = load_file(str(two_ranks / f"eval{rank}.safetensors"))
        np.testing.assert_array_equal(got["users"].numpy(), ref.users)
        for k, v in ref.per_user.items():
            np.testing.assert_array_equal(got[k].numpy(), v)  # bit-identical per user


def test_sharded_table_step_matches_unsharded(two_ranks):
    ref, _ = sharded_steps("dense")
    for rank in (0, 1):
        got = load_file(str(two_ranks / f"shard{rank}.safetensors"))["w"]
        torch.testing.assert_close(got, ref, atol=1e-6, rtol=1e-5)
    assert not torch.allclose(ref, torch.randn(11, 4, generator=torch.Generator().manual_seed(5)))


def test_sharded_mf_through_trainer_matches_one_process(two_ranks):
    ref = sharded_trainer(epochs=2)
    for rank in (0, 1):
        got = load_file(str(two_ranks / f"shardtrain{rank}.safetensors"))["w"]
        torch.testing.assert_close(got, ref, atol=1e-6, rtol=1e-5)


def test_mf_model_keeps_ranks_in_sync(two_ranks):
    a = load_file(str(two_ranks / "mf0.safetensors"))
    b = load_file(str(two_ranks / "mf1.safetensors"))
    for k in a:  # each rank saw other examples and negatives, yet DDP kept the weights equal
        torch.testing.assert_close(a[k], b[k], atol=0, rtol=0, msg=k)
    ha = json.loads((two_ranks / "mfhist0.json").read_text())
    assert ha == json.loads((two_ranks / "mfhist1.json").read_text()) and all(0 <= x <= 1 for x in ha)


def test_single_process_table_is_a_plain_embedding():
    t = RowShardedEmbedding(7, 3)
    ids = torch.tensor([[1, 5], [5, 0]])
    torch.testing.assert_close(t(ids), t.weight[ids])
    t(ids).sum().backward()
    assert t.weight.grad.is_sparse and torch.equal(t.weight.grad.to_dense()[5], torch.full((3,), 2.0))
    assert (t.start, t.stop) == (0, 7)


# ---- out-of-core preparation ----------------------------------------------------------------
def _part_keys(part) -> list[tuple]:
    u, i = part.user_vocab.raw[part.user], part.item_vocab.raw[part.item]
    t = part.timestamp if part.timestamp is not None else np.zeros(len(part), np.int64)
    return sorted(zip(u.tolist(), i.tolist(), t.tolist(), strict=True))


@pytest.mark.parametrize("kcore_k, with_time", [(3, True), (0, False)])
def test_streaming_prepare_matches_in_memory_pipeline(tmp_path, kcore_k, with_time):
    import polars as pl

    from recstack.data.readers import load
    from recstack.data.streaming import prepare_streaming
    from recstack.data.transforms import kcore, load_split, split_leave_one_out

    rng = np.random.default_rng(7)
    n = 3000
    users = rng.zipf(1.6, n) % 400  # a long tail: several k-core rounds, users with 1-2 rows
    cols = {"user": [f"u{x}" for x in users], "item": (rng.zipf(1.4, n) % 300 + 10).tolist()}
    if with_time:
        cols["timestamp"] = rng.integers(0, 30, n).tolist()  # many ties: the row order decides
    pl.DataFrame(cols).write_csv(tmp_path / "x.csv")
    summary = prepare_streaming(tmp_path / "x.csv", tmp_path / "out", kcore=kcore_k,
                                time_col="timestamp" if with_time else None)
    data = load(f"csv:{tmp_path / 'x.csv'}")
    if kcore_k:
        data = kcore(data, kcore_k, kcore_k)
        assert summary["kcore_rounds"] >= 2
    ref = split_leave_one_out(data, by="timestamp" if with_time else "order")
    got = load_split(tmp_path / "out")
    np.testing.assert_array_equal(got.train.user_vocab.raw, ref.train.user_vocab.raw)
    np.testing.assert_array_equal(got.train.item_vocab.raw, ref.train.item_vocab.raw)
    for p in ("train", "valid", "test"):
        assert _part_keys(getattr(got, p)) == _part_keys(getattr(ref, p)), p
    assert got.info["users_train_only"] == ref.info["users_train_only"]
    assert kcore_k or (ref.info["users_train_only"] > 0 and ref.info["users_without_valid"] > 0)
    written = pl.read_parquet(tmp_path / "out" / "test.parquet")  # indices agree with the vocab
    assert (got.train.user_vocab.raw[written["user"].to_numpy()] == written["user_id"].to_numpy()).all()
