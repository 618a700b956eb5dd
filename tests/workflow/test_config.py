"""Config files: every shipped YAML loads, names a registered model and is accepted by it;
`recstack train --config` trains from one; errors name the file and the key."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from typer.testing import CliRunner

from recstack import configs
from recstack.cli import app
from recstack.configs import ConfigError
from recstack.models.registry import model_class, model_names
from recstack.workflow.config import ExperimentConfig, experiment_config, load_experiment

ROOT = Path(__file__).resolve().parents[2]
REPO_CONFIGS = ROOT / "configs"
MODEL_FILES = sorted((REPO_CONFIGS / "models").glob("*.yaml"))
runner = CliRunner()


def last_json(output: str) -> dict:
    return json.loads(output.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def tiny_csv(tmp_path_factory):
    """60 users x 8 rated items in time order; two planted taste groups."""
    rng = np.random.default_rng(0)
    rows = []
    for u in range(60):
        base = 0 if u % 2 == 0 else 10
        for t, i in enumerate(rng.choice(10, size=8, replace=False) + base):
            rows.append((f"u{u}", f"i{i}", float(rng.integers(1, 6)), 1000 + 60 * t + u))
    path = tmp_path_factory.mktemp("cfg") / "log.csv"
    pl.DataFrame(rows, schema=["user", "item", "rating", "timestamp"], orient="row").write_csv(path)
    return path


def test_one_config_per_model_and_packaged_copies_match():
    names = {p.stem for p in MODEL_FILES}
    assert names == set(model_names())
    assert configs.names() == sorted(names)
    # configs/ at the repository root links to the files the package ships (one copy) ...
    shipped = ROOT / "src" / "recstack" / "configs"
    assert (REPO_CONFIGS / "models").resolve() == (shipped / "models").resolve()
    assert (REPO_CONFIGS / "pipeline.yaml").resolve() == (shipped / "pipeline.yaml").resolve()
    # ... and the package in use (editable, or installed from the wheel) has the same files
    assert sorted(p.name for p in (configs.CONFIG_DIR / "models").glob("*.yaml")) == [p.name for p in MODEL_FILES]
    for rel in ["pipeline.yaml", *(f"models/{p.name}" for p in MODEL_FILES)]:
        assert (configs.CONFIG_DIR / rel).read_bytes() == (REPO_CONFIGS / rel).read_bytes(), rel
    assert configs.path("sasrec") == configs.CONFIG_DIR / "models" / "sasrec.yaml"


@pytest.mark.parametrize("path", MODEL_FILES, ids=lambda p: p.stem)
def test_model_config_is_accepted_by_its_model(path):
    cfg = load_experiment(path)  # checks every key and value before any data is read
    assert isinstance(cfg, ExperimentConfig)
    assert cfg.model == path.stem and cfg.data == "embedded"


@pytest.mark.parametrize("name", model_names())
def test_model_flag_and_config_file_resolve_to_identical_parameters(name):
    """`--model X` and `--config X` build the same model: the defaults have one source."""
    from recstack.workflow.experiment import build_model

    by_flag = experiment_config({}, "command line", overrides={"model": name, "data": "embedded"})
    by_file = load_experiment(name)
    assert by_flag.params == by_file.params == {}
    a, b = build_model(by_flag).get_params(), build_model(by_file).get_params()
    assert a == b
    # ... and both are the class's own defaults
    defaults = {k: spec.default for k, spec in model_class(name).param_specs().items()}
    assert {k: v for k, v in a.items() if k != "device"} == defaults


def test_ctr_models_build_their_networks(tiny_csv):
    """Every ranking model, with its defaults, goes as far as a forward pass on a real CTR
    task's tensors."""
    from recstack.data.readers import load
    from recstack.features.pipeline import FeaturePipeline
    from recstack.models.ctr import interactions_ctr_task
    from recstack.models.registry import create_model

    task = interactions_ctr_task(load(f"csv:{tiny_csv}"))
    for name in model_names("ctr"):
        r = create_model(name, device="cpu")
        r.pipeline_ = FeaturePipeline(task.features).fit(task.train)
        r.device_ = torch.device("cpu")
        r._build()
        with torch.no_grad():
            logits = r.module_(r.examples(task.train.head(8)))
        assert logits.shape[0] == 8 and torch.isfinite(logits).all(), name


def test_pipeline_config_loads():
    from recstack.pipeline.config import PipelineConfig
    from recstack.workflow.export import ExportRecipe, default_pipeline

    recipe = ExportRecipe.load(REPO_CONFIGS / "pipeline.yaml")
    pipe = PipelineConfig.from_dict(recipe.pipeline)
    assert [s.name for s in pipe.sources][0] == "two_tower" and pipe.fine.keep == 50
    # the file spells out `recstack export`'s defaults
    assert pipe.to_dict() == PipelineConfig.from_dict(default_pipeline()).to_dict()
    assert recipe.data == "embedded" and recipe.two_tower == ExportRecipe().two_tower
    assert configs.path("pipeline") == configs.CONFIG_DIR / "pipeline.yaml"


