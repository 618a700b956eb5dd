"""The `recstack` command line. Flags map onto the config dataclasses; results go to stdout."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
import yaml
from rich.table import Table
from typer.core import TyperGroup

from recstack import __version__
from recstack.data.errors import DataError
from recstack.optional import extra_of
from recstack.progress import console


class _Commands(TyperGroup):
    """A command group that turns a missing optional package into one line naming the command
    and the extra to install (`recstack serve needs the 'serve' extra: pip install
    "recstack[serve]"`), exit status 2, instead of a traceback."""

    def invoke(self, ctx: typer.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ImportError as e:
            missing = extra_of(e)
            if missing is None:
                raise
            words, c = [ctx.invoked_subcommand or ""], ctx
            while c.parent is not None:
                words.insert(0, c.info_name or "")
                c = c.parent
            _fail(missing.for_command(" ".join(["recstack", *words]).strip()))


app = typer.Typer(help="recstack: deep-learning recommender systems.", no_args_is_help=True,
                  pretty_exceptions_enable=False, cls=_Commands)
data_app = typer.Typer(help="Inspect and prepare data sets.", no_args_is_help=True, cls=_Commands)
app.add_typer(data_app, name="data")
index_app = typer.Typer(help="Vector indexes for retrieval.", no_args_is_help=True, cls=_Commands)
app.add_typer(index_app, name="index")


def _print_version(value: bool) -> None:
    if value:
        print(f"recstack {__version__}")
        raise typer.Exit()


@app.callback()
def _root(ctx: typer.Context,
          version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True,
                                                help="print the version and exit")] = False,
          quiet: Annotated[bool, typer.Option("--quiet", "-q", help="on stderr: warnings and errors only (no progress, no tables)")] = False,
          verbose: Annotated[int, typer.Option("--verbose", "-v", count=True, help="on stderr: debug records too")] = 0) -> None:
    """recstack: deep-learning recommender systems."""
    _setup_output(ctx, -1 if quiet else verbose)

SPEC_HELP = ("data spec FORMAT:PATH, e.g. embedded, movielens:DIR, atomic:DIR, lightgcn:DIR, "
             "s3rec:FILE, sasrec:FILE, csv:FILE, parquet:FILE, split:DIR (a prepared split)")


def parse_sets(pairs: list[str] | None) -> dict[str, Any]:
    """`key=value` strings -> dict; values parsed as YAML scalars (numbers, booleans, lists)."""
    out: dict[str, Any] = {}
    for p in pairs or []:
        if "=" not in p:
            raise typer.BadParameter(f"--set expects key=value, got '{p}'")
        k, v = p.split("=", 1)
        out[k.strip()] = yaml.safe_load(v)
    return out


def _fail(err: Exception | str) -> NoReturn:
    """Print `err` as one line on stderr (never wrapped, brackets in it shown, not read as
    markup) and exit with status 2."""
    from rich.markup import escape

    console.print(f"[red]error:[/red] {escape(str(err))}", soft_wrap=True)
    raise typer.Exit(code=2)


_log = logging.getLogger(__name__)
_shown = {"tables": True}


def _setup_output(ctx: typer.Context, verbosity: int) -> None:
    """Render recstack's log records on stderr for this command (Rich and live progress bars on a
    terminal, plain lines otherwise; see recstack.progress.setup_logging), undone when it ends."""
    from recstack.progress import setup_logging

    restore = setup_logging(verbosity)
    _shown["tables"] = verbosity >= 0

    def undo() -> None:
        restore()
        _shown["tables"] = True

    ctx.call_on_close(undo)


def _show(renderable: Any) -> None:
    """A table for people, on stderr (not with --quiet); stdout carries the JSON result only."""
    if _shown["tables"]:
        console.print(renderable)


def _emit(result: Any) -> None:
    """Print a command's result line: strict JSON, a non-finite number (NaN, inf) written as null
    with a warning on stderr (``NaN`` is not JSON: consumers of the line would fail on it)."""
    from recstack.workflow.output import strict_json

    print(strict_json(result, warn=_log.warning))


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
    _show(table)
    for line in data.log:
        _log.info("%s", line)
    _emit(info)


@data_app.command("prepare")
def data_prepare(
    spec: Annotated[str, typer.Argument(help=SPEC_HELP)],
    out: Annotated[Path, typer.Option(help="output directory (Parquet files)")],
    split: Annotated[str, typer.Option(help="loo | temporal | ratio | given")] = "loo",
    implicit_threshold: Annotated[float | None, typer.Option(help="keep ratings >= this")] = None,
    kcore: Annotated[int, typer.Option(help="iterative k-core for users and items (0 = off)")] = 0,
    dedup: Annotated[bool, typer.Option(help="merge duplicate (user, item) pairs")] = False,
    seed: Annotated[int, typer.Option()] = 0,
    streaming: Annotated[bool, typer.Option(help="out of core (Polars streaming) for csv:/parquet: files larger than memory; loo and kcore only")] = False,
) -> None:
    """Load, transform and split a data set; write Parquet files plus split.json."""
    if streaming:  # never holds the interactions in memory
        from recstack.data.streaming import prepare_spec

        if implicit_threshold is not None or dedup:
            _fail(ValueError("--streaming does not support --implicit-threshold or --dedup"))
        try:
            summary = prepare_spec(spec, out, split, kcore, log=_log.info)
        except (DataError, ValueError, OSError) as e:
            _fail(e)
        from recstack.workflow.output import add_peak_rss

        _emit(add_peak_rss(summary))
        return
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
        _log.info("%s", line)
    summary = {
        "out": str(out), "protocol": sp.protocol, "train": len(sp.train),
        "valid": len(sp.valid) if sp.valid is not None else 0, "test": len(sp.test),
        "users": data.n_users, "items": data.n_items,
    }
    from recstack.workflow.output import add_peak_rss

    _emit(add_peak_rss(summary))


@app.command()
def train(
    model: Annotated[str | None, typer.Option(help="model name, e.g. pop, itemknn, ease; ranking (CTR) models such as deepfm report test AUC / LogLoss")] = None,
    data: Annotated[str | None, typer.Option(help=SPEC_HELP)] = None,
    config: Annotated[str | None, typer.Option("--config", help="config file (YAML / JSON with ExperimentConfig keys: model, data, params, ...) or a shipped config's name, e.g. sasrec; flags given on the command line override it, --set keys override its params")] = None,
    split: Annotated[str | None, typer.Option(help="loo | temporal | ratio | given (default: the data set's standard protocol)")] = None,
    device: Annotated[str | None, typer.Option(help="auto | cpu | cuda  [default: auto]")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="hyper-parameter key=value (repeatable)")] = None,
    protocol: Annotated[str | None, typer.Option(help="named evaluation protocol: s3rec, lightgcn, loo, temporal, ratio, given-files, or <name>-keep-history (nothing excluded)  [default: the data set's standard one]")] = None,
    exclude_seen: Annotated[bool | None, typer.Option("--exclude-seen/--no-exclude-seen", help="--no-exclude-seen keeps the user's history items rankable (repeat-consumption data; the protocol becomes <name>-keep-history)  [default: history excluded]")] = None,
    ties: Annotated[str | None, typer.Option(help="tie rule of the ranking metrics: random (seeded hash of user and item) | index (lower index first)  [default: random]")] = None,
    implicit_threshold: Annotated[float | None, typer.Option(help="treat ratings >= this as interactions (others dropped)")] = None,
    seed: Annotated[int | None, typer.Option(help="[default: 0]")] = None,
    out: Annotated[str | None, typer.Option(help="directory for the model, result.json and config.json")] = None,
    refit: Annotated[bool | None, typer.Option("--refit/--no-refit", help="neural models on a split without validation part: retrain on all train data for the best epoch count  [default: refit]")] = None,
    trec_out: Annotated[str | None, typer.Option(help="directory for run.trec (the test users' top-100, or the largest k) and qrels.trec, raw ids, for trec_eval / ranx")] = None,
    nproc: Annotated[int, typer.Option("--nproc", min=1, help="data-parallel on N local processes: re-runs this command under torchrun's launcher (torch.distributed.run; gloo on CPU, one GPU each with NCCL); see docs/scaling.md")] = 1,
) -> None:
    """Train a model, evaluate it with the standard protocol; LAST stdout line is JSON.

    With --config FILE the file gives the experiment (model, data, params, ...); precedence:
    command-line flags > --set key=value (per hyper-parameter) > the file > built-in defaults.
    """
    import os

    if nproc > 1 and int(os.environ.get("WORLD_SIZE", "1")) <= 1:  # not yet a torchrun worker
        from recstack.distributed.launch import relaunch, strip_option

        raise typer.Exit(relaunch(nproc, strip_option(sys.argv[1:], "--nproc")))
    from recstack.configs import ConfigError
    from recstack.distributed import init_from_env, is_main
    from recstack.workflow.config import experiment_config, load_experiment
    from recstack.workflow.experiment import run_experiment
    from recstack.workflow.output import check_writable_dir

    flags = {"model": model, "data": data, "split": split, "device": device, "protocol": protocol,
             "exclude_seen": exclude_seen, "ties": ties,
             "implicit_threshold": implicit_threshold, "seed": seed, "out": out, "refit": refit,
             "trec_out": trec_out}
    try:
        sets = parse_sets(set_)
        if config is not None:
            cfg = load_experiment(config, overrides=flags, params=sets)
        elif model is None or data is None:
            raise ConfigError("give --model and --data, or --config FILE")
        else:
            cfg = experiment_config({}, "command line", overrides=flags, params=sets)
        if cfg.out:  # before any work, not after training
            check_writable_dir(cfg.out)
    except (ConfigError, typer.BadParameter, ValueError) as e:
        _fail(e)
    cfg.device = init_from_env(cfg.device)  # under torchrun: join the job, DDP in the Trainer
    if not is_main():
        cfg.out = cfg.trec_out = None
    try:
        result = run_experiment(cfg)
    except (DataError, ValueError) as e:
        _fail(e)
    table = Table(title=f"{cfg.model} on {cfg.data}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for k, v in result["metrics"].items():
        table.add_row(k, f"{v:.4f}")
    _show(table)
    proto = result["protocol"]
    _log.info("%s; train %ss, eval %ss on %s", proto["description"] if isinstance(proto, dict) else proto,
             result["train_seconds"], result["eval_seconds"], result["device"])
    if is_main():  # one JSON line per job
        _emit(result)


def _read_grid(file: str) -> Any:
    """A grid file: YAML/JSON mapping of key -> values, or a list of such mappings."""
    from recstack.configs import ConfigError

    p = Path(file)
    try:
        raw = json.loads(p.read_text()) if p.suffix == ".json" else yaml.safe_load(p.read_text())
    except (OSError, json.JSONDecodeError, yaml.YAMLError) as e:
        raise ConfigError(f"{p}: cannot read the grid: {e}") from None
    if not isinstance(raw, dict | list) or (isinstance(raw, list) and not all(isinstance(g, dict) for g in raw)):
        raise ConfigError(f"{p}: a grid is a mapping of key -> list of values, or a list of such mappings")
    return raw


@app.command()
def tune(
    model: Annotated[str | None, typer.Option(help="model name (retrieval or sequential)")] = None,
    data: Annotated[str | None, typer.Option(help=SPEC_HELP)] = None,
    config: Annotated[str | None, typer.Option("--config", help="config file or shipped config name (as for train): the settings every grid point shares")] = None,
    grid: Annotated[list[str] | None, typer.Option("--grid", help="key=[v1,v2,...] values to search (repeatable; the Cartesian product is tried)")] = None,
    grid_file: Annotated[str | None, typer.Option(help="YAML/JSON file: a mapping key -> list of values, or a list of such mappings (the union of their products)")] = None,
    metric: Annotated[str, typer.Option(help="validation metric that selects")] = "ndcg@20",
    holdout_frac: Annotated[float, typer.Option(help="share of each user's training interactions held out as validation data when the split has none (given splits)")] = 0.2,
    device: Annotated[str | None, typer.Option(help="auto | cpu | cuda  [default: auto]")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="hyper-parameter key=value shared by every point (repeatable)")] = None,
    seed: Annotated[int | None, typer.Option(help="[default: 0]")] = None,
    log: Annotated[str | None, typer.Option(help="write one JSON line per candidate, the choice and the test result to this file")] = None,
    no_test: Annotated[bool, typer.Option("--no-test", help="stop after the choice: never read the test set")] = False,
    jobs: Annotated[int, typer.Option(help="grid points fitted at once, one process each (sharing the device)")] = 1,
) -> None:
    """Grid search on validation data only; the chosen setting is then scored on test once.

    Validation data is the split's validation part, or a holdout of each user's training
    interactions where the split has none. LAST stdout line: JSON with "selected_on":
    "validation", every candidate with its validation figures, and the test figures.
    """
    from recstack.configs import ConfigError
    from recstack.workflow.config import check_model_params, experiment_config, load_experiment
    from recstack.workflow.tuning import grid_points
    from recstack.workflow.tuning import tune as run_tune

    flags = {"model": model, "data": data, "device": device, "seed": seed}
    try:
        sets = parse_sets(set_)
        space: Any = {}
        if grid_file:
            space = _read_grid(grid_file)
        if grid:
            if isinstance(space, list):
                raise ConfigError("--grid cannot be combined with a grid file that lists several grids")
            space = {**space, **parse_sets(grid)}
        if not space:
            raise ConfigError("give the values to search with --grid key=[v1,v2] or --grid-file FILE")
        if config is not None:
            cfg = load_experiment(config, overrides=flags, params=sets)
        elif model is None or data is None:
            raise ConfigError("give --model and --data, or --config FILE")
        else:
            cfg = experiment_config({}, "command line", overrides=flags, params=sets)
        from recstack.models.registry import entry

        if entry(cfg.model).task == "ctr":
            raise ConfigError(f"tune: '{cfg.model}' is a ranking (CTR) model; tune retrieval and "
                              "sequential models (CTR models: recstack.workflow.ctr.compare_ctr_models)")
        if not 0.0 < holdout_frac < 1.0:
            raise ConfigError(f"--holdout-frac must be in (0, 1), got {holdout_frac}")
        points = grid_points(space)
        for point in points:  # every point checked before any data is read
            check_model_params(cfg.model, {**cfg.params, **point}, "--grid")
    except (ConfigError, typer.BadParameter, ValueError) as e:
        _fail(e)
    try:
        sink = open(log, "w") if log else None  # noqa: SIM115 (closed below)
    except OSError as e:
        _fail(ValueError(f"--log {log}: cannot write there ({e.strerror or e})"))

    def emit(row: dict[str, Any]) -> None:
        _log.info("%s", json.dumps(row))
        if sink:
            sink.write(json.dumps(row) + "\n")
            sink.flush()

    try:
        result = run_tune(cfg, space, metric=metric, holdout_frac=holdout_frac, run_test=not no_test,
                          jobs=jobs, log=emit)
    except (DataError, ValueError) as e:
        _fail(e)
    finally:
        if sink:
            sink.close()
    _emit(result)


@app.command()
def models(
    show: Annotated[str | None, typer.Option("--show", help="print one model's hyper-parameters: type, range, default")] = None,
    task: Annotated[str | None, typer.Option(help="list one task only: retrieval, sequential or ctr")] = None,
) -> None:
    """List every model by task with a one-line summary (or one model's hyper-parameters)."""
    from recstack.models.registry import TASKS, entries, entry, model_class

    try:
        if show is not None:
            e = entry(show)
            print(f"{e.name} ({e.task}): {e.summary}")
            for spec in model_class(e.name).param_specs().values():
                print(f"  {spec.describe()}")
            return
        listed = entries(task)
    except ValueError as err:
        _fail(err)
    for t, text in TASKS.items():
        group = [e for e in listed if e.task == t]
        if not group:
            continue
        print(f"{t}: {text}")
        for e in group:
            print(f"  {e.name:14s} {e.summary}")


@app.command()
def quickstart(
    out: Annotated[Path, typer.Option(help="output directory")] = Path("recstack-out/quickstart"),
    device: Annotated[str, typer.Option(help="auto | cpu | cuda")] = "auto",
    fast: Annotated[bool, typer.Option("--fast", help="one epoch per model, pipeline on 60 users: a smoke test")] = False,
    threads: Annotated[int, typer.Option(help="torch CPU threads (0 = the cores other processes leave idle)")] = 0,
    index: Annotated[str, typer.Option(help="the bundle's item index: hnsw (Faiss) | exact (brute force)")] = "hnsw",
    report: Annotated[bool, typer.Option("--report/--no-report", help="write report.html and its figures (matplotlib)")] = True,
) -> None:
    """The main job: the whole stack on the embedded MovieLens data, no network needed.

    Baselines, two-tower, SASRec and a CTR ranker trained and evaluated; the four-stage pipeline
    evaluated stage by stage; an HTML report and a serving bundle written (`recstack serve` it).
    """
    from recstack.workflow.config import check_device
    from recstack.workflow.output import check_writable_dir
    from recstack.workflow.quickstart import run_quickstart, summary_tables

    try:
        check_device(device)
        check_writable_dir(out)
        summary = run_quickstart(out=out, device=device, fast=fast, threads=threads or None,
                                 index=index, report=report)
    except ValueError as e:
        _fail(e)
    for table in summary_tables(summary):
        _show(table)
    headline = ("ndcg@10", "hr@10", "recall@20")
    metrics = {n: {k: round(m["metrics"][k], 6) for k in headline} for n, m in summary["models"].items()}
    devices = {n: m.get("device") for n, m in summary["models"].items() if m.get("device")}
    devices |= {f"{n} (ctr)": m["device"] for n, m in summary["ctr"]["models"].items()}
    devices |= {f"pipeline {n}": summary.get("bundle_device") for n in ("coarse_ctr", "fine_ctr")}
    _emit({"out": summary["out"], "protocol": summary["protocol"],
           "metrics": metrics, "device": summary["device"], "devices": devices,
           "report": summary["report"], "bundle": summary["bundle"], "seconds": summary["seconds"]})


def _ints(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise typer.BadParameter(f"expected comma-separated integers, got '{text}'") from None


@index_app.command("bench")
def index_bench(
    n_items: Annotated[int, typer.Option(help="catalogue size")] = 100_000,
    dim: Annotated[int, typer.Option(help="vector dimension")] = 64,
    n_queries: Annotated[int, typer.Option(help="queries (recall and latency)")] = 1000,
    k: Annotated[int, typer.Option(help="neighbours per query (recall@K)")] = 100,
    kinds: Annotated[str, typer.Option(help="comma-separated: flat, ivf_flat, hnsw, ivf_pq")] = "hnsw,ivf_flat,ivf_pq",
    clusters: Annotated[int, typer.Option(help="Gaussian clusters in the synthetic catalogue")] = 1000,
    hnsw_m: Annotated[int, typer.Option(help="HNSW M")] = 32,
    ef_construction: Annotated[int, typer.Option(help="HNSW efConstruction")] = 200,
    ef_search: Annotated[str, typer.Option(help="HNSW efSearch values to sweep")] = "64,128,256",
    nlist: Annotated[int, typer.Option(help="IVF cells")] = 1024,
    nprobe: Annotated[str, typer.Option(help="IVF nprobe values to sweep")] = "16,64",
    pq_m: Annotated[int, typer.Option(help="PQ sub-quantisers")] = 16,
    exact_queries: Annotated[int, typer.Option(help="queries timed for exact search")] = 100,
    threads: Annotated[int | None, typer.Option(help="torch / Faiss threads (default: all cores)")] = None,
    seed: Annotated[int, typer.Option()] = 0,
    out: Annotated[Path | None, typer.Option(help="write the result JSON here too")] = None,
) -> None:
    """Recall@K against exact search and single-query latency of each index kind on a synthetic
    clustered catalogue; LAST stdout line is JSON."""
    from recstack.index.bench import run_bench
    from recstack.index.config import IndexConfig

    if threads is not None:
        import faiss
        import torch

        torch.set_num_threads(threads)
        faiss.omp_set_num_threads(threads)
    try:
        for name, value in (("--n-items", n_items), ("--dim", dim), ("--n-queries", n_queries), ("--k", k)):
            if value < 1:
                raise ValueError(f"{name} must be at least 1, got {value}")
        if k > n_items:
            raise ValueError(f"--k {k:,} is larger than the catalogue (--n-items {n_items:,})")
        base = IndexConfig(hnsw_m=hnsw_m, ef_construction=ef_construction, nlist=nlist, pq_m=pq_m)
        result = run_bench(n_items, dim, n_queries, k, [x.strip() for x in kinds.split(",") if x.strip()],
                           clusters, base, {"ef_search": _ints(ef_search), "nprobe": _ints(nprobe)},
                           exact_queries, seed, log=_log.info)
    except ValueError as e:
        _fail(e)
    table = Table(title=f"recall@{k} and latency, {n_items:,} x {dim}")
    for c in ("kind", "params", "build s", f"recall@{k}", "ms p50", "ms p99", "x exact"):
        table.add_column(c)
    for r in result["rows"]:
        table.add_row(r["kind"], json.dumps(r["params"]), f"{r['build_seconds']:.1f}", f"{r['recall']:.4f}",
                      f"{r['latency_ms_p50']:.3f}", f"{r['latency_ms_p99']:.3f}", str(r["speedup_vs_exact"]))
    _show(table)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2))
    _emit(result)


