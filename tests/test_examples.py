"""Every script in examples/ runs to completion: each ``examples/*.py`` is discovered (new
examples are picked up without editing this file) and run in a subprocess with this Python; it
must exit 0 within ``TIMEOUT_S``.

Optional packages: an example declares what it needs beyond recstack's own dependencies with
comment lines at the top of the file, e.g.::

    # requires: onnxruntime
    # requires: pandas, onnx

(several names per line, comma-separated; import names, as in ``import onnxruntime``). The
example is skipped, naming the missing package, only when one of them cannot be imported;
anything else that fails is a failure.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
#: Examples are meant to run in well under 30 s on a CPU; the limit leaves room for a busy
#: two-core CI machine.
TIMEOUT_S = 180

_REQUIRES = re.compile(r"^#\s*requires:\s*(.+?)\s*$", re.MULTILINE)


def requirements(path: Path) -> list[str]:
    """Package (import) names listed by ``# requires:`` comment lines in `path`."""
    return [name.strip() for line in _REQUIRES.findall(path.read_text())
            for name in line.split(",") if name.strip()]


def scripts() -> list[Path]:
    return sorted(EXAMPLES.glob("*.py")) if EXAMPLES.is_dir() else []


def test_requires_comment_is_parsed(tmp_path):
    f = tmp_path / "x.py"
    f.write_text('"""doc"""\n# requires: onnxruntime\n# requires: pandas, onnx\nimport os\n')
    assert requirements(f) == ["onnxruntime", "pandas", "onnx"]


def test_there_are_examples():
    if not EXAMPLES.is_dir():
        pytest.skip("no examples/ folder next to tests/ (e.g. tests run against an installed wheel)")
    assert scripts(), f"no examples/*.py in {EXAMPLES}"


@pytest.mark.parametrize("script", scripts(), ids=lambda p: p.name)
def test_example_runs(script: Path):
    missing = [name for name in requirements(script) if importlib.util.find_spec(name) is None]
    if missing:
        pytest.skip(f"{script.name} needs {', '.join(missing)} (not installed)")
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "MPLBACKEND": "Agg"}
    try:
        proc = subprocess.run([sys.executable, str(script)], cwd=EXAMPLES.parent, env=env,
                              capture_output=True, text=True, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{script.name} did not finish within {TIMEOUT_S} s")
    assert proc.returncode == 0, (f"{script.name} exited {proc.returncode}\n--- stdout ---\n"
                                  f"{proc.stdout[-3000:]}\n--- stderr ---\n{proc.stderr[-3000:]}")