@pytest.mark.parametrize("name", ["mf", "lr"])
def test_train_from_config_end_to_end(name, tiny_csv):
    """A retrieval and a ranking config trained through the CLI; flags and --set override."""
    res = runner.invoke(app, ["train", "--config", str(REPO_CONFIGS / "models" / f"{name}.yaml"),
                              "--data", f"csv:{tiny_csv}", "--device", "cpu", "--set", "epochs=1",
                              "--set", "progress=false"])
    assert res.exit_code == 0, res.output
    r = last_json(res.stdout)
    assert r["model"] == name and r["data"] == f"csv:{tiny_csv}" and r["device"] == "cpu"
    assert r["params"]["epochs"] == 1  # --set over the file
    assert r["params"]["lr"] == pytest.approx(0.003)  # the model's default (mf) / --set (lr)
    assert r["metrics"]


def test_flags_override_file_and_sets_merge(tmp_path):
    p = tmp_path / "exp.yaml"
    p.write_text("model: ease\ndata: embedded\nseed: 3\nsplit: loo\nparams: {l2: 100.0, max_items: 5000}\n")
    cfg = load_experiment(p, overrides={"seed": 7, "data": "csv:x.csv", "split": None},
                          params={"l2": "2e2"})
    assert (cfg.seed, cfg.data, cfg.split) == (7, "csv:x.csv", "loo")  # None = flag not given
    assert cfg.params == {"l2": 200.0, "max_items": 5000}  # "2e2" (YAML 1.1 text) -> a number
    j = tmp_path / "exp.json"
    j.write_text(json.dumps({"model": "mf", "data": "embedded", "ks": [10, 20], "params": {"dim": 32}}))
    cfg = load_experiment(j)
    assert cfg.ks == (10, 20) and cfg.params == {"dim": 32}


@pytest.mark.parametrize("text, words", [
    ("model: ease\ndata: embedded\nsplitt: loo\n", ["splitt", "did you mean 'split'"]),
    ("model: mf\ndata: embedded\nepochs: 3\n", ["epochs", "put it under params"]),
    ("model: ease\ndata: embedded\nparams: {l22: 5}\n", ["params.l22", "did you mean 'l2'"]),
    ("model: ease\ndata: embedded\nparams: {l2: abc}\n", ["params.l2", "expected a number"]),
    ("model: mf\ndata: embedded\nparams: {loss: 3}\n", ["params.loss", "expected text"]),
    ("model: sasrec\ndata: embedded\nparams: {use_attributes: 2}\n", ["params.use_attributes", "true or false"]),
    ("model: easy\ndata: embedded\n", ["model", "unknown model 'easy'", "did you mean 'ease'"]),
    ("model: ease\ndata: embedded\nsplit: random\n", ["split", "loo"]),
    ("model: ease\ndata: embedded\nks: [10, x]\n", ["ks", "positive integers"]),
    ("model: ease\n", ["missing", "data"]),
    ("- model: ease\n", ["mapping"]),
    ("model: [ease\n", ["not valid YAML"]),
])
def test_bad_config_names_file_and_key(tmp_path, text, words):
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_experiment(p)
    msg = str(e.value)
    assert msg.startswith(str(p)), msg
    for w in words:
        assert w in msg, msg


def test_cli_config_errors_exit_2(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("model: ease\ndata: embedded\nparams: {l22: 5}\n")
    res = runner.invoke(app, ["train", "--config", str(p)])
    assert res.exit_code == 2 and "l22" in res.output and "bad.yaml" in res.output
    res = runner.invoke(app, ["train", "--config", "ease", "--set", "l2=oops"])
    assert res.exit_code == 2 and "--set" in res.output and "params.l2" in res.output
    res = runner.invoke(app, ["train", "--config", str(tmp_path / "missing.yaml")])
    assert res.exit_code == 2 and "missing.yaml" in res.output
    res = runner.invoke(app, ["train", "--data", "embedded"])
    assert res.exit_code == 2 and "--config" in res.output
    # without a file, --set keys are checked the same way (unknown key of a closed-form model)
    res = runner.invoke(app, ["train", "--model", "ease", "--data", "embedded", "--set", "epochs=1"])
    assert res.exit_code == 2 and "params.epochs" in res.output


def test_experiment_config_from_mapping():
    cfg = experiment_config({"model": "itemknn", "data": "embedded", "params": {"k": 50}},
                            overrides={"device": "cpu"})
    assert cfg.device == "cpu" and cfg.params == {"k": 50}
