"""The Classify results as a gallery: one card per image with its thumbnail and its labels as
chips (confidence on a 0-1 scale, bold when over the category's threshold), the hand-crafted
prompts' chips beside on demand, and a card with the reason for a file that could not be scored.

Pure functions: prepared cards in, HTML out (every name escaped: user text is data); ``CSS`` is
added to the page by the layout.

A card: ``{"name": str, "thumb": data URI | None, "error": str | None,
"chips": {"tuned"|"handcrafted": [(label, confidence 0-1, over threshold: bool)]}}``.
"""
from __future__ import annotations

from studio.common import html_text

MAX_CARDS = 300
KIND_TITLE = {"tuned": "tuned prompts", "handcrafted": "hand-crafted prompts"}

CSS = """
.ifs-gallery { display: flex; flex-wrap: wrap; gap: 10px; }
.ifs-card { border: 1px solid #ccc; border-radius: 6px; padding: 6px; width: 220px; }
.ifs-card.ifs-error { border-color: #d62728; }
.ifs-thumb { width: 100%; height: 140px; object-fit: contain; background: #f4f4f4; display: block; }
.ifs-name { font-size: 12px; word-break: break-all; margin: 4px 0; }
.ifs-kind { font-size: 11px; color: #666; margin-top: 4px; }
.ifs-chip { display: inline-block; border-radius: 10px; padding: 1px 8px; margin: 2px 2px 0 0;
            font-size: 12px; background: #e8eef7; color: #1f3b63; }
.ifs-chip.ifs-on { background: #1f77b4; color: #fff; font-weight: bold; }
.ifs-chips.ifs-base .ifs-chip { background: #eee; color: #444; }
.ifs-chips.ifs-base .ifs-chip.ifs-on { background: #777; color: #fff; }
.ifs-error-text { color: #b00; font-size: 12px; }
"""


def _chips(kind: str, chips, base: bool) -> str:
    spans = "".join(
        f'<span class="ifs-chip{" ifs-on" if on else ""}" data-label="{html_text(label)}" '
        f'data-confidence="{conf:.2f}">{html_text(label)} {conf:.2f}</span>'
        for label, conf, on in chips)
    return (f'<div class="ifs-kind">{KIND_TITLE.get(kind, html_text(kind))}</div>'
            f'<div class="ifs-chips{" ifs-base" if base else ""}" data-kind="{html_text(kind)}">{spans}</div>')


def card_html(card: dict, kinds: list[str]) -> str:
    name = html_text(card["name"])
    if card.get("error"):
        return (f'<div class="ifs-card ifs-error" data-file="{name}"><div class="ifs-name"><b>{name}</b>'
                f'</div><div class="ifs-error-text">{html_text(card["error"])}</div></div>')
    uri = card.get("thumb")
    thumb = (f'<img class="ifs-thumb" src="{uri}" alt="{name}">' if uri
             else '<div class="ifs-thumb"></div>')
    parts = [f'<div class="ifs-card" data-file="{name}">{thumb}<div class="ifs-name">{name}</div>']
    for i, kind in enumerate(kinds):
        if kind in card.get("chips", {}):
            parts.append(_chips(kind, card["chips"][kind], base=i > 0))
    parts.append("</div>")
    return "".join(parts)


def gallery_html(cards: list[dict], kinds: list[str]) -> str:
    """All cards (the first ``MAX_CARDS``), ``kinds`` the chip rows to show in order."""
    if not cards:
        return ""
    shown = cards[:MAX_CARDS]
    more = (f'<p>First {MAX_CARDS} of {len(cards)} files shown; every score is in the CSV/JSON '
            f'download.</p>') if len(cards) > MAX_CARDS else ""
    return ('<div class="ifs-gallery">' + "".join(card_html(c, kinds) for c in shown)
            + "</div>" + more)
