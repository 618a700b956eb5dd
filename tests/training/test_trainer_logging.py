"""The trainer reports through logging only: a library fit prints nothing (issue 23)."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from recstack import progress
from recstack.data import from_raw
from recstack.data.transforms import split
from recstack.models import MF

pytestmark = pytest.mark.usefixtures("one_torch_thread", "library_logging")


def small_split():
    rng = np.random.default_rng(0)
    users = np.repeat(np.arange(40), 6)
    items = np.concatenate([rng.choice(30, 6, replace=False) for _ in range(40)])
    return split(from_raw(users, items, timestamp=np.arange(len(users))), "loo")


def fit(**kw):
    sp = small_split()
    return MF(dim=8, epochs=2, batch_size=32, device="cpu", seed=0, monitor="ndcg@10", **kw).fit(
        sp.train, valid=sp.valid)


def test_fit_with_bars_off_writes_nothing_except_log_records(capsys, caplog):
    caplog.set_level(logging.DEBUG, logger="recstack")
    fit(progress=True)
    assert capsys.readouterr() == ("", "")
    epochs = [r for r in caplog.records if r.name == "recstack.training.trainer"]
    assert [r.levelno for r in epochs] == [logging.INFO, logging.INFO]
    assert epochs[0].getMessage().startswith("epoch   1/2 loss=") and "ndcg@10=" in epochs[0].getMessage()


def test_progress_false_logs_epochs_at_debug(capsys, caplog):
    caplog.set_level(logging.DEBUG, logger="recstack")
    fit(progress=False)
    assert capsys.readouterr() == ("", "")
    epochs = [r for r in caplog.records if r.name == "recstack.training.trainer"]
    assert len(epochs) == 2 and all(r.levelno == logging.DEBUG for r in epochs)


def test_lines_mode_reports_a_slow_epoch_while_it_runs(monkeypatch, caplog, capsys):
    """Off a terminal the bar is a plain line every 10 s: here each batch takes 4 s."""
    t = [0.0]

    def clock():
        t[0] += 4.0
        return t[0]

    monkeypatch.setattr(progress, "_clock", clock)
    progress.set_progress("lines")
    caplog.set_level(logging.INFO, logger="recstack")
    fit(progress=True)
    lines = [r.getMessage() for r in caplog.records if r.name == "recstack.progress"]
    assert lines and all(m.startswith("epoch ") and " loss=" in m and "%) after" in m for m in lines), lines
    assert capsys.readouterr() == ("", "")
