"""MkDocs hook: render the Sphinx roles left in recstack's docstrings as plain code.

Some docstrings name an object Sphinx-style, ``:func:`evaluate_ranking``` or
``:class:`~recstack.data.dataset.Interactions```. Markdown turns the backticks into
``<code>`` and leaves the role in front of it as text (":func:evaluate_ranking"). This hook
drops the role and, for a ``~`` target, keeps the last component, as Sphinx shows it.
"""

from __future__ import annotations

import re

_ROLE = re.compile(r":(?:py:)?(?:class|func|meth|mod|attr|data|obj|exc|const):<code>(~?)([^<]*)</code>")


def _plain(match: re.Match[str]) -> str:
    tilde, target = match.group(1), match.group(2)
    return f"<code>{target.rsplit('.', 1)[-1] if tilde else target}</code>"


def on_page_content(html: str, **kwargs) -> str:
    return _ROLE.sub(_plain, html)
