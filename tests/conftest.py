"""Shared fixtures: small generated data sets (the suite never reads ../shared/data)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recstack.data import from_raw
from recstack.data.dataset import FeatureTable


def make_rating_log(n: int = 600, n_users: int = 30, n_items: int = 40, seed: int = 0):
    """A random rating log with user (gender, age) and item (genre) features."""
    rng = np.random.default_rng(seed)
    users, items = rng.integers(0, n_users, n), rng.integers(0, n_items, n)
    data = from_raw(users * 7 + 100, items + 1000, rating=rng.integers(1, 6, n).astype(float),
                    timestamp=rng.integers(0, 300, n))
    data.user_features = FeatureTable(
        n=data.n_users,
        categorical={"gender": (np.arange(data.n_users) % 2, np.array(["F", "M"], dtype=object))},
        numeric={"age": (18 + np.arange(data.n_users) % 40).astype(np.float32)})
    off = np.arange(data.n_items + 1) * 2
    data.item_features = FeatureTable(
        n=data.n_items, multihot={"genre": (off, np.arange(2 * data.n_items) % 5,
                                            np.array(list("abcde"), dtype=object))})
    return data


@pytest.fixture
def rating_log():
    """600 ratings by 30 users of 40 items, with user and item features."""
    return make_rating_log()


def write_group_walk_log(path) -> None:
    """A CSV log (user, item, rating, timestamp) of 60 users each walking through one of three
    groups of 15 items (ids 100-144), 12 steps in time order: a planted sequential structure
    the serving tests' small bundles learn."""
    import polars as pl

    rng = np.random.default_rng(0)
    rows = []
    for u in range(60):
        g, start = u % 3, rng.integers(15)
        rows += [(f"u{u}", 100 + g * 15 + (start + t) % 15, 4.0, 1000 * u + t) for t in range(12)]
    pl.DataFrame(rows, schema=["user", "item", "rating", "timestamp"], orient="row").write_csv(path)


@pytest.fixture
def one_torch_thread():
    """Tiny tensors: intra-op threads only add overhead (and noise); restored afterwards.
    Modules opt in with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture()
def tiny_csv(tmp_path):
    """A small ratings CSV (40 users x 6 of 25 items, raw string ids, timestamps)."""
    import polars as pl

    rng = np.random.default_rng(0)
    rows = [(f"u{u}", f"i{i}", 4.0, 1000 + t) for u in range(40)
            for t, i in enumerate(rng.choice(25, size=6, replace=False))]
    path = tmp_path / "log.csv"
    pl.DataFrame(rows, schema=["user", "item", "rating", "timestamp"], orient="row").write_csv(path)
    return path


@pytest.fixture
def library_logging():
    """Start as a library user does: no progress bars, no recstack log handler; the logger's
    level restored afterwards. Modules opt in with ``pytest.mark.usefixtures``."""
    import logging

    from recstack import progress

    mode = progress._mode
    progress._mode = "off"
    logger = logging.getLogger("recstack")
    for h in list(logger.handlers):
        if isinstance(h, progress.RichLogHandler | progress.PlainLogHandler):
            logger.removeHandler(h)
    level = logger.level
    yield
    logger.setLevel(level)
    progress._mode = mode


def pytest_terminal_summary(terminalreporter) -> None:
    """Say which recstack the suite tested and from where (CI tests the installed wheel, not
    src/)."""
    from pathlib import Path

    import recstack

    terminalreporter.write_line(f"tested recstack {recstack.__version__} from {Path(recstack.__file__).parent}")
