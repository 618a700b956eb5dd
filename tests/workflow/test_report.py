"""The report's figures (issue 23): one colour per model in every figure, popularity on a log
axis, panels legible at 100 % zoom, example recommendations shown by title."""

from __future__ import annotations

import html

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from matplotlib.colors import to_hex  # noqa: E402
from matplotlib.text import Text  # noqa: E402

from recstack.workflow import report as R  # noqa: E402
from recstack.workflow.quickstart import _examples_html  # noqa: E402

MODELS = ["pop", "itemknn", "ease", "sasrec", "two_tower", "pipeline"]
CURVES = {
    "two_tower": {"epoch": [1, 2, 3], "loss": [7.0, 6.5, 6.2], "metric": None, "valid": []},
    "sasrec": {"epoch": [1, 2, 3], "loss": [9.0, 8.5, 8.0], "metric": "ndcg@10", "valid": [0.01, 0.02, 0.03]},
    "lr (CTR)": {"epoch": [1, 2], "loss": [0.7, 0.66], "metric": "auc", "valid": [0.64, 0.65]},
    "deepfm (CTR)": {"epoch": [1, 2], "loss": [0.65, 0.6], "metric": "auc", "valid": [0.77, 0.79]},
}


@pytest.fixture()
def drawn(monkeypatch):
    """The matplotlib figures the plot functions draw, kept instead of rendered."""
    figs = []

    def keep(fig) -> bytes:
        figs.append(fig)
        return b""

    monkeypatch.setattr(R, "_png", keep)
    yield figs
    import matplotlib.pyplot as plt

    for f in figs:
        plt.close(f)


def profile(n_items=500, seed=0):
    rng = np.random.default_rng(seed)
    item_pop = np.floor(rng.pareto(1.2, n_items) * 3).astype(np.int64)  # long tail, zeros included
    edges = R.popularity_bins(item_pop)
    recs = {n: rng.choice(n_items, (30, 20), p=(item_pop + 1) / (item_pop + 1).sum()) for n in MODELS}
    return item_pop, {"bin_edges": edges, "catalogue": R.catalogue_profile(item_pop, edges),
                      "models": {n: R.popularity_profile(r, item_pop, edges) for n, r in recs.items()}}


def test_each_model_has_one_fixed_colour():
    assert len(set(R.MODEL_COLOURS.values())) == len(R.MODEL_COLOURS)  # no two models share one
    assert R.model_colour("ease") == R.MODEL_COLOURS["ease"]
    # a name not in the table: its colour follows from the name alone, in any figure
    assert R.model_colour("my_model") == R.model_colour("my_model")
    assert R.model_colour("my_model").startswith("#")


def test_every_figure_draws_a_model_in_its_colour(drawn):
    metrics = {n: {"ndcg@10": 0.1 + 0.01 * j, "hr@10": 0.2} for j, n in enumerate(MODELS)}
    R.plot_metrics(metrics, ["ndcg@10", "hr@10"])
    R.plot_metrics({n: metrics[n] for n in reversed(MODELS[2:])}, ["ndcg@10", "hr@10"])  # other order
    _, prof = profile()
    R.plot_popularity_bias(prof)
    R.plot_training_curves(CURVES)
    R.plot_stages({"retrieval": 0.03, "+ ranking": 0.05}, {"pop": 0.02, "ease": 0.04}, "ndcg@10")
    seen: dict[str, set[str]] = {}
    for fig in drawn:
        for ax in fig.axes:
            for c in ax.containers:  # bar groups (label: the model)
                seen.setdefault(c.get_label(), set()).update(to_hex(p.get_facecolor()) for p in c.patches)
            for line in ax.get_lines():  # curves and baselines
                name = line.get_label().removeprefix("baseline ").split(" (")[0]
                if name in R.MODEL_COLOURS:
                    seen.setdefault(name, set()).add(to_hex(line.get_color()))
            if ax.get_title() in CURVES:  # learning-curve panels: titled by model
                name = ax.get_title()
                seen.setdefault(name, set()).update(to_hex(ln.get_color()) for ln in ax.get_lines())
    seen["pipeline"] |= {c for k, c in seen.items() if k == "pipeline cut after the stage" for c in c}
    for name in [*MODELS, *CURVES]:
        assert seen.get(name) == {R.model_colour(name)}, (name, seen.get(name))


def test_popularity_axis_is_log_scaled_with_the_catalogue_for_reference(drawn):
    item_pop, prof = profile()
    R.plot_popularity_bias(prof)
    (ax,) = drawn[0].axes
    assert ax.get_xscale() == "log"
    assert "log scale" in ax.get_xlabel()
    labels = ax.get_legend_handles_labels()[1]
    assert labels == ["all movies (catalogue)", *MODELS]  # the legend names what is drawn
    edges = prof["bin_edges"]
    assert edges[0] == 1 and edges[-1] == item_pop.max() + 1 and edges == sorted(set(edges))
    ratios = np.diff(np.log(edges[1:]))  # log-spaced (integer rounding aside)
    assert ratios.max() < 3 * ratios.min()
    for shares in [prof["catalogue"], *prof["models"].values()]:
        assert len(shares) == len(edges) - 1 and abs(sum(shares) - 1) < 1e-9
    # an item with no interaction counts in the first bin; -1 (an empty slot) is not counted
    assert R.popularity_profile(np.array([[int(np.argmin(item_pop)), -1]]), item_pop, edges)[0] == 1.0


def test_figures_are_legible_at_full_size(drawn):
    R.plot_training_curves({f"model {j}": CURVES["sasrec"] for j in range(6)})
    R.plot_metrics({n: {"ndcg@10": 0.1} for n in MODELS}, ["ndcg@10"])
    for fig in drawn:
        w, _ = fig.get_size_inches()
        assert w <= 10.5  # shown at 100 CSS px per inch in a 1100 px page: never shrunk
        sizes = [t.get_fontsize() for t in fig.findobj(Text) if t.get_text().strip()]
        assert sizes and min(sizes) >= 10, sorted(sizes)[:5]
    # six learning-curve panels: three per row, each plot area about 2 in (200 px) wide
    panels = [ax for ax in drawn[0].axes if ax.get_title()]
    assert len(panels) == 6
    assert min(ax.get_position().width * drawn[0].get_size_inches()[0] for ax in panels) > 1.9


def test_images_are_shown_at_their_drawn_size():
    png = R.plot_metrics({"pop": {"ndcg@10": 0.1}}, ["ndcg@10"])
    width = int.from_bytes(png[16:20], "big")
    tag = R.img_tag(png, "metrics")
    assert f"width='{width * 100 // R._DPI}'" in tag and width * 100 // R._DPI <= 1100


def test_examples_show_titles_for_the_pipeline_and_each_model():
    ex = {"user": "7", "recent": ["Heat (1995)"], "held_out": ["Alien (1979)"],
          "recommended": ["Aliens (1986)", "Alien (1979)"], "hit": [False, True],
          "trace": [{"title": t, "genres": ["Sci-Fi"], "sources": ["two_tower"], "source_ranks": {"two_tower": 0},
                     "scores": {"final": 1.0}, "rule": "score"} for t in ("Aliens (1986)", "Alien (1979)")],
          "timings_ms": {"total": 3.0},
          "by_model": {"ease": {"titles": ["Amélie (2001)", "Alien (1979)"], "hit": [False, True]}}}
    page = _examples_html([ex], R)
    for title in ("Heat (1995)", "Aliens (1986)", "Alien (1979)", "Amélie (2001)"):
        assert html.escape(title) in page
    assert f"background:{R.model_colour('ease')}" in page  # the model's colour beside its name
