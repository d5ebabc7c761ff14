"""A plain-text table of decisions, for ``islet-cds evaluate`` and for people reading a decision log."""

from __future__ import annotations

import textwrap
from collections.abc import Iterable, Sequence

from service.decision import CriterionResult, Decision, Evidence

_STATUS_LABEL = {"met": "met", "not_met": "NOT MET", "unknown": "unknown"}
_EXCLUSION_LABEL = {"met": "does not apply", "not_met": "APPLIES", "unknown": "unknown"}
_WIDTHS = (4, 14, 58, 44)  # criterion, status, reason, evidence


def _evidence_text(evidence: Evidence) -> str:
    parts = [evidence.reference or ""]
    if evidence.code:
        parts.append(evidence.code)
    if evidence.value:
        parts.append(evidence.value)
    if evidence.date:
        parts.append(evidence.date)
    if evidence.note:
        parts.append(f"({evidence.note})")
    return " ".join(p for p in parts if p)


def _rows(criteria: Iterable[CriterionResult], labels: dict[str, str]) -> list[tuple[str, str, str, str]]:
    rows = []
    for c in criteria:
        evidence = "; ".join(_evidence_text(e) for e in c.evidence[:3])
        if len(c.evidence) > 3:
            evidence += f"; +{len(c.evidence) - 3} more"
        rows.append((c.id, labels[c.status], c.reason, evidence or "-"))
    return rows


def _table(rows: Sequence[tuple[str, str, str, str]]) -> list[str]:
    header = ("id", "status", "reason", "evidence")
    lines = [" | ".join(h.ljust(w) for h, w in zip(header, _WIDTHS, strict=True)).rstrip()]
    lines.append("-+-".join("-" * w for w in _WIDTHS))
    for row in rows:
        cells = [textwrap.wrap(text, w) or [""] for text, w in zip(row, _WIDTHS, strict=True)]
        for i in range(max(len(c) for c in cells)):
            parts = [(c[i] if i < len(c) else "").ljust(w) for c, w in zip(cells, _WIDTHS, strict=True)]
            lines.append(" | ".join(parts).rstrip())
    return lines


def decision_table(decisions: Iterable[Decision]) -> str:
    """One block per decision: order, outcome, pathway, then a criterion table and the exclusions."""
    blocks: list[str] = []
    for d in decisions:
        lines = [
            f"{d.order.reference} ({d.order.description}) - date of service {d.date_of_service.isoformat()}",
            f"Outcome: {d.outcome}   Pathway: {d.pathway or 'none'}   Policy: {d.policy_id} {d.policy_version}",
            f"Why this pathway: {d.pathway_basis}",
        ]
        if d.earliest_eligible_date:
            lines.append(f"Earliest eligible date: {d.earliest_eligible_date.isoformat()}")
        if d.notes:
            lines.append(f"Notes: {', '.join(d.notes)}")
        for p in d.pathways:
            lines.append("")
            lines.append(f"{p.pathway.capitalize()} pathway: {p.status}")
            lines.extend(_table(_rows(p.criteria, _STATUS_LABEL)))
        lines.append("")
        lines.append("Exclusions")
        lines.extend(_table(_rows(d.exclusions, _EXCLUSION_LABEL)))
        if d.data_gaps:
            lines.append(f"Data not obtained: {'; '.join(d.data_gaps)}")
        if d.skipped_resources:
            lines.append(f"Resources skipped: {'; '.join(d.skipped_resources)}")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)