@app.command("export")
def export_cmd(
    out: Annotated[Path, typer.Argument(help="bundle directory to write")],
    data: Annotated[str | None, typer.Option(help=SPEC_HELP + " (overrides the recipe)")] = None,
    recipe: Annotated[Path | None, typer.Option(help="export recipe (JSON / YAML), see ExportRecipe")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="recipe override key=value; dotted keys reach nested options, e.g. two_tower.epochs=3")] = None,
    holdout: Annotated[bool, typer.Option("--holdout/--no-holdout", help="fit on the leave-one-out history only (for offline evaluation)")] = False,
    version: Annotated[str | None, typer.Option(help="bundle version label (default: UTC timestamp)")] = None,
    overwrite: Annotated[bool, typer.Option(help="replace an existing bundle at OUT")] = False,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda: where the bundle's models train (it is served on the CPU)")] = "auto",
) -> None:
    """Train the serving stack (two-tower + index, item-to-item, transitions, EASE) and write a
    bundle; LAST stdout line is JSON."""
    from recstack.serving.bundle import read_manifest
    from recstack.workflow.config import check_device
    from recstack.workflow.export import ExportRecipe, export_bundle, recipe_with_overrides

    try:
        check_device(device)
        base = ExportRecipe.load(recipe) if recipe else ExportRecipe()
        r = recipe_with_overrides(base, {**parse_sets(set_), **({"data": data} if data else {}),
                                         **({"holdout": True} if holdout else {})})
        path = export_bundle(r, out, version=version, overwrite=overwrite,
                             log=_log.info, device=device)
    except (DataError, ValueError, FileExistsError) as e:
        _fail(e)
    m = read_manifest(path, verify=False)
    _emit({"bundle": str(path), "version": m["version"], "files": len(m["files"]),
           "train_seconds": m["info"].get("train_seconds", {}), "device": m["info"].get("device")})


