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

_PALETTE = ["#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860", "#DA8BC3", "#8C8C8C",
            "#CCB974", "#64B5CD"]


def _plt():
    """matplotlib.pyplot, headless, imported when a figure is drawn (the data of the figures
    needs none of it)."""
    import matplotlib

    matplotlib.use("Agg")  # headless: no display on servers or CI
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    _plt().close(fig)
    return buf.getvalue()


# ---- plots (each returns PNG bytes) -----------------------------------------------------------
def plot_metrics(models: dict[str, dict[str, float]], keys: list[str]) -> bytes:
    """Grouped bars: one group per metric, one bar per model."""
    names = list(models)
    fig, ax = _plt().subplots(figsize=(max(6, 1.6 * len(keys)), 3.6))
    width = 0.8 / max(1, len(names))
    x = np.arange(len(keys))
    for j, n in enumerate(names):
        ax.bar(x + j * width, [models[n].get(k, np.nan) for k in keys], width, label=n,
               color=_PALETTE[j % len(_PALETTE)])
    ax.set_xticks(x + width * (len(names) - 1) / 2, keys)
    ax.set_ylabel("value (test)")
    ax.legend(fontsize=8, ncol=min(4, len(names)))
    ax.grid(axis="y", alpha=0.3)
    return _png(fig)


def plot_learning_curves(histories: dict[str, list[dict[str, float]]]) -> bytes:
    """Training loss (left) and the monitored validation metric (right) per epoch."""
    fig, (a, b) = _plt().subplots(1, 2, figsize=(10, 3.4))
    for j, (name, hist) in enumerate(histories.items()):
        c = _PALETTE[j % len(_PALETTE)]
        ep = [h["epoch"] for h in hist]
        a.plot(ep, [h.get("loss", np.nan) for h in hist], marker="o", ms=3, color=c, label=name)
        metric = next((k for k in (hist[0] if hist else {}) if "@" in k), None)
        if metric:
            b.plot(ep, [h.get(metric, np.nan) for h in hist], marker="o", ms=3, color=c, label=f"{name}: {metric}")
    a.set_title("training loss")
    b.set_title("validation metric")
    for ax in (a, b):
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return _png(fig)


def embedding_map(emb: np.ndarray) -> np.ndarray:
    """2-D coordinates of item embeddings: their top two principal components."""
    x = emb - emb.mean(0, keepdims=True)
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    return x @ vt[:2].T


def plot_embedding_map(coords: np.ndarray, labels: list[str], title: str) -> bytes:
    """Scatter of 2-D item coordinates coloured by label (the most common labels; rest grey)."""
    labels_arr = np.asarray(labels, dtype=object)
    uniq, counts = np.unique(labels_arr, return_counts=True)
    top = [u for u in uniq[np.argsort(-counts)] if u not in ("", "(no genres listed)")][:8]
    fig, ax = _plt().subplots(figsize=(6.5, 5))
    rest = ~np.isin(labels_arr, top)
    ax.scatter(coords[rest, 0], coords[rest, 1], s=4, c="#d0d0d0", label="other")
    for j, lab in enumerate(top):
        m = labels_arr == lab
        ax.scatter(coords[m, 0], coords[m, 1], s=5, c=_PALETTE[j % len(_PALETTE)], label=str(lab), alpha=0.8)
    ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(fontsize=7, markerscale=2.5, loc="best")
    return _png(fig)


def popularity_profile(recs: np.ndarray, item_pop: np.ndarray, bins: int = 10) -> list[float]:
    """Share of recommendations falling in each popularity decile of the catalogue (decile 0 =
    the least popular tenth of items, 9 = the most popular)."""
    order = np.argsort(item_pop, kind="stable")
    decile = np.empty(len(item_pop), np.int64)
    decile[order] = np.arange(len(item_pop)) * bins // len(item_pop)
    r = np.asarray(recs).ravel()
    counts = np.bincount(decile[r[r >= 0]], minlength=bins)  # -1 = an empty slot
    return (counts / max(1, counts.sum())).tolist()


def plot_popularity_bias(profiles: dict[str, list[float]]) -> bytes:
    """Share of recommended items per popularity decile, one line per model."""
    fig, ax = _plt().subplots(figsize=(7, 3.4))
    for j, (name, prof) in enumerate(profiles.items()):
        ax.plot(range(1, len(prof) + 1), prof, marker="o", ms=3, color=_PALETTE[j % len(_PALETTE)], label=name)
    ax.axhline(1 / 10, color="k", lw=0.8, ls="--", label="uniform")
    ax.set_xlabel("item popularity decile (1 = least popular)")
    ax.set_ylabel("share of top-20 recommendations")
    ax.set_xticks(range(1, 11))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _png(fig)


