"""Lean core and extras: the core (train, evaluate, the CLI's core commands) imports no optional
package, and a feature whose extra is missing says so in one line naming the extra."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from typer.testing import CliRunner

from recstack.cli import app
from recstack.optional import EXTRAS, MissingExtra, extra_of, message, needs, require

runner = CliRunner()

#: every optional package (top-level import name): none may be imported by the core
OPTIONAL = sorted(EXTRAS) + ["triton"]


def _block(monkeypatch, *names: str, reload: tuple[str, ...] = ()) -> None:
    """Make `names` unimportable (as if not installed) and forget the recstack modules in
    `reload`, so that importing them again meets the missing package."""
    for name in names:
        monkeypatch.setitem(sys.modules, name, None)
    for mod in reload:
        monkeypatch.delitem(sys.modules, mod, raising=False)


def _one_line(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, text
    assert "Traceback" not in text
    return lines[0]


def test_message_names_the_extra_and_the_install_command():
    assert message("recstack serve", "serve") == \
        'recstack serve needs the \'serve\' extra: pip install "recstack[serve]"'
    err = MissingExtra("faiss", "index", "x")
    assert isinstance(err, ImportError) and err.name == "faiss"
    assert err.for_command("recstack index bench").startswith("recstack index bench needs the 'index' extra")


def test_require_and_needs(monkeypatch):
    assert require("json").dumps([1]) == "[1]"
    _block(monkeypatch, "faiss")
    with pytest.raises(MissingExtra, match=r"^Faiss needs the 'index' extra: pip install \"recstack\[index\]\"$"):
        require("faiss", what="Faiss")
    with pytest.raises(MissingExtra) as e, needs("serve", "recstack.serving"):
        import faiss  # noqa: F401
    assert e.value.extra == "serve" and str(e.value).startswith("recstack.serving needs the 'serve' extra")
    # a missing package that belongs to no extra is not turned into an extra message
    with pytest.raises(ModuleNotFoundError) as e2:
        require("recstack_no_such_module")
    assert not isinstance(e2.value, MissingExtra) and extra_of(e2.value) is None
    with pytest.raises(ModuleNotFoundError), needs("serve", "x"):
        import recstack_no_such_module  # noqa: F401


def test_serve_without_the_serve_extra_is_one_line(monkeypatch, tmp_path):
    _block(monkeypatch, "fastapi", "uvicorn",
           reload=("recstack.serving.app", "recstack.serving.server", "recstack.serving.schemas"))
    res = runner.invoke(app, ["serve", str(tmp_path)])
    assert res.exit_code == 2, res.output
    assert _one_line(res.output) == \
        'error: recstack serve needs the \'serve\' extra: pip install "recstack[serve]"'
    # from Python: the module says which extra
    with pytest.raises(MissingExtra, match="^recstack.serving needs the 'serve' extra"):
        import recstack.serving.app  # noqa: F401


def test_index_without_the_index_extra_is_one_line(monkeypatch):
    _block(monkeypatch, "faiss", reload=("recstack.index.faiss_index",))
    res = runner.invoke(app, ["index", "bench", "--n-items", "50", "--n-queries", "5", "--k", "5"])
    assert res.exit_code == 2, res.output
    assert _one_line(res.output) == \
        'error: recstack index bench needs the \'index\' extra: pip install "recstack[index]"'
    from recstack.index import build_index
    from recstack.index.config import IndexConfig

    with pytest.raises(MissingExtra, match=r"needs the 'index' extra: pip install \"recstack\[index\]\"$"):
        build_index(np.eye(8, dtype=np.float32), IndexConfig(kind="hnsw"))
    # the exact index needs no Faiss
    assert build_index(np.eye(8, dtype=np.float32), IndexConfig(kind="exact")).search(
        np.eye(8, dtype=np.float32)[:1], 1)[1][0, 0] == 0


@pytest.mark.parametrize("cmd", [["quickstart", "--fast"], ["export", "bundle", "--data", "embedded"]])
def test_commands_needing_faiss_say_so_before_any_work(monkeypatch, tmp_path, cmd):
    _block(monkeypatch, "faiss", reload=("recstack.index.faiss_index",))
    monkeypatch.chdir(tmp_path)
    res = runner.invoke(app, [*cmd, "--out", "out"] if cmd[0] == "quickstart" else cmd)
    assert res.exit_code == 2, res.output
    assert _one_line(res.output) == \
        f'error: recstack {cmd[0]} needs the \'index\' extra: pip install "recstack[index]"'
    assert not any(p.is_file() for p in tmp_path.rglob("*"))  # nothing trained, nothing written


def test_report_without_the_report_extra_is_one_line(monkeypatch):
    _block(monkeypatch, "matplotlib", "matplotlib.pyplot")
    from recstack.workflow.report import plot_metrics

    with pytest.raises(MissingExtra) as e:
        plot_metrics({"ease": {"ndcg@10": 0.1}}, ["ndcg@10"])
    assert str(e.value) == 'the HTML report needs the \'report\' extra: pip install "recstack[report]"'


# ---- the core in a fresh interpreter -------------------------------------------------------------
_BLOCKER = textwrap.dedent("""
    import sys
    BLOCKED = set(sys.argv[1].split(","))
    if sys.argv[2] == "block":  # as if not installed: `import` fails, `find_spec` finds nothing
        sys.modules.update(dict.fromkeys(BLOCKED))