@app.command("serve")
def serve_cmd(
    bundle: Annotated[Path | None, typer.Argument(help="bundle directory (or a symlink to one); omit with --abtest / --variant")] = None,
    host: Annotated[str, typer.Option(help="bind address")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port")] = 8000,
    admin_token: Annotated[str | None, typer.Option(envvar="RECSTACK_ADMIN_TOKEN", help="enables POST /admin/reload (hot swap)")] = None,
    threads: Annotated[int, typer.Option(help="compute threads per process")] = 1,
    verify: Annotated[bool, typer.Option("--verify/--no-verify", help="check bundle file hashes on load")] = True,
    log_level: Annotated[str, typer.Option(help="uvicorn log level")] = "warning",
    abtest: Annotated[Path | None, typer.Option(help="A/B test config (JSON / YAML: name, salt, control, variants [{name, bundle, weight}])")] = None,
    variant: Annotated[list[str] | None, typer.Option(help="A/B variant name=PATH[:weight] (repeatable; instead of --abtest)")] = None,
    abtest_name: Annotated[str, typer.Option(help="A/B test name (and hash salt) with --variant")] = "ab",
    salt: Annotated[str | None, typer.Option(help="hash salt with --variant (default: the A/B test name)")] = None,
    event_log: Annotated[Path | None, typer.Option(help="JSON-lines event log: one line per impression and per feedback")] = None,
    bundle_root: Annotated[list[Path] | None, typer.Option(help="directory POST /admin/reload may load bundles from (repeatable; default: the served bundle's parent directory)")] = None,
    max_body_bytes: Annotated[int, typer.Option(min=1, help="largest request body accepted (larger: 413)")] = 1 << 20,
    deadline_ms: Annotated[float, typer.Option(min=0, help="latency budget of a /recommend request from its arrival, queueing included: past it the pipeline skips its costliest stages or sheds with a 503 (0 = no deadline)")] = 200.0,
    max_batch: Annotated[int, typer.Option(min=1, help="dynamic micro-batching: at most this many concurrent /recommend requests share one pipeline call (1 = no batching)")] = 32,
    batch_wait_ms: Annotated[float, typer.Option(min=0, help="how long a batch is held open for more requests (0: it takes what has queued)")] = 0.0,
    plan_fraction: Annotated[float, typer.Option(min=0.05, max=1.0, help="the pipeline plans to be done by this fraction of the deadline (the rest is headroom)")] = 0.5,
) -> None:
    """Serve a bundle, or an A/B experiment over several bundles, over HTTP (FastAPI + uvicorn)
    until SIGINT / SIGTERM (graceful)."""
    from recstack.serving.abtest import ABTestConfig, parse_variant
    from recstack.serving.app import ServiceSettings
    from recstack.serving.server import serve

    try:
        if sum(x is not None and x != [] for x in (bundle, abtest, variant)) != 1:
            raise ValueError("give exactly one of BUNDLE, --abtest or --variant")
        exp = None
        if abtest is not None:
            exp = ABTestConfig.load(abtest)
        elif variant:
            exp = ABTestConfig(name=abtest_name, variants=[parse_variant(v) for v in variant], salt=salt)
    except (ValueError, OSError) as e:
        _fail(e)
    if exp is None:
        _log.info("serving %s on http://%s:%s (docs at /docs)", bundle, host, port)
    else:
        split = ", ".join(f"{v.name}={v.bundle} ({exp.shares[v.name]:.0%})" for v in exp.variants)
        _log.info("serving experiment %s: %s on http://%s:%s (docs at /docs)", exp.name, split, host, port)
    serve(bundle, host, port, ServiceSettings(admin_token=admin_token, verify_bundle=verify, event_log=event_log,
                                                    bundle_roots=tuple(bundle_root) if bundle_root else None,
                                                    max_body_bytes=max_body_bytes,
                                                    deadline_ms=deadline_ms or None, max_batch=max_batch,
                                                    batch_wait_ms=batch_wait_ms, plan_fraction=plan_fraction),
          threads=threads, log_level=log_level, experiment=exp)


@app.command("loadtest")
def loadtest_cmd(
    url: Annotated[str, typer.Argument(help="service base URL (loopback only), e.g. http://127.0.0.1:8000")],
    bundle: Annotated[Path | None, typer.Option(help="draw request bodies from this bundle's ids")] = None,
    payloads: Annotated[Path | None, typer.Option(help="JSON-lines file of request bodies")] = None,
    rate: Annotated[float, typer.Option(help="requests per second (open loop)")] = 100.0,
    duration: Annotated[float, typer.Option(help="seconds (at most 600)")] = 30.0,
    requests: Annotated[int, typer.Option(help="request cap")] = 100_000,
    concurrency: Annotated[int, typer.Option(help="requests in flight at most")] = 64,
    k: Annotated[int, typer.Option(help="k of generated requests")] = 10,
    swap_at: Annotated[float | None, typer.Option(help="hot swap after this many seconds")] = None,
    swap_to: Annotated[Path | None, typer.Option(help="bundle to swap to (default: reload the served path)")] = None,
    admin_token: Annotated[str | None, typer.Option(envvar="RECSTACK_ADMIN_TOKEN", help="admin token for the swap")] = None,
    out: Annotated[Path | None, typer.Option(help="write the report JSON here too")] = None,
) -> None:
    """Fixed-rate load against POST /recommend: QPS, p50 / p95 / p99, errors; LAST stdout line is
    JSON; exit code 1 when any request (or the swap) failed."""
    import os

    from recstack.serving.loadtest import bundle_payloads, read_payloads, run_loadtest

    try:
        if (bundle is None) == (payloads is None):
            raise ValueError("give exactly one of --bundle or --payloads")
        bodies = bundle_payloads(bundle, k=k) if bundle else read_payloads(payloads)
        swap = {"at": swap_at, "path": swap_to, "token": admin_token} if swap_at is not None else None
        load_before = os.getloadavg()
        rep = run_loadtest(url, bodies, rate, duration, requests, concurrency=concurrency, swap=swap)
    except (ValueError, OSError) as e:
        _fail(e)
    result = rep.to_dict() | {"loadavg_before": list(load_before), "loadavg_after": list(os.getloadavg())}
    lat = rep.latency_ms
    _log.info(f"{rep.sent} requests in {rep.duration_s:.1f} s: {rep.qps:.1f} QPS, p50 {lat.get('p50')} ms, "
              f"p95 {lat.get('p95')} ms, p99 {lat.get('p99')} ms, errors {rep.errors} {rep.error_kinds or ''}")
    if rep.swap is not None:
        _log.info("swap at %s s: status %s", rep.swap["at_s"], rep.swap.get("status"))
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2))
    _emit(result)
    if rep.errors or (rep.swap is not None and rep.swap.get("status") != 200):
        raise typer.Exit(code=1)


