"""An HTML report a person would rather look at than read: tables, plots, examples.

Everything in the report is drawn from one `summary` dict (the same one written to
results.json), so the page and the JSON cannot disagree. Plots are PNGs embedded as data URIs:
the page is a single file that renders with no network and no missing images; each PNG is also
written beside it.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless: no display on servers or CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

_PALETTE = ["#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860", "#DA8BC3", "#8C8C8C",
            "#CCB974", "#64B5CD"]


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


# ---- plots (each returns PNG bytes) -----------------------------------------------------------
def plot_metrics(models: dict[str, dict[str, float]], keys: list[str]) -> bytes:
    """Grouped bars: one group per metric, one bar per model."""
    names = list(models)
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(keys)), 3.6))
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
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.4))
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
    fig, ax = plt.subplots(figsize=(6.5, 5))
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
    counts = np.bincount(decile[recs.ravel()], minlength=bins)
    return (counts / max(1, counts.sum())).tolist()


def plot_popularity_bias(profiles: dict[str, list[float]]) -> bytes:
    """Share of recommended items per popularity decile, one line per model."""
    fig, ax = plt.subplots(figsize=(7, 3.4))
    for j, (name, prof) in enumerate(profiles.items()):
        ax.plot(range(1, len(prof) + 1), prof, marker="o", ms=3, color=_PALETTE[j % len(_PALETTE)], label=name)
    ax.axhline(1 / 10, color="k", lw=0.8, ls="--", label="uniform")
    ax.set_xlabel("item popularity decile (1 = least popular)")
    ax.set_ylabel("share of top-20 recommendations")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _png(fig)


# ---- HTML ---------------------------------------------------------------------------------------
_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;max-width:1100px;color:#222}
h1{margin-bottom:0}.sub{color:#666;margin-top:.2em}
table{border-collapse:collapse;margin:.8em 0;font-size:14px}th,td{border-bottom:1px solid #ddd;padding:4px 10px;text-align:right}
th:first-child,td:first-child{text-align:left}tr.best td{font-weight:600;background:#f3f8ff}
img{max-width:100%;border:1px solid #eee;margin:.5em 0}.ex{display:grid;grid-template-columns:1fr 1fr;gap:1em}
.card{border:1px solid #e3e3e3;border-radius:6px;padding:.6em 1em}.card ol{margin:.3em 0;padding-left:1.4em}
.tag{display:inline-block;font-size:11px;background:#eef;border-radius:3px;padding:0 4px;margin-left:4px;color:#335}
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
