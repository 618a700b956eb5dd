"""Sequential recommenders: sequences, leakage-free histories, losses, sessions, persistence, CLI.

The learning tests use "chains": every user walks the catalogue item by item (i -> i + 1 mod n)
from a random start, so the next item is a function of the last one and any working sequence
model predicts it almost perfectly after a few epochs, while a popularity model cannot.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from recstack.cli import app
from recstack.data import from_raw
from recstack.data.dataset import FeatureTable
from recstack.data.transforms import build_sequences, split
from recstack.models import BERT4Rec, Caser, GRU4Rec, Recommender, SASRec, get_model_class
from recstack.models.sequential.base import pad_left, sequence_windows
from recstack.models.sequential.bsarec import BSARec, FrequencyFilter
from recstack.workflow.experiment import evaluate, fit_model, standard_protocol

N_ITEMS = 20
SMALL = dict(device="cpu", dim=32, dropout=0.1, max_len=12, lr=5e-3, batch_size=64,
             progress=False, patience=0)
ALL = (GRU4Rec, Caser, SASRec, BERT4Rec, BSARec)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def chains(n_users: int = 120, seed: int = 0, raw_prefix: str | None = None):
    """Per user a walk start, start+1, ... (mod N_ITEMS) of 7..14 items; rows shuffled so that
    only the timestamps give the order."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        start, length = rng.integers(N_ITEMS), rng.integers(7, 15)
        rows += [(u, (start + t) % N_ITEMS, t) for t in range(length)]
    rows = [rows[i] for i in rng.permutation(len(rows))]
    u, i, t = (np.array(c) for c in zip(*rows, strict=True))
    if raw_prefix is not None:
        i = np.array([f"{raw_prefix}{x}" for x in i], dtype=object)
    return from_raw(u, i, timestamp=t)


@pytest.fixture(scope="module")
def chain_split():
    data = chains()
    return data, split(data, "loo")


def walk(start: int, length: int) -> list[int]:
    return [(start + t) % N_ITEMS for t in range(length)]


# ---- sequences ------------------------------------------------------------------------------
def test_windows_cover_every_target_once_left_padded():
    # user 0: items 0..6 (rows reversed), user 1: one item, user 2: items 7, 8
    u = np.array([0] * 7 + [1, 2, 2])
    i = np.array([6, 5, 4, 3, 2, 1, 0, 9, 7, 8])
    t = np.array([6, 5, 4, 3, 2, 1, 0, 0, 0, 1])
    data = from_raw(u, i, timestamp=t)  # raw ids 0..9 are all present: index == raw id
    w, users = sequence_windows(data, width=3, step=2)
    # from the end backwards, overlapping by one item, stored as item + 1 with 0 = padding;
    # the single-item user has no window
    assert users.tolist() == [0, 0, 0, 2]
    assert w.tolist() == [[5, 6, 7], [3, 4, 5], [1, 2, 3], [0, 8, 9]]
    # next-item targets (columns 1..) of all windows of user 0 = items 1..6, each exactly once
    inputs, targets = w[:3, :-1], w[:3, 1:]
    got = np.sort(targets[(targets > 0) & (inputs > 0)] - 1)
    assert got.tolist() == [1, 2, 3, 4, 5, 6]
    latest, lu = sequence_windows(data, width=3, step=2, all_windows=False)
    assert lu.tolist() == [0, 2] and latest.tolist() == [w[0].tolist(), w[3].tolist()]
    assert pad_left(np.array([4, 5, 6, 7]), np.array([3, 1, 0]), 2).tolist() == [[6, 7], [0, 8], [0, 0]]


