"""Card gallery: a self-contained HTML page showing cards as a narrow EHR side panel would.

``gallery_html(entries)`` takes finished CDS Hooks responses. The committed docs/gallery.html is
made by ``islet-cds gallery``, which runs fixture scenarios through the real pipeline.
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from markdown_it import MarkdownIt

from cards.coverage_information import EXT_COVERAGE_INFORMATION


@dataclass(frozen=True)
class GalleryEntry:
    title: str
    response: dict[str, Any]


# --------------------------------------------------------------------------- HTML

_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;background:#eef1f4;margin:0;padding:24px;color:#1d2329}
h1{font-size:20px;margin:0 0 16px}
.cases{display:flex;flex-wrap:wrap;gap:24px;align-items:flex-start}
.case{width:440px}
.case h2{font-size:14px;margin:0 0 8px;color:#3b4650}
.panel{background:#fff;border:1px solid #c9d1d9;border-radius:6px;padding:8px;
  display:flex;flex-direction:column;gap:8px}
.card{border:1px solid #d0d7de;border-left:6px solid #0969da;border-radius:4px;padding:8px 10px;font-size:13px}
.card.warning{border-left-color:#d4a72c}.card.critical{border-left-color:#cf222e}
.summary{font-weight:600;font-size:14px;margin-bottom:4px}
.source{color:#57606a;font-size:11px;margin-bottom:6px}
.detail table{border-collapse:collapse;width:100%;font-size:11px;margin:4px 0}
.detail th,.detail td{border:1px solid #d0d7de;padding:2px 4px;vertical-align:top;text-align:left;
  overflow-wrap:anywhere}
.detail h4{font-size:12px;margin:8px 0 2px}.detail p{margin:4px 0}
.detail blockquote{margin:4px 0;padding:2px 8px;border-left:3px solid #d4a72c;background:#fff8e5}
.links{display:flex;flex-wrap:wrap;gap:6px;margin-top:6px}
.button{display:inline-block;background:#0969da;color:#fff;text-decoration:none;padding:4px 10px;
  border-radius:4px;font-size:12px}
.button.smart{background:#1a7f37}
.overrides{font-size:11px;color:#57606a;margin-top:4px}
.actions{font-size:11px;color:#3b4650;background:#f6f8fa;border:1px dashed #c9d1d9;border-radius:4px;padding:6px}
.actions code{font-size:11px}
"""


def _markdown() -> MarkdownIt:
    # gfm-like gives tables and strikethrough; linkify would need linkify-it-py, raw HTML stays off
    # as an EHR would keep it off.
    return MarkdownIt("gfm-like", {"linkify": False, "html": False})


def _card_html(card: dict[str, Any], md: MarkdownIt) -> str:
    indicator = html.escape(str(card.get("indicator", "info")))
    source = card.get("source", {})
    parts = [
        f'<div class="card {indicator}">',
        f'<div class="summary">{html.escape(str(card.get("summary", "")))}</div>',
        f'<div class="source">{html.escape(str(source.get("label", "")))} · '
        f"{html.escape(str(source.get('topic', {}).get('code', '')))}</div>",
    ]
    if card.get("detail"):
        parts.append(f'<div class="detail">{md.render(str(card["detail"]))}</div>')
    links = card.get("links") or []
    if links:
        buttons = "".join(
            f'<a class="button {html.escape(str(link.get("type")))}" href="{html.escape(str(link.get("url")))}" '
            f'title="{html.escape(str(link.get("appContext", "")))}">{html.escape(str(link.get("label")))}</a>'
            for link in links
        )
        parts.append(f'<div class="links">{buttons}</div>')
    reasons = card.get("overrideReasons") or []
    if reasons:
        parts.append(
            '<div class="overrides">Override: '
            + " | ".join(html.escape(str(r.get("display"))) for r in reasons)
            + "</div>"
        )
    parts.append("</div>")
    return "".join(parts)


def _actions_html(actions: Sequence[dict[str, Any]]) -> str:
    rows = []
    for action in actions:
        resource = action.get("resource") or {}
        for ext in resource.get("extension") or []:
            if ext.get("url") != EXT_COVERAGE_INFORMATION:
                continue
            codes = [f"{p['url']}={p.get('valueCode')}" for p in ext.get("extension", []) if "valueCode" in p]
            ref = f"{resource.get('resourceType')}/{resource.get('id')}"
            rows.append(f"<div><code>{html.escape(ref)}</code>: {html.escape(', '.join(codes))}</div>")
    return f'<div class="actions">systemActions (coverage-information){"".join(rows)}</div>' if rows else ""


def gallery_html(entries: Sequence[GalleryEntry], title: str = "islet-cds card gallery") -> str:
    md = _markdown()
    cases = []
    for entry in entries:
        cards = "".join(_card_html(card, md) for card in entry.response.get("cards", []))
        cases.append(
            f'<section class="case"><h2>{html.escape(entry.title)}</h2>'
            f'<div class="panel">{cards}{_actions_html(entry.response.get("systemActions", []))}</div></section>'
        )
    data = html.escape(json.dumps([{"title": e.title, "response": e.response} for e in entries], indent=1))
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>"
        f'<h1>{html.escape(title)}</h1><div class="cases">{"".join(cases)}</div>'
        f"<details><summary>Responses (JSON)</summary><pre>{data}</pre></details>"
        "</body></html>\n"
    )
