"""CDS Hooks cards for a policy decision: summary (Instructions), policy link (External Reference) and
documentation request (SMART launch of DTR).

Cards are plain dicts. Every card has a deterministic uuid (uuid5 of hookInstance, card kind and
orders), a summary capped at 139 characters, a CRD ``source.topic`` and the orders it concerns in
``extension."davinci-crd.associated-resource"`` (CRD dev-25). Text from the record or the policy is
Markdown-escaped; wording from cards.yaml is trusted Markdown.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

from cards.coverage_information import CoverageProblem, CrdVersion
from cards.decision_view import applying_exclusions, chosen_pathways, criterion_label, first_reason, open_criteria
from cards.wording import Wording
from service.decision import CriterionResult, Decision, Evidence, PathwayResult

SUMMARY_MAX = 139  # CDS Hooks: summary < 140 characters (Inferno fails at 140)
TOPIC_SYSTEM = {
    "2.0": "http://hl7.org/fhir/us/davinci-crd/CodeSystem/temp",
    "2.2": "http://terminology.hl7.org/CodeSystem/cdshooks-card-type",
}
INDICATOR = {
    "covered": "info",
    "not_covered": "warning",
    "documentation_needed": "warning",
    "indeterminate": "warning",
}
_CARD_NAMESPACE = uuid.UUID("0c5f1d2e-8a47-5f0e-b3c1-7d9a2e4f6b80")
_MD_SPECIAL = set("\\`*_[]<>|~&#!")


# --------------------------------------------------------------------------- small helpers


def cap_summary(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= SUMMARY_MAX else text[: SUMMARY_MAX - 1].rstrip() + "…"


_MD_ESCAPES = str.maketrans({ch: "\\" + ch for ch in _MD_SPECIAL})


def md_escape(text: str) -> str:
    """Escape record/policy text for GFM, also inside table cells (pipes, newlines, raw HTML)."""
    return " ".join(str(text).split()).translate(_MD_ESCAPES)


def card_uuid(hook_instance: str, kind: str, order_refs: Iterable[str]) -> str:
    key = "|".join([hook_instance, kind, *sorted(set(order_refs))])
    return str(uuid.uuid5(_CARD_NAMESPACE, key))


def topic(kind: str, crd_version: CrdVersion, wording: Wording) -> dict[str, str]:
    card_kind = wording.card_kinds[kind]
    return {"system": TOPIC_SYSTEM[crd_version], "code": card_kind.topic, "display": card_kind.topic_display}


def _refs(decisions: Sequence[Decision]) -> list[str]:
    seen: list[str] = []
    for d in decisions:
        if d.order.reference not in seen:
            seen.append(d.order.reference)
    return seen


def _card(
    kind: str,
    decisions: Sequence[Decision],
    *,
    summary: str,
    indicator: str,
    detail: str,
    hook_instance: str,
    crd_version: CrdVersion,
    wording: Wording,
) -> dict[str, Any]:
    first = decisions[0]
    refs = _refs(decisions)
    return {
        "uuid": card_uuid(hook_instance, kind, refs),
        "summary": cap_summary(summary),
        "indicator": indicator,
        "detail": detail,
        "source": {"label": first.plan_label, "url": first.policy_url, "topic": topic(kind, crd_version, wording)},
        "extension": {"davinci-crd.associated-resource": [{"reference": r} for r in refs]},
    }


def _multi(summary: str, decisions: Sequence[Decision], wording: Wording, name_order: bool = False) -> str:
    """Say which orders a card is about when one response holds cards for different orders."""
    count = len(_refs(decisions))
    if count > 1:
        return summary + wording.summary("multi_order_suffix", count=count)
    if name_order:
        return summary + wording.summary("single_order_suffix", order=decisions[0].order.description)
    return summary


# --------------------------------------------------------------------------- grouping


def _signature(d: Decision) -> tuple[Any, ...]:
    # Everything that shows on a card except the order itself: equal signatures render the same card.
    return (
        d.policy_id,
        d.policy_version,
        d.outcome,
        d.pathway,
        d.pathway_basis,
        d.pathways,
        d.exclusions,
        d.excluded_by,
        d.earliest_eligible_date,
        d.notes,
        d.data_gaps,
        d.questionnaire_url,
    )


def group_decisions(decisions: Sequence[Decision]) -> list[tuple[Decision, ...]]:
    """Decisions that would render identical cards, in first-seen order: one card names all their orders."""
    groups: dict[tuple[Any, ...], list[Decision]] = {}
    for d in decisions:
        groups.setdefault(_signature(d), []).append(d)
    return [tuple(g) for g in groups.values()]


# --------------------------------------------------------------------------- Markdown detail


def _evidence_text(e: Evidence) -> str:
    label = e.display or e.code or ""
    when = e.date[:10] if e.date else None
    parts = [p for p in (label, e.value, when, e.reference, e.note) if p]
    return " · ".join(md_escape(p) for p in parts)


def _evidence_cell(c: CriterionResult) -> str:
    return "; ".join(_evidence_text(e) for e in c.evidence) or "—"


def _table(rows: Sequence[CriterionResult], status_text: dict[str, str], wording: Wording) -> list[str]:
    cols = wording.table_columns
    lines = [
        f"| {cols['criterion']} | {cols['status']} | {cols['reason']} | {cols['evidence']} |",
        "|---|---|---|---|",
    ]
    for c in rows:
        lines.append(
            f"| {md_escape(criterion_label(c))} | {status_text[c.status]} | {md_escape(c.reason)} | "
            f"{_evidence_cell(c)} |"
        )
    return lines


def _orders_line(decisions: Sequence[Decision], wording: Wording) -> str:
    names = []
    for d in decisions:
        item = f"{md_escape(d.order.description)} ({md_escape(d.order.reference)})"
        if item not in names:
            names.append(item)
    return f"**{wording.headings['orders']}:** " + "; ".join(names)


def _pathway_title(p: PathwayResult, wording: Wording) -> str:
    return wording.pathway_labels.get(p.pathway, p.pathway)


def summary_detail(decisions: Sequence[Decision], wording: Wording, coverage_problem: CoverageProblem | None) -> str:
    """GFM detail of the summary card: orders, outcome, criteria table(s), exclusions, notes, policy."""
    d = decisions[0]
    h = wording.headings
    labels = wording.status_labels
    out: list[str] = [_orders_line(decisions, wording), "", wording.outcome_lines[d.outcome], ""]
    if coverage_problem is not None:
        out += [wording.outcome_lines["coverage_problem"], ""]
    # Notes (e.g. the Lantidra conflict) come before the tables: a narrow panel shows them unscrolled.
    for key in d.notes:
        note = wording.note(key)
        if note:  # a note key this wording does not know is not shown rather than shown as a key
            out += [f"> **{h['note']}** {note}", ""]

    pathways = chosen_pathways(d)
    if d.pathway is not None and len(pathways) == 1:
        out.append(f"**{h['pathway']}:** {_pathway_title(pathways[0], wording)}. {md_escape(d.pathway_basis)}")
    else:
        out.append(f"**{h['both_pathways']}:** {md_escape(d.pathway_basis)}")
    out.append("")
    criterion_status = {"met": labels["met"], "not_met": labels["not_met"], "unknown": labels["unknown"]}
    for p in pathways:
        out.append(f"#### {h['criteria']}: {_pathway_title(p, wording)}")
        out.append("")
        out += _table(p.criteria, criterion_status, wording)
        out.append("")

    if d.exclusions:
        # Only exclusions that apply (or could not be checked) get rows: four "does not apply" rows
        # would crowd a narrow EHR panel without telling the clinician anything.
        shown = list(applying_exclusions(d)) + [x for x in d.exclusions if x.status == "unknown"]
        exclusion_status = {
            "not_met": labels["exclusion_applies"],
            "met": labels["exclusion_clear"],
            "unknown": labels["exclusion_unknown"],
        }
        out.append(f"#### {h['exclusions']}")
        out.append("")
        if shown:
            out += _table(shown, exclusion_status, wording)
        else:
            out.append(h["no_exclusion"])
        out.append("")

    if d.earliest_eligible_date is not None:
        out += [f"**{h['earliest_eligible_date']}:** {d.earliest_eligible_date.isoformat()}", ""]
    if d.data_gaps:
        out += [f"**{h['data_gaps']}:**", ""] + [f"- {md_escape(g)}" for g in d.data_gaps] + [""]
    if d.skipped_resources:
        skipped = sorted({s for x in decisions for s in x.skipped_resources})
        out += [f"**{h['skipped_resources']}:**", ""] + [f"- {md_escape(s)}" for s in skipped] + [""]
    out.append(f"*{h['policy']}: {md_escape(d.policy_title)}, {h['policy_version']} {md_escape(d.policy_version)}*")
    return "\n".join(out).strip() + "\n"


# --------------------------------------------------------------------------- the cards


def summary_card(
    decisions: Sequence[Decision],
    *,
    hook_instance: str,
    crd_version: CrdVersion,
    wording: Wording,
    coverage_problem: CoverageProblem | None = None,
    name_order: bool = False,
) -> dict[str, Any]:
    """Instructions card: detail only; no links, no suggestions (so Inferno counts it as Instructions).

    ``name_order``: the response holds cards for other orders too, so the summary names this one.
    """
    d = decisions[0]
    if d.outcome == "not_covered":
        reason = first_reason(d)
        summary = (
            wording.summary("not_covered", reason=reason.rstrip("."))
            if reason
            else wording.summary("not_covered_no_criterion")  # no covered indication fits the order
        )
    elif d.outcome == "covered":
        summary = wording.summary("covered")
    elif d.outcome == "documentation_needed":
        summary = wording.counted_summary("documentation_needed", len(open_criteria(d)))
    else:
        what = "; ".join(d.data_gaps)
        summary = wording.summary("indeterminate", what=what) if what else wording.summary("indeterminate_unspecified")
    card = _card(
        "summary",
        decisions,
        summary=_multi(summary, decisions, wording, name_order),
        indicator=INDICATOR[d.outcome],
        detail=summary_detail(decisions, wording, coverage_problem),
        hook_instance=hook_instance,
        crd_version=crd_version,
        wording=wording,
    )
    reasons = wording.override_reasons.get(d.outcome)
    if reasons:  # the clinician may go ahead against a warning; say why in feedback
        card["overrideReasons"] = [dict(r) for r in reasons]
    return card


def reference_card(
    decisions: Sequence[Decision], *, hook_instance: str, crd_version: CrdVersion, wording: Wording
) -> dict[str, Any]:
    """External Reference card: links the policy; every link absolute (Inferno check 10)."""
    d = decisions[0]
    detail = wording.reference_detail.format(
        policy_title=md_escape(d.policy_title), policy_version=md_escape(d.policy_version)
    )
    card = _card(
        "reference",
        decisions,
        summary=wording.summary("reference", policy_title=d.policy_title),
        indicator="info",
        detail=_orders_line(decisions, wording) + "\n\n" + detail + "\n",
        hook_instance=hook_instance,
        crd_version=crd_version,
        wording=wording,
    )
    card["links"] = [{"label": wording.link_labels["policy"], "url": d.policy_url, "type": "absolute"}]
    return card


def documentation_card(
    decisions: Sequence[Decision],
    *,
    hook_instance: str,
    crd_version: CrdVersion,
    wording: Wording,
    dtr_launch_url: str,
    coverage_assertion_id: str | None = None,
    name_order: bool = False,
) -> dict[str, Any] | None:
    """SMART-launch card for DTR when criteria are open; None when nothing needs documenting."""
    d = decisions[0]
    criteria = open_criteria(d)
    if d.outcome != "documentation_needed" or not criteria:
        return None
    refs = _refs(decisions)
    lines = [_orders_line(decisions, wording), "", wording.documentation_detail_intro, ""]
    lines.append(f"**{wording.headings['open_criteria']}:**")
    lines.append("")
    lines += [f"- **{md_escape(criterion_label(c))}**: {md_escape(c.reason)}" for c in criteria]
    app_context: dict[str, Any] = {"questionnaire": d.questionnaire_url, "order": refs[0], "orders": refs}
    if coverage_assertion_id:
        app_context["coverageAssertionId"] = coverage_assertion_id  # lets DTR re-link to this assertion
    card = _card(
        "documentation",
        decisions,
        summary=_multi(wording.counted_summary("documentation", len(criteria)), decisions, wording, name_order),
        indicator="info",
        detail="\n".join(lines) + "\n",
        hook_instance=hook_instance,
        crd_version=crd_version,
        wording=wording,
    )
    card["links"] = [
        {
            "label": wording.link_labels["documentation"],
            "url": dtr_launch_url,
            "type": "smart",
            "appContext": json.dumps(app_context, separators=(",", ":"), sort_keys=True),
        }
    ]
    reasons = wording.override_reasons.get("documentation_needed")
    if reasons:
        card["overrideReasons"] = [dict(r) for r in reasons]
    return card
