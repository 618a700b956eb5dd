"""An HTML report a person would rather look at than read: tables, plots, examples.

Everything in the report is drawn from one `summary` dict (the same one written to
results.json), so the page and the JSON cannot disagree. Plots are PNGs embedded as data URIs:
the page is a single file that renders with no network and no missing images; each PNG is also
written beside it.
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
import json
from pathlib import Path
from typing import Any

import numpy as np


def _plt():
    """matplotlib.pyplot, headless, imported when a figure is drawn (the data of the figures
    needs none of it)."""
    from recstack.optional import require

    matplotlib = require("matplotlib", "report", "the HTML report")
    matplotlib.use("Agg")  # headless: no display on servers or CI
    import matplotlib.pyplot as plt

    return plt


#: the resolution figures are saved at; the page shows them at half their pixel width (sharp on
#: high-density screens), so a figure `w` inches wide takes 100 * w CSS pixels: every figure is
#: at most 10.5 in wide to fit the page (1100 px) at 100 % zoom, its text at 10-12 pt
_DPI = 200
_RC = {"font.size": 11, "axes.titlesize": 12, "axes.labelsize": 11, "xtick.labelsize": 10,
       "ytick.labelsize": 10, "legend.fontsize": 10, "legend.title_fontsize": 10}


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=_DPI, bbox_inches="tight")
    _plt().close(fig)
    return buf.getvalue()


def _styled(draw):
    """Run a figure-drawing function under the report's font sizes."""

    def wrapper(*args, **kwargs):
        with _plt().rc_context(_RC):
            return draw(*args, **kwargs)

    wrapper.__name__, wrapper.__doc__ = draw.__name__, draw.__doc__
    return wrapper


# ---- one colour per model, the same in every figure ----------------------------------------------
#: the quickstart's models and rankers; any other name gets a colour derived from the name
#: alone (`model_colour`), never from its position in a figure
MODEL_COLOURS = {
    "pop": "#7f7f7f", "itemknn": "#8c564b", "ease": "#9467bd", "two_tower": "#1f77b4",
    "sasrec": "#ff7f0e", "pipeline": "#2ca02c", "lr (CTR)": "#bcbd22", "deepfm (CTR)": "#d62728",
    "pipeline coarse_ctr": "#17becf", "pipeline fine_ctr": "#e377c2",
}
_OTHER_COLOURS = ["#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd", "#e6550d", "#31a354"]
#: colours of the genres in the embedding map (categories, not models)
_GENRE_COLOURS = ["#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02", "#a6761d", "#1f78b4"]


def model_colour(name: str) -> str:
    """The colour of model `name` in every figure of a report."""
    if name in MODEL_COLOURS:
        return MODEL_COLOURS[name]
    return _OTHER_COLOURS[int(hashlib.sha256(name.encode()).hexdigest(), 16) % len(_OTHER_COLOURS)]


# ---- plots (each returns PNG bytes) -----------------------------------------------------------
@_styled
def plot_metrics(models: dict[str, dict[str, float]], keys: list[str]) -> bytes:
    """Grouped bars: one group per metric, one bar per model (its colour: `model_colour`)."""
    names = list(models)
    fig, ax = _plt().subplots(figsize=(max(7.0, min(10.5, 2.4 * len(keys) + 1.5)), 4.2))
    width = 0.8 / max(1, len(names))
    x = np.arange(len(keys))
    for j, n in enumerate(names):
        ax.bar(x + j * width, [models[n].get(k, np.nan) for k in keys], width, label=n, color=model_colour(n))
    ax.set_xticks(x + width * (len(names) - 1) / 2, keys)
    ax.set_ylabel("value on the test users")
    ax.legend(ncol=min(6, len(names)), loc="lower center", bbox_to_anchor=(0.5, 1.0), frameon=False)
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    return _png(fig)


def embedding_map(emb: np.ndarray) -> np.ndarray:
    """2-D coordinates of item embeddings: their top two principal components."""
    x = emb - emb.mean(0, keepdims=True)
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    return x @ vt[:2].T


