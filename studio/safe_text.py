"""User text (category names, project names, sentences, file names) shown as text, never as markup.

Gradio's Markdown renders Markdown and HTML, HTML components render HTML, and plotly renders a
subset of HTML in every label (``<b>``, ``<br>``, ``<a>``...). A category named ``<b>bold cat</b>``
or ``<img src=x>`` must show exactly those characters, so every piece of user text goes through
one of these before it reaches a widget:

- :func:`md` inside Markdown: HTML-escaped, then every Markdown punctuation character
  backslash-escaped (CommonMark shows an escaped punctuation character literally);
- :func:`html_text` inside HTML (text and attribute values);
- :func:`plot_text` inside plotly labels, legends, hover text and tick labels (plotly decodes
  ``&lt;``/``&gt;``/``&amp;``/``&quot;`` back to the characters when it draws).
"""
from __future__ import annotations

import html
import re

_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|~>$^=:])")


def html_text(text) -> str:
    return html.escape(str(text), quote=True)


def md(text) -> str:
    """``text`` for a Markdown widget: shows literally, on one line."""
    one_line = " ".join(str(text).split())
    return _MD_SPECIAL.sub(r"\\\1", html.escape(one_line, quote=False))


def plot_text(text) -> str:
    return html.escape(str(text), quote=False)


def md_list(names, limit: int | None = None) -> str:
    """Comma-separated names for Markdown, ``...`` after ``limit``."""
    names = list(names)
    shown = names if limit is None else names[:limit]
    more = " ..." if limit is not None and len(names) > limit else ""
    return ", ".join(md(n) for n in shown) + more