""")


def _run(code: str, *args: str, block: bool = True) -> subprocess.CompletedProcess:
    script = _BLOCKER + textwrap.dedent(code)
    # pydantic: declared by the 'serve' extra, yet installed with typer in every core install
    # (typer >= 0.25 coerces parameters with it), so it is never missing there
    blocked = [m for m in OPTIONAL if not (block and m == "pydantic")]
    return subprocess.run([sys.executable, "-c", script, ",".join(blocked),
                           "block" if block else "none", *args],
                          capture_output=True, text=True, timeout=300)


def test_core_imports_no_optional_package():
    """`import recstack` and the modules behind train / evaluate / models / data info import
    none of the optional packages (checked in a fresh interpreter, nothing blocked)."""
    res = _run("""
        import json, sys
        import recstack, recstack.cli, recstack.optional
        import recstack.data.readers, recstack.data.transforms, recstack.evaluation
        import recstack.models, recstack.models.registry, recstack.training.trainer
        import recstack.workflow.config, recstack.workflow.experiment, recstack.workflow.tuning
        print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)))
    """, block=False)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout.strip().splitlines()[-1]) == []


def test_core_commands_work_without_any_extra(tmp_path):
    """With every optional package unimportable: --help, --version, models, data info and
    train (EASE on the embedded data) work; serve says which extra it needs."""
    res = _run("""
        import json, sys
        from typer.testing import CliRunner
        from recstack.cli import app

        out = {}
        r = CliRunner()
        for args in (["--help"], ["--version"], ["models"], ["data", "info", "embedded"],
                     ["train", "--model", "pop", "--data", "embedded", "--device", "cpu"],
                     ["serve", sys.argv[3]]):
            res = r.invoke(app, args)
            out[args[0] if args[0] != "data" else "data info"] = [res.exit_code, res.output.strip().splitlines()[-1:], repr(res.exception)]
        print(json.dumps(out))
    """, str(tmp_path))
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout.strip().splitlines()[-1])
    for cmd in ("--help", "--version", "models", "data info", "train"):
        assert out[cmd][0] == 0, (cmd, out[cmd])
    assert out["--version"][1] == [f"recstack {__import__('recstack').__version__}"]
    assert json.loads(out["train"][1][0])["metrics"]
    assert out["serve"][:2] == [2, ['error: recstack serve needs the \'serve\' extra: pip install "recstack[serve]"']]