@_styled
def plot_embedding_map(coords: np.ndarray, labels: list[str], title: str) -> bytes:
    """Scatter of 2-D item coordinates coloured by label (the most common labels; rest grey)."""
    labels_arr = np.asarray(labels, dtype=object)
    uniq, counts = np.unique(labels_arr, return_counts=True)
    top = [u for u in uniq[np.argsort(-counts, kind="stable")] if u not in ("", "(no genres listed)")][:8]
    fig, ax = _plt().subplots(figsize=(9.0, 6.5))
    rest = ~np.isin(labels_arr, top)
    ax.scatter(coords[rest, 0], coords[rest, 1], s=7, c="#cccccc", label="other genres")
    for j, lab in enumerate(top):
        m = labels_arr == lab
        ax.scatter(coords[m, 0], coords[m, 1], s=9, c=_GENRE_COLOURS[j % len(_GENRE_COLOURS)],
                   label=f"{lab} ({int(m.sum())})", alpha=0.85)
    ax.set_title(title)
    ax.set_xlabel("first principal component")
    ax.set_ylabel("second principal component")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(markerscale=2.5, loc="upper left", bbox_to_anchor=(1.01, 1.0), title="genre (movies)")
    return _png(fig)


def popularity_bins(item_pop: np.ndarray, bins: int = 10) -> list[int]:
    """Log-spaced bin edges over item popularity (interactions per item): integers from 1 to
    max + 1, at most `bins` bins (fewer where rounding merges edges). Items with no
    interactions fall in the first bin."""
    top = max(2, int(np.max(item_pop)) + 1) if len(item_pop) else 2
    return np.unique(np.round(np.geomspace(1, top, bins + 1)).astype(np.int64)).tolist()


def _bin_of(item_pop: np.ndarray, edges: list[int]) -> np.ndarray:
    idx = np.searchsorted(np.asarray(edges), np.maximum(np.asarray(item_pop), 1), side="right") - 1
    return np.clip(idx, 0, len(edges) - 2)


def popularity_profile(recs: np.ndarray, item_pop: np.ndarray, edges: list[int]) -> list[float]:
    """Share of the recommendations (-1: an empty slot, skipped) falling in each popularity bin
    [edges[i], edges[i + 1]) (see `popularity_bins`)."""
    r = np.asarray(recs).ravel()
    counts = np.bincount(_bin_of(np.asarray(item_pop)[r[r >= 0]], edges), minlength=len(edges) - 1)
    return (counts / max(1, counts.sum())).tolist()


def catalogue_profile(item_pop: np.ndarray, edges: list[int]) -> list[float]:
    """Share of the catalogue's items in each popularity bin (what uniform recommending gives)."""
    counts = np.bincount(_bin_of(item_pop, edges), minlength=len(edges) - 1)
    return (counts / max(1, counts.sum())).tolist()


@_styled
def plot_popularity_bias(profile: dict[str, Any], k: int = 20) -> bytes:
    """Share of each model's top-k recommendations per item-popularity bin, popularity on a log
    axis; the catalogue's own distribution (grey) is what recommending uniformly would give.

    `profile` = {"bin_edges": [...], "catalogue": [...], "models": {name: [...]}}.
    """
    from matplotlib.ticker import FuncFormatter

    edges = np.asarray(profile["bin_edges"], np.float64)
    centres = np.sqrt(edges[:-1] * edges[1:])  # the middle of each bin on the log axis
    fig, ax = _plt().subplots(figsize=(8.0, 4.6))
    ax.stairs(profile["catalogue"], edges, fill=True, color="#e6e6e6", label="all movies (catalogue)")
    for name, prof in profile["models"].items():
        ax.plot(centres, prof, marker="o", ms=5, lw=2, color=model_colour(name), label=name)
    ax.set_xscale("log")
    ax.set_xlim(edges[0], edges[-1])
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))  # 1, 10, 100 (not 10^0)
    ax.set_xlabel("movie popularity: ratings in the training data (log scale)")
    ax.set_ylabel(f"share of top-{k} recommendations")
    ax.grid(alpha=0.3, which="both")
    ax.set_axisbelow(True)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return _png(fig)


