"""Checkpoint reliability (issue 22): a crash between the renames, resume with other settings,
a changed model shape, a corrupt file; the files' mode."""

from __future__ import annotations

import json
import os
import shutil
import stat

import pytest
import torch
from torch import nn

from recstack.training.trainer import TrainConfig, Trainer


def _examples(n: int = 64) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 4, generator=g)
    return {"x": x, "y": x.sum(1, keepdim=True)}


def _fit(ckpt, epochs: int, dim: int = 4, lr: float = 0.01, hparams: dict | None = None, **kw) -> tuple[nn.Module, object]:
    torch.manual_seed(0)
    module = nn.Sequential(nn.Linear(4, dim), nn.Linear(dim, 1))

    def loss(batch, gen):
        return ((module(batch["x"]) - batch["y"]) ** 2).mean()

    cfg = TrainConfig(epochs=epochs, batch_size=16, lr=lr, progress=False, checkpoint_dir=str(ckpt),
                      plateau_factor=1.0, **kw)
    trainer = Trainer(cfg, hparams=hparams) if hparams is not None else Trainer(cfg)
    result = trainer.fit(module, loss, _examples(), device=torch.device("cpu"))
    return module, result


def test_resume_recovers_from_last_old_after_a_crash_between_the_renames(tmp_path):
    ckpt = tmp_path / "ckpt"
    _fit(ckpt, epochs=2)
    # the crash state: `last` was moved to `last.old`, the new one never renamed into place
    os.replace(ckpt / "last", ckpt / "last.old")
    (ckpt / "last.tmp").mkdir()
    (ckpt / "last.tmp" / "state.safetensors").write_bytes(b"\x00\x01")  # half written
    log = tmp_path / "resumed.jsonl"
    _, result = _fit(ckpt, epochs=3, log_path=str(log))
    assert result.epochs_run == 3 and [h["epoch"] for h in result.history] == [1, 2, 3]
    # epochs 1-2 come from last.old: this run trained epoch 3 only (not all three from scratch)
    assert [json.loads(line)["epoch"] for line in log.read_text().splitlines()] == [3]
    assert (ckpt / "last" / "state.json").exists() and not (ckpt / "last.old").exists()


def test_resume_refuses_a_changed_learning_rate_in_one_line(tmp_path):
    ckpt = tmp_path / "ckpt"
    _fit(ckpt, epochs=2)
    with pytest.raises(ValueError, match=r"written with lr=0\.01, this run has lr=0\.1") as err:
        _fit(ckpt, epochs=3, lr=0.1)
    assert "\n" not in str(err.value)


def test_resume_names_every_changed_setting_and_model_hyper_parameter(tmp_path):
    ckpt = tmp_path / "ckpt"
    _fit(ckpt, epochs=1, hparams={"dim": 4, "loss": "bpr"})
    with pytest.raises(ValueError, match=r"written with weight_decay=0\.0, loss=bpr, this run has "
                                         r"weight_decay=0\.5, loss=softmax"):
        _fit(ckpt, epochs=2, weight_decay=0.5, hparams={"dim": 4, "loss": "softmax"})


def test_resume_allows_more_epochs_and_other_log_paths(tmp_path):
    ckpt = tmp_path / "ckpt"
    _fit(ckpt, epochs=2)
    _, result = _fit(ckpt, epochs=4, log_path=str(tmp_path / "log.jsonl"), tensorboard_dir=None)
    assert result.epochs_run == 4 and len(result.history) == 4


def test_resume_with_a_changed_dim_names_the_file_in_one_line(tmp_path):
    ckpt = tmp_path / "ckpt"
    _fit(ckpt, epochs=1, dim=4)
    with pytest.raises(ValueError, match=r"state\.safetensors.*shape") as err:
        _fit(ckpt, epochs=2, dim=8)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("name", ["state.safetensors", "state.json"])
def test_resume_from_a_truncated_file_names_it_in_one_line(tmp_path, name):
    ckpt = tmp_path / "ckpt"
    _fit(ckpt, epochs=1)
    f = ckpt / "last" / name
    f.write_bytes(f.read_bytes()[: len(f.read_bytes()) // 2])
    with pytest.raises(ValueError, match=name.replace(".", r"\.")) as err:
        _fit(ckpt, epochs=2)
    assert "\n" not in str(err.value) and "truncated or corrupt" in str(err.value)


def test_checkpoint_files_get_a_normal_files_mode(tmp_path):
    ckpt = tmp_path / "ckpt"
    _fit(ckpt, epochs=1)
    probe = tmp_path / "probe"
    probe.write_text("x")  # what open() gives under this umask, e.g. 0644
    want = stat.S_IMODE(probe.stat().st_mode)
    for name in ("state.safetensors", "state.json"):
        assert stat.S_IMODE((ckpt / "last" / name).stat().st_mode) == want, name
    shutil.rmtree(ckpt)


def test_resume_refuses_a_changed_model_hyper_parameter_through_the_estimator(tmp_path):
    import numpy as np
    import pytest

    from recstack.data import from_raw
    from recstack.models.registry import create_model
    from recstack.training.checkpoint import CheckpointError

    rng = np.random.default_rng(0)
    data = from_raw(rng.integers(0, 30, 400), rng.integers(0, 40, 400))
    kw = dict(device="cpu", epochs=1, progress=False, checkpoint_dir=str(tmp_path / "ck"))
    create_model("mf", loss="bpr", n_negatives=1, **kw).fit(data)
    with pytest.raises(CheckpointError, match="n_negatives"):
        create_model("mf", loss="bpr", n_negatives=4, **kw).fit(data)
