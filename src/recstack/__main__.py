"""`python -m recstack ...`: the `recstack` command line."""

from recstack.cli import app

if __name__ == "__main__":  # pragma: no cover
    app(prog_name="recstack")