@_styled
def plot_training_curves(curves: dict[str, dict[str, Any]], ncols: int = 3) -> bytes:
    """Small multiples, `ncols` models a row: each model's training loss per epoch (upper
    panel) and its validation metric (lower panel), in the model's colour.

    `curves[name]` = {"epoch": [...], "loss": [...], "metric": name or None, "valid": [...]}.
    Each model has its own axes: the losses of different objectives are not comparable.
    """
    from matplotlib.ticker import MaxNLocator

    names = list(curves) or ["(none)"]
    ncols = max(1, min(ncols, len(names)))
    rows = -(-len(names) // ncols)
    fig = _plt().figure(figsize=(10.5, 4.8 * rows))
    outer = fig.add_gridspec(rows, ncols, hspace=0.32, wspace=0.55)
    for j, name in enumerate(names):
        c = curves.get(name, {"epoch": [], "loss": []})
        cell = outer[divmod(j, ncols)].subgridspec(2, 1, hspace=0.08)
        top = fig.add_subplot(cell[0])
        bottom = fig.add_subplot(cell[1], sharex=top)
        colour = model_colour(name)
        epochs = c["epoch"]
        top.plot(epochs, c["loss"], marker="o", ms=5, lw=2, color=colour)
        top.set_title(name, color=colour, fontweight="bold")
        top.set_ylabel("training loss")
        top.tick_params(labelbottom=False)
        if c.get("metric") and c.get("valid"):
            bottom.plot(epochs, c["valid"], marker="s", ms=5, lw=2, color=colour)
            bottom.set_ylabel(f"valid {c['metric']}")
        else:
            bottom.text(0.5, 0.5, "no validation data\n(trained on all\nknown data)", ha="center",
                        va="center", color="#666", transform=bottom.transAxes)
            bottom.tick_params(left=False, labelleft=False)
        bottom.set_xlabel("epoch")
        bottom.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        if epochs:
            bottom.set_xlim(min(epochs) - 0.5, max(epochs) + 0.5)
        for ax in (top, bottom):
            ax.grid(alpha=0.3)
    return _png(fig)


@_styled
def plot_stages(stages: dict[str, float], baselines: dict[str, float], metric: str) -> bytes:
    """Horizontal bars: `metric` after each pipeline stage (the pipeline's colour), the
    baselines as dashed vertical lines in their own colours."""
    names = list(stages)
    fig, ax = _plt().subplots(figsize=(6.4, 0.55 * len(names) + 1.8))
    y = np.arange(len(names))[::-1]
    bars = ax.barh(y, [stages[n] for n in names], color=model_colour("pipeline"), height=0.6,
                   label="pipeline cut after the stage")
    for yy, n in zip(y, names, strict=True):
        ax.text(stages[n], yy, f" {stages[n]:.4f}", va="center")
    lines = [ax.axvline(v, color=model_colour(n), ls="--", lw=2, label=f"baseline {n} ({v:.4f})")
             for n, v in baselines.items()]
    ax.set_yticks(y, names)
    ax.set_xlabel(metric)
    ax.set_xlim(0, 1.15 * max([*stages.values(), *baselines.values(), 1e-9]))
    ax.grid(axis="x", alpha=0.3)
    ax.set_axisbelow(True)
    ax.legend(handles=[bars, *lines], loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return _png(fig)


# ---- figures with the numbers they were drawn from ----------------------------------------------
def digest(data: Any) -> str:
    """A short hash of JSON-able plotted data (stable key order): ties a figure in the page to
    its entry in figures.json."""
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


class Figures:
    """Collects figures as (PNG, the exact data plotted, caption). `write` saves every PNG under
    `out/figures/` and the data to `out/figures.json`; `html(name)` is the page's <figure>, its
    PNG embedded and tagged with the figure's name and the digest of its data."""

    def __init__(self) -> None:
        self.png: dict[str, bytes] = {}
        self.data: dict[str, Any] = {}
        self.caption: dict[str, str] = {}

    def add(self, name: str, png: bytes, data: Any, caption: str = "") -> None:
        self.png[name], self.data[name], self.caption[name] = png, data, caption

    def html(self, name: str) -> str:
        cap = f"<figcaption>{_esc(self.caption[name])}</figcaption>" if self.caption[name] else ""
        return (f"<figure data-figure='{_esc(name)}' data-digest='{digest(self.data[name])}'>"
                f"{img_tag(self.png[name], name)}{cap}</figure>")

    def write(self, out: Path) -> dict[str, str]:
        paths = write_figures(out, self.png)
        (out / "figures.json").write_text(json.dumps(
            {n: {"png": paths[n], "digest": digest(d), "data": d} for n, d in self.data.items()}))
        return paths


# ---- HTML ---------------------------------------------------------------------------------------
_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;max-width:1100px;color:#222}
h1{margin-bottom:0}.sub{color:#666;margin-top:.2em}
table{border-collapse:collapse;margin:.8em 0;font-size:14px}th,td{border-bottom:1px solid #ddd;padding:4px 10px;text-align:right}
th:first-child,td:first-child{text-align:left}tr.best td{font-weight:600;background:#f3f8ff}
img{max-width:100%;height:auto;border:1px solid #eee;margin:.5em 0}.ex{display:grid;grid-template-columns:1fr 1fr;gap:1em}
.card{border:1px solid #e3e3e3;border-radius:6px;padding:.6em 1em}.card ol{margin:.3em 0;padding-left:1.4em}
.tag{display:inline-block;font-size:11px;background:#eef;border-radius:3px;padding:0 4px;margin-left:4px;color:#335}
figure{margin:.5em 0}figcaption{color:#555;font-size:13px}.hit{background:#e5f6e5}
code{background:#f4f4f4;padding:1px 4px;border-radius:3px}.note{color:#555;font-size:13px}
table.trace td,table.trace th{text-align:left;vertical-align:top}table.trace td.num{text-align:right}
.swatch{display:inline-block;width:.8em;height:.8em;border-radius:2px;margin-right:.4em;vertical-align:baseline}
.models{display:grid;grid-template-columns:repeat(auto-fill,minmax(200px,1fr));gap:.4em 1.2em;font-size:13px}
.models ol{margin:.2em 0;padding-left:1.6em}li.hit{background:#e5f6e5}
"""


def _esc(x: Any) -> str:
    return html.escape(str(x))


def swatch(name: str) -> str:
    """A small square in the model's figure colour (`model_colour`), to put before its name."""
    return f"<span class='swatch' style='background:{model_colour(name)}'></span>"


def metrics_table(rows: dict[str, dict[str, float]], keys: list[str], best: str | None = None,
                  extra: dict[str, dict[str, str]] | None = None, colours: dict[str, str] | None = None) -> str:
    """An HTML table: one row per model, one column per metric (4 decimals); rows named in
    `colours` get a square of that colour (the model's colour in the figures)."""
    extra, colours = extra or {}, colours or {}
    extra_cols = sorted({k for v in extra.values() for k in v})
    head = "".join(f"<th>{_esc(k)}</th>" for k in ["model", *keys, *extra_cols])
    body = []
    for name, m in rows.items():
        cls = ' class="best"' if name == best else ""
        cells = "".join(f"<td>{m[k]:.4f}</td>" if k in m else "<td>-</td>" for k in keys)
        cells += "".join(f"<td>{_esc(extra.get(name, {}).get(k, ''))}</td>" for k in extra_cols)
        mark = (f"<span class='swatch' style='background:{_esc(colours[name])}'></span>"
                if name in colours else "")
        body.append(f"<tr{cls}><td>{mark}{_esc(name)}</td>{cells}</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


#: the footer line of a report on the MovieLens data shipped in the package (its terms: NOTICE)
EMBEDDED_DATA_TERMS = (
    "Data: MovieLens latest-small, (c) GroupLens Research, University of Minnesota, shipped with "
    "recstack under its own terms (not recstack's MIT licence): research use only, no commercial "
    "use without GroupLens' permission; cite F. M. Harper and J. A. Konstan, \"The MovieLens "
    "Datasets: History and Context\", ACM TiiS 5(4), 2015. See NOTICE.")


def data_terms(data: str) -> str | None:
    """The terms line to show under a report on `data` (a spec or a description): the embedded
    MovieLens data's, else None."""
    return EMBEDDED_DATA_TERMS if data.split(":")[0].split(" ")[0] == "embedded" else None


def render_html(title: str, subtitle: str, sections: list[tuple[str, str]],
                footer: str | None = None) -> str:
    """A self-contained page from (heading, inner HTML) sections; `footer`: one closing line."""
    parts = [f"<h2>{_esc(h)}</h2>\n{body}" for h, body in sections]
    end = f"<footer class='note'><p>{_esc(footer)}</p></footer>" if footer else ""
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{_esc(title)}</title>"
            f"<style>{_CSS}</style></head><body><h1>{_esc(title)}</h1><p class='sub'>{_esc(subtitle)}</p>"
            + "\n".join(parts) + end + "</body></html>")


def img_tag(png: bytes, alt: str) -> str:
    """An <img> with the PNG inline, shown at its drawn size: `_DPI / 100` image pixels per CSS
    pixel (a PNG's width is bytes 16-19 of its header)."""
    width = int.from_bytes(png[16:20], "big") * 100 // _DPI if png[:8] == b"\x89PNG\r\n\x1a\n" else None
    size = f" width='{width}'" if width else ""
    return f"<img alt='{_esc(alt)}'{size} src='data:image/png;base64,{base64.b64encode(png).decode()}'/>"


def write_figures(out: Path, figures: dict[str, bytes]) -> dict[str, str]:
    """Write each PNG to `out/figures/NAME.png`; returns name -> relative path."""
    d = out / "figures"
    d.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, png in figures.items():
        (d / f"{name}.png").write_bytes(png)
        paths[name] = f"figures/{name}.png"
    return paths