# ---- recstack abtest: A/B analysis ----------------------------------------------------------------
abtest_app = typer.Typer(help="A/B tests: analyse logs of the service.", no_args_is_help=True)
app.add_typer(abtest_app, name="abtest")


def _weights(text: str) -> dict[str, float]:
    out = {}
    for part in text.split(","):
        if not part.strip():
            continue
        if "=" not in part:
            raise typer.BadParameter(f"--expected expects name=weight pairs, got '{part}'")
        k, v = part.split("=", 1)
        try:
            out[k.strip()] = float(v)
        except ValueError:
            raise typer.BadParameter(f"--expected: weight of '{k}' is not a number: '{v}'") from None
        if out[k.strip()] <= 0:
            raise typer.BadParameter(f"--expected: weight of '{k}' must be positive")
    return out


@abtest_app.command("analyze")
def abtest_analyze(
    log: Annotated[Path, typer.Argument(help="event log of `recstack serve --event-log` (or JSON lines {variant, reward|click})")],
    metric: Annotated[str, typer.Option(help="ctr (share of impressions with a click) | reward (summed reward per impression)")] = "ctr",
    by: Annotated[str, typer.Option(help="unit (one observation per assignment unit: user, session or anonymous request) | request")] = "unit",
    expected: Annotated[str | None, typer.Option(help="configured split for the sample-ratio check, e.g. A=0.7,B=0.3 (default: the logged shares)")] = None,
    control: Annotated[str | None, typer.Option(help="control variant (default: the first by name)")] = None,
    alpha: Annotated[float, typer.Option(help="significance level")] = 0.05,
    ips_policy: Annotated[str | None, typer.Option(help="off-policy (IPS) estimate of a policy: a variant name, or a JSON-lines file of {request_id, propensity}")] = None,
    ips_clip: Annotated[float, typer.Option(help="IPS weight clip")] = 10.0,
    out: Annotated[Path | None, typer.Option(help="write the result JSON here too")] = None,
) -> None:
    """Per-variant mean with confidence intervals, each variant against the control (Welch
    test), a sample-ratio-mismatch check (chi-square) and optional IPS; LAST stdout line is JSON."""
    from recstack.abtest.analysis import analyze, read_log, sample_ratio_mismatch
    from recstack.abtest.events import ips_from_log, is_event_log, join_events

    if metric not in ("ctr", "reward") or by not in ("unit", "request"):
        _fail(ValueError(f"--metric must be ctr or reward and --by unit or request (got {metric}, {by})"))
    if not 0 < alpha < 1:
        _fail(ValueError(f"--alpha must lie in (0, 1), got {alpha}"))
    warnings: list[str] = []
    extra: dict[str, Any] = {}
    try:
        if is_event_log(log):
            joined = join_events(log, metric, by)
            rewards, shares = joined.values, joined.shares
            extra = {"experiments": joined.experiments, "impressions": joined.impressions,
                     "outcome_sum": joined.outcome_sum, "feedback": joined.feedback,
                     "unjoined_feedback": joined.unjoined_feedback, "crossover_units": joined.crossover_units}
            if joined.unjoined_feedback:
                warnings.append(f"{joined.unjoined_feedback} of {joined.feedback} feedback events match no impression "
                                "(no or unknown request_id): not counted")
            if joined.crossover_units:
                warnings.append(f"{joined.crossover_units} assignment units appear in more than one variant "
                                "(the split changed during the run?)")
            if len(joined.experiments) > 1:
                warnings.append(f"the log mixes experiments {joined.experiments}")
        else:
            joined, by = None, "row"
            with log.open() as f:
                first = next((json.loads(line) for line in f if line.strip()), {})
            field = "click" if metric == "ctr" and "click" in first and "reward" not in first else "reward"
            rewards, shares = read_log(log, reward=field), None
        weights = _weights(expected) if expected else shares
        if weights is not None:
            unknown = sorted(set(rewards) - set(weights))
            if unknown:
                raise ValueError(f"variant(s) {unknown} in the log but not in the expected split {sorted(weights)}")
        res = analyze(rewards, control=control, weights={v: weights[v] for v in rewards} if weights else None,
                      alpha=alpha)
        if weights is not None:  # the check covers configured variants with no traffic at all
            names = sorted(weights)
            res["srm_p_value"] = sample_ratio_mismatch([len(rewards.get(v, ())) for v in names],
                                                       [weights[v] for v in names])
            res["srm_warning"] = res["srm_p_value"] < 1e-3
        if ips_policy is not None:
            if joined is None:
                raise ValueError("--ips-policy needs the service's event log (propensities per request)")
            res["ips"] = ips_from_log(joined, ips_policy, clip=ips_clip)
    except (DataError, ValueError, OSError) as e:
        _fail(e)
    counts = {v["variant"]: v["n"] for v in res["variants"]}
    total = sum(counts.values())
    exp_share = ({v: weights[v] / sum(weights.values()) for v in weights} if weights
                 else {v: 1 / len(counts) for v in counts})
    if res["srm_warning"]:
        obs = ", ".join(f"{v} {counts.get(v, 0) / total:.4f} (expected {exp_share[v]:.4f})" for v in sorted(exp_share))
        warnings.insert(0, f"SAMPLE RATIO MISMATCH: chi-square p = {res['srm_p_value']:.2e}; observed shares {obs}. "
                           "The assignment or the logging is broken: do not trust the comparison.")
    result = {"log": str(log), "metric": metric, "by": by, "alpha": alpha, **res, "expected_shares": exp_share,
              **extra, "warnings": warnings}
    table = Table(title=f"{metric} by {by} ({log.name})")
    for c in ("variant", "n", "share", "mean", f"{1 - alpha:.0%} CI", "diff vs control", "lift", "p-value"):
        table.add_column(c, justify="right")
    for vs in res["variants"]:
        v = vs["variant"]
        c = res["comparisons"].get(v)
        table.add_row(v + (" (control)" if v == res["control"] else ""), f"{vs['n']:,}", f"{vs['n'] / total:.4f}",
                      f"{vs['mean']:.5f}", f"[{vs['ci_low']:.5f}, {vs['ci_high']:.5f}]",
                      "" if c is None else f"{c['diff']:+.5f} [{c['ci_low']:+.5f}, {c['ci_high']:+.5f}]",
                      "" if c is None else f"{c['lift']:+.2%}",
                      "" if c is None else f"{c['p_value']:.4g}" + (" *" if c["significant"] else ""))
    _show(table)
    _log.info(f"sample-ratio check: chi-square p = {res['srm_p_value']:.4g} against "
              + ", ".join(f"{v}={s:.4f}" for v, s in sorted(exp_share.items())))
    if "ips" in res:
        i = res["ips"]
        _log.info(f"IPS estimate of policy {i['policy']}: {i['ips']:.5f} +- {i['ips_se']:.5f} "
                  f"(SNIPS {i['snips']:.5f}, clip {i['clip']}, clipped {i['clipped_share']:.2%})")
    for w in warnings:
        _log.warning("%s", w)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2))
    _emit(result)