def test_histories_hold_train_then_train_plus_valid_never_test(chain_split):
    data, sp = chain_split
    model = SASRec(epochs=1, **SMALL)
    fit_model(model, sp, exclude_seen=False)
    train_seq, _ = build_sequences(sp.train, model.max_len)
    known_seq, _ = build_sequences(sp.history("train+valid"), model.max_len)
    assert torch.equal(model.history_.cpu(), torch.as_tensor(known_seq))
    valid, test = sp.valid.csr().tolil().rows, sp.test.csr().tolil().rows
    hist = model.history_.cpu().numpy()
    for u in range(data.n_users):
        if valid[u]:  # the valid item is the last input of the test query ...
            assert hist[u, -1] - 1 == valid[u][0]
        assert train_seq[u, -1] - 1 not in valid[u] + test[u]
    # ... and training windows only ever hold training items
    ex = model._examples(sp.train)
    seen = sp.train.csr()
    users = ex["user"].numpy().repeat(ex["seq"].shape[1])
    items = ex["seq"].numpy().ravel()
    assert np.all(seen[users[items > 0], items[items > 0] - 1] == 1)


# ---- training objectives ----------------------------------------------------------------------
def test_full_cross_entropy_is_computed_at_target_positions_only(chain_split):
    _, sp = chain_split
    model = SASRec(epochs=0, **SMALL).fit(sp.train)
    model.module_.eval()  # no dropout: the loss is a deterministic function of the weights
    ex = model._examples(sp.train)
    batch = {k: v[:16] for k, v in ex.items()}
    inputs, targets = batch["seq"][:, :-1], batch["seq"][:, 1:]
    logits = model.module_(inputs, batch["user"]) @ model.module_.item_emb.items().T
    keep = (targets > 0) & (inputs > 0)
    expected = F.cross_entropy(logits[keep], targets[keep] - 1)
    assert keep.sum() < keep.numel()  # the batch does have padding
    got = model._loss(batch, torch.Generator())
    torch.testing.assert_close(got, expected)


def test_bert4rec_masks_real_items_only_and_predicts_them():
    data = chains(20)
    model = BERT4Rec(epochs=0, mask_prob=0.5, last_item_prob=0.0, **SMALL).fit(data)
    ex = model._examples(data)
    gen = torch.Generator().manual_seed(0)
    inputs, targets = model._inputs_targets(ex, gen)
    seq, mask = ex["seq"], model.mask_token
    assert mask == data.n_items + 1
    masked = inputs == mask
    assert torch.equal(masked, targets > 0)  # a target exactly where [mask] was put
    assert torch.equal(targets[masked], seq[masked])  # ... and it is the hidden item
    assert not (masked & (seq == 0)).any()  # padding is never masked
    assert masked.any(1).all()  # every window predicts something
    assert torch.equal(inputs[~masked], seq[~masked])
    assert 0.35 < masked.sum() / (seq > 0).sum() < 0.65
    model.last_item_prob = 1.0
    inputs, targets = model._inputs_targets(ex, gen)
    assert (targets[:, :-1] == 0).all() and (inputs[:, -1] == mask).all()
    # inference: the history's last max_len - 1 items, then [mask]
    row = torch.arange(1, model.max_len + 1).unsqueeze(0)
    assert model._inference_input(row).tolist() == [[*range(2, model.max_len + 1), mask]]


@pytest.mark.parametrize("loss,sampler", [("sampled", "uniform"), ("sampled", "in_batch"),
                                          ("sampled", "popularity"), ("bce", "uniform")])
def test_sasrec_learns_with_every_loss(chain_split, loss, sampler):
    _, sp = chain_split
    model = SASRec(epochs=8, n_blocks=2, loss=loss, sampler=sampler, n_negatives=8, **SMALL)
    model.fit(sp.train, valid=sp.valid)
    first = model.train_result_.history[0]["valid_ndcg@10"]
    assert model.train_result_.best_metrics["ndcg@10"] > max(0.7, first)


