"""Errors raised for bad input. Every message names the file, and the line and field when known."""

from __future__ import annotations


class DataError(ValueError):
    """Bad or missing input data.

    `path`, `line` (1-based, as an editor shows it) and `field` locate the problem; the message
    always includes whichever of them are known.
    """

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None,
                 field: str | None = None) -> None:
        self.path, self.line, self.field, self.reason = path, line, field, message
        where = []
        if path is not None:
            where.append(str(path))
        if line is not None:
            where.append(f"line {line}")
        if field is not None:
            where.append(f"field '{field}'")
        super().__init__(f"{', '.join(where)}: {message}" if where else message)