def plot_training_curves(curves: dict[str, dict[str, Any]]) -> bytes:
    """One column per model: training loss per epoch (top) and its validation metric (bottom).

    `curves[name]` = {"epoch": [...], "loss": [...], "metric": name or None, "valid": [...]}.
    Each model has its own axes: the losses of different objectives are not comparable.
    """
    names = list(curves)
    fig, axes = _plt().subplots(2, max(1, len(names)), figsize=(3.2 * max(1, len(names)), 5.2), squeeze=False)
    for j, name in enumerate(names):
        c, col = curves[name], _PALETTE[j % len(_PALETTE)]
        top, bottom = axes[0, j], axes[1, j]
        top.plot(c["epoch"], c["loss"], marker="o", ms=3, color=col)
        top.set_title(name, fontsize=10)
        top.set_ylabel("training loss" if j == 0 else "")
        if c.get("metric") and c.get("valid"):
            bottom.plot(c["epoch"], c["valid"], marker="o", ms=3, color=col)
            bottom.set_ylabel(f"validation {c['metric']}", fontsize=8)
        else:
            bottom.text(0.5, 0.5, "no validation\n(trained on all\nknown data)", ha="center", va="center",
                        fontsize=8, color="#777", transform=bottom.transAxes)
            bottom.set_yticks([])
        bottom.set_xlabel("epoch")
        for ax in (top, bottom):
            ax.grid(alpha=0.3)
            ax.tick_params(labelsize=7)
    fig.tight_layout()
    return _png(fig)


def plot_stages(stages: dict[str, float], baselines: dict[str, float], metric: str) -> bytes:
    """Horizontal bars: `metric` after each pipeline stage, baselines as dashed vertical lines."""
    names = list(stages)
    fig, ax = _plt().subplots(figsize=(8, 0.45 * len(names) + 1.6))
    y = np.arange(len(names))[::-1]
    ax.barh(y, [stages[n] for n in names], color=_PALETTE[0], height=0.6)
    for yy, n in zip(y, names, strict=True):
        ax.text(stages[n], yy, f" {stages[n]:.4f}", va="center", fontsize=8)
    for j, (n, v) in enumerate(baselines.items()):
        ax.axvline(v, color=_PALETTE[(j + 1) % len(_PALETTE)], ls="--", lw=1.2, label=f"{n} ({v:.4f})")
    ax.set_yticks(y, names, fontsize=8)
    ax.set_xlabel(metric)
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), title="baselines", title_fontsize=7)
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
img{max-width:100%;border:1px solid #eee;margin:.5em 0}.ex{display:grid;grid-template-columns:1fr 1fr;gap:1em}
.card{border:1px solid #e3e3e3;border-radius:6px;padding:.6em 1em}.card ol{margin:.3em 0;padding-left:1.4em}
.tag{display:inline-block;font-size:11px;background:#eef;border-radius:3px;padding:0 4px;margin-left:4px;color:#335}
figure{margin:.5em 0}figcaption{color:#555;font-size:13px}.hit{background:#e5f6e5}
code{background:#f4f4f4;padding:1px 4px;border-radius:3px}.note{color:#555;font-size:13px}
table.trace td,table.trace th{text-align:left;vertical-align:top}table.trace td.num{text-align:right}
"""


def _esc(x: Any) -> str:
    return html.escape(str(x))


def metrics_table(rows: dict[str, dict[str, float]], keys: list[str], best: str | None = None,
                  extra: dict[str, dict[str, str]] | None = None) -> str:
    """An HTML table: one row per model, one column per metric (4 decimals)."""
    extra = extra or {}
    extra_cols = sorted({k for v in extra.values() for k in v})
    head = "".join(f"<th>{_esc(k)}</th>" for k in ["model", *keys, *extra_cols])
    body = []
    for name, m in rows.items():
        cls = ' class="best"' if name == best else ""
        cells = "".join(f"<td>{m[k]:.4f}</td>" if k in m else "<td>-</td>" for k in keys)
        cells += "".join(f"<td>{_esc(extra.get(name, {}).get(k, ''))}</td>" for k in extra_cols)
        body.append(f"<tr{cls}><td>{_esc(name)}</td>{cells}</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def render_html(title: str, subtitle: str, sections: list[tuple[str, str]]) -> str:
    """A self-contained page from (heading, inner HTML) sections."""
    parts = [f"<h2>{_esc(h)}</h2>\n{body}" for h, body in sections]
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{_esc(title)}</title>"
            f"<style>{_CSS}</style></head><body><h1>{_esc(title)}</h1><p class='sub'>{_esc(subtitle)}</p>"
            + "\n".join(parts) + "</body></html>")


def img_tag(png: bytes, alt: str) -> str:
    return f"<img alt='{_esc(alt)}' src='data:image/png;base64,{base64.b64encode(png).decode()}'/>"


def write_figures(out: Path, figures: dict[str, bytes]) -> dict[str, str]:
    """Write each PNG to `out/figures/NAME.png`; returns name -> relative path."""
    d = out / "figures"
    d.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, png in figures.items():
        (d / f"{name}.png").write_bytes(png)
        paths[name] = f"figures/{name}.png"
    return paths