# ---- every model: learns, serves anonymous sessions -----------------------------------------
@pytest.mark.parametrize("cls", ALL)
def test_model_learns_chains_and_serves_anonymous_sessions(chain_split, cls):
    data, sp = chain_split
    model = cls(epochs=30 if cls is BERT4Rec else 12, **SMALL)  # a Cloze task learns slower
    fit_model(model, sp, exclude_seen=False)
    proto = standard_protocol(data)
    assert evaluate(model, sp, proto, progress=False).summary()["hr@5"] > 0.8
    sessions = [walk(3, 8), walk(13, 8), []]
    items, scores = model.recommend_sequence_indices(sessions, k=N_ITEMS)
    # the next item depends on the session: 3..10 -> 11, 13..20 -> 1 (mod 20)
    assert items[0, 0] == 11 and items[1, 0] == 1
    # every item ranked exactly once: never the padding or mask rows, finite scores
    assert sorted(items[2].tolist()) == list(range(N_ITEMS)) and np.isfinite(scores).all()
    top, _ = model.recommend_sequence_indices(walk(3, 8), k=N_ITEMS - 8, exclude_seen=True)
    assert not set(top[0].tolist()) & set(walk(3, 8))
    # a known user: the item after the stored (train + valid) history; seen ones excluded
    users = np.arange(data.n_users)
    rec, _ = model.recommend_indices(users, k=3, exclude_seen=True)
    known = sp.history("train+valid").csr()
    assert known[users[:, None], rec].sum() == 0


def test_caser_user_embedding_and_anonymous_mean_user(chain_split):
    _, sp = chain_split
    model = Caser(epochs=1, **SMALL).fit(sp.train)
    seq = model.history_[:2]
    with torch.no_grad():
        anon = model.module_(seq, None, last_only=True)
        as_user = model.module_(seq, torch.tensor([0, 1]), last_only=True)
    d = model.dim
    torch.testing.assert_close(anon[..., :d], as_user[..., :d])  # same sequence part
    torch.testing.assert_close(anon[0, 0, d:], model.module_.user_emb.weight.mean(0))


