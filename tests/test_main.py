"""`python -m recstack`, `recstack --version` and `recstack.__version__`."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import version

from typer.testing import CliRunner

import recstack
from recstack.cli import app


def test_version_is_the_installed_packages():
    assert recstack.__version__ == version("recstack")


def test_version_option_prints_it_and_exits():
    res = CliRunner().invoke(app, ["--version"])
    assert res.exit_code == 0 and res.output.strip() == f"recstack {recstack.__version__}"


def test_python_dash_m_runs_the_command_line():
    res = subprocess.run([sys.executable, "-m", "recstack", "--version"], capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == f"recstack {recstack.__version__}"
