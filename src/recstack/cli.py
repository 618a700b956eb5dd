"""The `recstack` command line. Flags map onto the config dataclasses; results go to stdout."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.table import Table

from recstack.data.errors import DataError
from recstack.progress import console

app = typer.Typer(help="recstack: deep-learning recommender systems.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
data_app = typer.Typer(help="Inspect and prepare data sets.", no_args_is_help=True)
app.add_typer(data_app, name="data")

SPEC_HELP = ("data spec FORMAT:PATH, e.g. embedded, movielens:DIR, atomic:DIR, lightgcn:DIR, "
             "s3rec:FILE, sasrec:FILE, csv:FILE, parquet:FILE")


def parse_sets(pairs: list[str] | None) -> dict[str, Any]:
    """`key=value` strings -> dict; values parsed as YAML scalars (numbers, booleans, lists)."""
    out: dict[str, Any] = {}
    for p in pairs or []:
        if "=" not in p:
            raise typer.BadParameter(f"--set expects key=value, got '{p}'")
        k, v = p.split("=", 1)
        out[k.strip()] = yaml.safe_load(v)
    return out


def _fail(err: Exception) -> None:
    console.print(f"[red]error:[/red] {err}")
    raise typer.Exit(code=2)


@data_app.command("info")
def data_info(spec: Annotated[str, typer.Argument(help=SPEC_HELP)]) -> None:
    """Load a data set and print its statistics (last stdout line: JSON)."""
    from recstack.data.readers import load

    try:
        data = load(spec)
    except (DataError, ValueError) as e:
        _fail(e)
    info = data.describe()
    table = Table(title=f"{data.name} ({spec})")
    table.add_column("field")
    table.add_column("value", justify="right")
    for k, v in info.items():
        table.add_row(k, f"{v:,}" if isinstance(v, int) and not isinstance(v, bool) else str(v))
    console.print(table)
    for line in data.log:
        console.print(f"[dim]{line}[/dim]")
    print(json.dumps(info))


@data_app.command("prepare")
def data_prepare(
    spec: Annotated[str, typer.Argument(help=SPEC_HELP)],
    out: Annotated[Path, typer.Option(help="output directory (Parquet files)")],
    split: Annotated[str, typer.Option(help="loo | temporal | ratio | given")] = "loo",
    implicit_threshold: Annotated[float | None, typer.Option(help="keep ratings >= this")] = None,
    kcore: Annotated[int, typer.Option(help="iterative k-core for users and items (0 = off)")] = 0,
    dedup: Annotated[bool, typer.Option(help="merge duplicate (user, item) pairs")] = False,
    seed: Annotated[int, typer.Option()] = 0,
) -> None:
    """Load, transform and split a data set; write Parquet files plus split.json."""
    from recstack.data.readers import load
    from recstack.data.transforms import deduplicate, save_split, to_implicit
    from recstack.data.transforms import kcore as kcore_fn
    from recstack.data.transforms import split as split_fn
    from recstack.progress import step

    try:
        with step(f"loading {spec}"):
            data = load(spec)
        if implicit_threshold is not None:
            data = to_implicit(data, implicit_threshold)
        if dedup:
            data = deduplicate(data)
        if kcore:
            data = kcore_fn(data, kcore, kcore)
        with step(f"splitting ({split})"):
            sp = split_fn(data, split, **({"seed": seed} if split == "ratio" else {}))
        with step(f"writing {out}"):
            save_split(sp, out)
    except (DataError, ValueError) as e:
        _fail(e)
    for line in sp.train.log:
        console.print(f"[dim]{line}[/dim]")
    summary = {
        "out": str(out), "protocol": sp.protocol, "train": len(sp.train),
        "valid": len(sp.valid) if sp.valid is not None else 0, "test": len(sp.test),
        "users": data.n_users, "items": data.n_items,
    }
    print(json.dumps(summary))


@app.command()
def train(
    model: Annotated[str, typer.Option(help="model name, e.g. pop, itemknn, ease")],
    data: Annotated[str, typer.Option(help=SPEC_HELP)],
    split: Annotated[str | None, typer.Option(help="loo | temporal | ratio | given (default: the data set's standard protocol)")] = None,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda")] = "auto",
    set_: Annotated[list[str] | None, typer.Option("--set", help="hyper-parameter key=value (repeatable)")] = None,
    exclude_seen: Annotated[bool | None, typer.Option("--exclude-seen/--no-exclude-seen", help="override the protocol's exclusion of known items")] = None,
    implicit_threshold: Annotated[float | None, typer.Option(help="treat ratings >= this as interactions (others dropped)")] = None,
    seed: Annotated[int, typer.Option()] = 0,
    out: Annotated[str | None, typer.Option(help="directory for the model, result.json and config.json")] = None,
    refit: Annotated[bool, typer.Option("--refit/--no-refit", help="neural models on a split without validation part: retrain on all train data for the best epoch count")] = True,
) -> None:
    """Train a model, evaluate it with the standard protocol; LAST stdout line is JSON."""
    from recstack.experiment import ExperimentConfig, run_experiment

    cfg = ExperimentConfig(model=model, data=data, split=split, device=device, params=parse_sets(set_),
                           exclude_seen=exclude_seen, implicit_threshold=implicit_threshold, seed=seed, out=out, refit=refit)
    try:
        result = run_experiment(cfg)
    except (DataError, ValueError) as e:
        _fail(e)
    table = Table(title=f"{model} on {data}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for k, v in result["metrics"].items():
        table.add_row(k, f"{v:.4f}")
    console.print(table)
    console.print(f"[dim]{result['protocol']}; train {result['train_seconds']}s, eval {result['eval_seconds']}s on {result['device']}[/dim]")
    print(json.dumps(result))


@app.command()
def models() -> None:
    """List the available models."""
    from recstack.models import available_models

    for name in available_models():
        print(name)


@app.command()
def quickstart(
    out: Annotated[Path, typer.Option(help="output directory")] = Path("recstack-out/quickstart"),
    device: Annotated[str, typer.Option(help="auto | cpu | cuda")] = "auto",
) -> None:
    """The main job: the whole stack on the embedded MovieLens data, no network needed."""
    from recstack.quickstart import run_quickstart

    summary = run_quickstart(out=out, device=device)
    best = summary["best_model"]
    print(json.dumps({"out": summary["out"], "best_model": best, "protocol": summary["protocol"],
                      "metrics": summary["models"][best]["metrics"], "device": summary["device"]}))


def main() -> None:  # pragma: no cover
    sys.exit(app())


if __name__ == "__main__":  # pragma: no cover
    main()