# ---- attributes -----------------------------------------------------------------------------
def with_attributes(data):
    # attribute of item i: its parity and i // 5, as raw attribute ids
    raw = data.item_vocab.raw.astype(np.int64)
    values = np.stack([raw % 2, 10 + raw // 5], 1).ravel()
    vocab = np.unique(values)
    offsets = np.arange(0, 2 * data.n_items + 1, 2)
    data.item_features = FeatureTable(n=data.n_items, multihot={
        "attributes": (offsets, np.searchsorted(vocab, values), vocab)})
    return data


def test_item_attributes_are_added_to_item_embeddings():
    data = with_attributes(chains(60))
    with pytest.raises(ValueError, match="attributes"):
        SASRec(epochs=0, use_attributes=True, **SMALL).fit(chains(60))
    model = SASRec(epochs=2, use_attributes=True, **SMALL).fit(data)
    emb = model.module_.item_emb
    bags = emb.attr_bags
    assert bags.shape == (data.n_items + 2, 2) and (bags[0] == 0).all() and (bags[-1] == 0).all()
    attr = emb.attributes.weight
    expected = emb.ids.weight[1:-1] + attr[bags[1:-1]].mean(1)
    torch.testing.assert_close(emb.items(), expected)
    # items sharing attributes move together when one attribute's embedding changes
    before = model.recommend_sequence_indices([walk(0, 5)], k=N_ITEMS)[1]
    with torch.no_grad():
        attr[1] += 3.0
    after = model.recommend_sequence_indices([walk(0, 5)], k=N_ITEMS)[1]
    assert not np.allclose(before, after)
    plain = SASRec(epochs=0, use_attributes=False, **SMALL).fit(data)
    assert plain.module_.item_emb.attributes is None
    # "auto" (SASRec's default): the attributes when the data has them, no error when it has none
    assert SASRec(epochs=0, **SMALL).fit(data).module_.item_emb.attributes is not None
    assert SASRec(epochs=0, **SMALL).fit(chains(60)).module_.item_emb.attributes is None


# ---- persistence, raw ids, CLI ----------------------------------------------------------------
@pytest.mark.parametrize("cls", [GRU4Rec, BERT4Rec, BSARec])
def test_save_load_roundtrip_with_raw_ids(tmp_path, cls):
    data = chains(40, raw_prefix="item-")
    model = cls(epochs=2, **SMALL).fit(data)
    session = ["item-3", "item-4", "unknown-id", "item-5"]
    items, scores = model.recommend_sequence(session, k=5)
    assert all(str(x).startswith("item-") for x in items[0])
    # unknown ids are dropped: same as the session without it
    same, _ = model.recommend_sequence([["item-3", "item-4", "item-5"]], k=5)
    assert items.tolist() == same.tolist()
    model.save(tmp_path / "m")
    assert not list(tmp_path.glob("**/*.pkl"))
    loaded = Recommender.load(tmp_path / "m", device="cpu")
    assert type(loaded) is cls and loaded.get_params() == model.get_params() | {"device": "cpu"}
    users = torch.arange(data.n_users)
    torch.testing.assert_close(loaded.score_all(users), model.score_all(users))
    items2, scores2 = loaded.recommend_sequence(session, k=5)
    assert items2.tolist() == items.tolist() and np.allclose(scores, scores2)


def test_bad_loss_and_sampler_fail_clearly():
    data = chains(10)
    with pytest.raises(ValueError, match="loss: expected one of"):
        GRU4Rec(loss="top1", **SMALL).fit(data)
    with pytest.raises(ValueError, match="sampler: expected one of"):
        GRU4Rec(loss="sampled", sampler="hard", **SMALL).fit(data)
    assert get_model_class("SASRec") is SASRec


def test_cli_trains_sasrec_on_s3rec_file_with_attributes(tmp_path):
    rng = np.random.default_rng(1)
    lines = []
    for u in range(1, 81):
        start = int(rng.integers(N_ITEMS))
        lines.append(" ".join(map(str, [u] + [(start + t) % N_ITEMS + 1 for t in range(9)])))
    path = tmp_path / "Chains.txt"
    path.write_text("\n".join(lines) + "\n")
    (tmp_path / "Chains_item2attributes.json").write_text(
        json.dumps({str(i): [i % 2, 2 + i // 5] for i in range(1, N_ITEMS + 1)}))
    res = CliRunner().invoke(app, ["train", "--model", "sasrec", "--data", f"s3rec:{path}",
                                   "--device", "cpu", "--set", "epochs=10", "--set", "dim=32",
                                   "--set", "dropout=0.1", "--set", "lr=0.005",
                                   "--set", "use_attributes=true", "--set", "progress=false"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["model"] == "sasrec" and out["protocol"]["name"] == "s3rec"
    assert out["protocol"]["excluded"] == "items already in the user's sequence"
    assert out["selected_on"] == "validation"
    assert out["params"]["use_attributes"] is True and out["early_stopping_on"] == "valid"
    assert out["metrics"]["hr@5"] > 0.8


def test_bsarec_frequency_filter_splits_low_and_high_frequencies():
    torch.manual_seed(0)
    f = FrequencyFilter(dim=4, c=1, dropout=0.0).eval()  # c=1: only the mean (frequency 0) is "low"
    x = torch.randn(2, 6, 4)
    spectrum = torch.fft.rfft(x, dim=1, norm="ortho")
    spectrum[:, 1:] = 0
    low = torch.fft.irfft(spectrum, n=6, dim=1, norm="ortho")
    torch.testing.assert_close(low, x.mean(1, keepdim=True).expand_as(x))  # by hand: DC = the mean
    with torch.no_grad():
        f.sqrt_beta.fill_(1.0)  # beta^2 = 1: low + high = x, so the sublayer is LN(2x)
    torch.testing.assert_close(f(x), F.layer_norm(2 * x, (4,), eps=1e-12))
    with torch.no_grad():
        f.sqrt_beta.zero_()  # beta = 0: only the mean passes
    torch.testing.assert_close(f(x), F.layer_norm(x + low, (4,), eps=1e-12))