# ---- model export (ONNX / torch.export) ----------------------------------------------------------
@app.command("export-model")
def export_model_cmd(
    run_dir: Annotated[Path, typer.Argument(help="what `recstack train --out DIR` wrote (its model/ is read), or a saved model directory")],
    format: Annotated[str, typer.Option("--format", help="onnx | torch_export")] = "onnx",
    out: Annotated[Path | None, typer.Option(help="directory to write the exported parts and manifest.json to")] = None,
    part: Annotated[list[str] | None, typer.Option("--part", help="part to export (repeatable): user_tower, item_tower, encoder or ranker  [default: all of the model's]")] = None,
    verify: Annotated[bool, typer.Option("--verify/--no-verify", help="run each exported part and compare with PyTorch (max abs diff <= 1e-5)")] = True,
) -> None:
    """Export a trained model's towers / sequence encoder / ranker to ONNX or torch.export,
    checked against PyTorch; LAST stdout line is JSON."""
    from recstack.export import ExportError, export_model
    from recstack.models.loading import load_model

    try:
        if out is None:
            raise ValueError("give --out DIR")
        model_dir = run_dir / "model" if (run_dir / "model" / "config.json").is_file() else run_dir
        model = load_model(model_dir, device="cpu")
        manifest = export_model(model, out, format=format, parts=part, verify=verify)
    except (ExportError, ValueError, OSError) as e:  # a missing extra: the group's one line
        _fail(e)
    _emit({"out": str(out), "model": manifest["model"], "format": format,
           "parts": {k: v["file"] for k, v in manifest["parts"].items()},
           "max_abs_diff": {k: max(v["verified"]["max_abs_diff"].values()) for k, v in manifest["parts"].items()
                            if "verified" in v}})


def main() -> None:  # pragma: no cover
    sys.exit(app())


if __name__ == "__main__":  # pragma: no cover
    main()

