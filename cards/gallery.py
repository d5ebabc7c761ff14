"""Card gallery: a self-contained HTML page showing cards as a narrow EHR side panel would.

    python -m cards.gallery [--out docs/gallery.html]

``gallery_html(entries)`` takes finished CDS Hooks responses, so any source can feed it: today the
hand-made decisions of ``sample_cases()`` rendered by ``render_response``; later the real pipeline
run over the fixtures (build ``GalleryEntry(title, response)`` from each HTTP response).
"""

from __future__ import annotations

import argparse
import html
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from markdown_it import MarkdownIt

from cards.coverage_information import EXT_COVERAGE_INFORMATION
from cards.render import RenderContext, render_response
from cards.wording import Wording, default_wording
from service.decision import CriterionResult, Decision, Evidence, OrderRef, PathwayResult

GALLERY_DATE = date(2026, 6, 1)
POLICY = {
    "policy_id": "pancreatic-islet-cell-transplantation",
    "policy_version": "2026.1.0",
    "policy_title": "Pancreatic Islet Cell Transplantation",
    "policy_url": "https://healthplan.org/medical-policy/pancreatic-islet-cell-transplantation",
    "plan_label": "THP Health Plan",
    "questionnaire_url": "https://healthplan.org/fhir/Questionnaire/pancreatic-islet-cell-transplantation|2026.1.0",
}
CPT = "http://www.ama-assn.org/go/cpt"
HCPCS = "https://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets"


@dataclass(frozen=True)
class GalleryCase:
    title: str
    decisions: tuple[Decision, ...]
    context: RenderContext


@dataclass(frozen=True)
class GalleryEntry:
    title: str
    response: dict[str, Any]


# --------------------------------------------------------------------------- hand-made decisions


def _c(
    cid: str, title: str, status: str, reason: str, *evidence: Evidence, question: str | None = None
) -> CriterionResult:
    return CriterionResult(cid, title, status, reason, tuple(evidence), question)  # type: ignore[arg-type]


def _service_request(order_id: str, code: str, system: str, text: str) -> dict[str, Any]:
    return {
        "resourceType": "ServiceRequest",
        "id": order_id,
        "status": "draft",
        "intent": "order",
        "code": {"coding": [{"system": system, "code": code}], "text": text},
        "subject": {"reference": "Patient/pat-1"},
        "authoredOn": "2026-05-20",
        "occurrenceDateTime": "2026-06-15",
        "requester": {"reference": "Practitioner/dr-1"},
    }


def _medication_request(order_id: str) -> dict[str, Any]:
    return {
        "resourceType": "MedicationRequest",
        "id": order_id,
        "status": "draft",
        "intent": "order",
        "medicationCodeableConcept": {
            "coding": [{"system": HCPCS, "code": "J3590"}],
            "text": "Lantidra (donislecel-jujn) infusion",
        },
        "subject": {"reference": "Patient/pat-1"},
        "authoredOn": "2026-05-20",
        "requester": {"reference": "Practitioner/dr-1"},
    }


COVERAGE = {
    "resourceType": "Coverage",
    "id": "cov-1",
    "status": "active",
    "beneficiary": {"reference": "Patient/pat-1"},
    "payor": [{"display": "THP Health Plan"}],
}


def _order_ref(resource: dict[str, Any]) -> OrderRef:
    code = resource.get("code") or resource.get("medicationCodeableConcept") or {}
    coding = code.get("coding", [{}])[0]
    return OrderRef(
        reference=f"{resource['resourceType']}/{resource['id']}",
        resource_type=resource["resourceType"],
        id=resource["id"],
        codes=((coding.get("system", ""), coding.get("code", "")),),
        description=code.get("text", ""),
    )


def _allogeneic(overrides: dict[str, CriterionResult] | None = None) -> tuple[CriterionResult, ...]:
    base = [
        _c(
            "A1",
            "Age 18 or older",
            "met",
            "Born 1984-03-02: 42 years old on the date of service.",
            Evidence(reference="Patient/pat-1", date="1984-03-02", display="Birth date"),
        ),
        _c(
            "A2",
            "Type 1 diabetes",
            "met",
            "Active type 1 diabetes on record.",
            Evidence(
                reference="Condition/c-t1d",
                code="E10.9",
                display="Type 1 diabetes mellitus without complications",
                date="2009-07-14",
            ),
        ),
        _c(
            "A3",
            "Current repeated severe hypoglycemia",
            "met",
            "2 level-3 hypoglycemia events in the last 12 months.",
            Evidence(reference="Condition/c-hypo1", code="E16.A3", display="Hypoglycemia level 3", date="2026-01-05"),
            Evidence(reference="Encounter/e-ed2", display="ED visit: hypoglycemia", date="2026-03-28"),
        ),
        _c(
            "A4",
            "Unable to approach target HbA1c",
            "met",
            "Latest HbA1c 8.4 % is above the 7.0 % target.",
            Evidence(reference="Observation/o-a1c", code="4548-4", display="HbA1c", value="8.4 %", date="2026-04-30"),
        ),
        _c(
            "A5",
            "Despite intensive management and education",
            "met",
            "Insulin pump and diabetes education within 24 months.",
            Evidence(reference="Device/d-pump", display="Insulin pump", date="2024-11-02"),
            Evidence(reference="Procedure/p-dsmes", code="G0108", display="DSMES session", date="2025-09-10"),
        ),
        _c(
            "A6",
            "Concomitant immunosuppression",
            "met",
            "Tacrolimus ordered in the same order set.",
            Evidence(reference="MedicationRequest/mr-tac", display="Tacrolimus 1 mg", date="2026-05-20"),
        ),
        _c("A7", "No renal transplant", "met", "Procedures and conditions show no kidney transplant."),
        _c("A8", "At most 3 infusions", "met", "No prior islet infusion on record."),
    ]
    if overrides:
        base = [overrides.get(c.id, c) for c in base]
    return tuple(base)


def _autologous(b1: str, b2: str, b3: str) -> tuple[CriterionResult, ...]:
    reasons = {
        "B1": {
            "met": "Total pancreatectomy (CPT 48155) ordered in the same order set.",
            "unknown": "Only a partial pancreatectomy is on record: near-total must be documented.",
        },
        "B2": {
            "met": "Chronic pancreatitis (K86.1) with documented severity.",
            "unknown": "Chronic pancreatitis is on record but its severity is not documented.",
        },
        "B3": {
            "met": "Failed endoscopic therapy documented.",
            "unknown": "No documented failure of medical, endoscopic or surgical therapy.",
        },
    }
    return (
        _c(
            "B1",
            "Adjunct to total or near-total pancreatectomy",
            b1,
            reasons["B1"][b1],
            Evidence(
                reference="ServiceRequest/sr-48155", code="48155", display="Total pancreatectomy", date="2026-06-15"
            ),
        ),
        _c(
            "B2",
            "Severe chronic pancreatitis",
            b2,
            reasons["B2"][b2],
            Evidence(reference="Condition/c-cp", code="K86.1", display="Other chronic pancreatitis", date="2021-02-11"),
        ),
        _c(
            "B3",
            "Cannot be managed by other treatments",
            b3,
            reasons["B3"][b3],
            Evidence(
                reference="Procedure/p-ercp",
                code="43264",
                display="ERCP with stone removal",
                date="2024-08-19",
                note="supporting evidence only",
            ),
        ),
    )


def _exclusions(applies: str | None = None) -> tuple[CriterionResult, ...]:
    rows = [
        ("X1", "Bioartificial pancreas device", "No bioartificial pancreas device in the order."),
        ("X2", "Ex-situ machine pancreas perfusion", "No ex-situ machine perfusion in the order."),
        ("X3", "Islet xenotransplantation", "No xenotransplantation code or keyword."),
        ("X4", "Lifestyle or longevity indication", "No lifestyle or longevity indication in the order."),
    ]
    out = []
    for cid, title, clear in rows:
        if cid == applies:
            out.append(
                _c(
                    cid,
                    title,
                    "not_met",
                    "The order text names an encapsulated bioartificial islet device.",
                    Evidence(reference="ServiceRequest/sr-bap", display="Order note: encapsulated islet device"),
                )
            )
        else:
            out.append(_c(cid, title, "met", clear))
    return tuple(out)


def _decision(order: dict[str, Any], **fields: Any) -> Decision:
    values: dict[str, Any] = dict(POLICY)
    values.update(order=_order_ref(order), date_of_service=date(2026, 6, 15))
    values.update(fields)
    return Decision(**values)


def sample_cases(wording: Wording | None = None, today: date = GALLERY_DATE) -> list[GalleryCase]:
    """Five hand-made situations: met, not met, documentation needed, excluded, several orders."""
    w = wording or default_wording()
    s2102 = _service_request("sr-s2102", "S2102", HCPCS, "Islet cell tissue transplant, allogeneic")
    auto = _service_request("sr-48160", "48160", CPT, "Autologous islet transplantation after pancreatectomy")
    bap = _service_request("sr-bap", "48160", CPT, "Islet transplant in encapsulated bioartificial device")
    route = _service_request("sr-0584t", "0584T", CPT, "Islet cell transplant, percutaneous")
    lantidra = _medication_request("mr-lantidra")

    met = _decision(
        s2102,
        outcome="covered",
        pathway="allogeneic",
        pathway_basis="The order code S2102 means allogeneic islet transplantation.",
        pathways=(PathwayResult("allogeneic", "met", _allogeneic()),),
        exclusions=_exclusions(),
        notes=("lantidra_conflict",),
    )
    infusions = _c(
        "A8",
        "At most 3 infusions",
        "not_met",
        "3 prior islet infusions on record; the policy allows at most 3.",
        Evidence(reference="Procedure/p-inf1", code="0584T", display="Islet infusion", date="2023-02-01"),
        Evidence(reference="Procedure/p-inf2", code="0584T", display="Islet infusion", date="2024-03-11"),
        Evidence(reference="Procedure/p-inf3", code="0584T", display="Islet infusion", date="2025-04-20"),
    )
    not_met = _decision(
        s2102,
        outcome="not_covered",
        pathway="allogeneic",
        pathway_basis="The order code S2102 means allogeneic islet transplantation.",
        pathways=(PathwayResult("allogeneic", "not_met", _allogeneic({"A8": infusions})),),
        exclusions=_exclusions(),
        notes=("lantidra_conflict",),
    )
    documentation = _decision(
        auto,
        outcome="documentation_needed",
        pathway="autologous",
        pathway_basis="The order code 48160 means autologous islet transplantation.",
        pathways=(PathwayResult("autologous", "unknown", _autologous("met", "unknown", "unknown")),),
        exclusions=_exclusions(),
    )
    excluded = _decision(
        bap,
        outcome="not_covered",
        pathway="autologous",
        pathway_basis="The order code 48160 means autologous islet transplantation.",
        pathways=(PathwayResult("autologous", "met", _autologous("met", "met", "met")),),
        exclusions=_exclusions("X1"),
        excluded_by=("X1",),
    )
    open_allo = _allogeneic(
        {
            "A3": _c(
                "A3",
                "Current repeated severe hypoglycemia",
                "unknown",
                "Only 1 level-3 event in the last 12 months; level-2 evidence only otherwise.",
                Evidence(
                    reference="Condition/c-hypo1", code="E16.A3", display="Hypoglycemia level 3", date="2026-01-05"
                ),
                question="A3",
            ),
            "A6": _c(
                "A6", "Concomitant immunosuppression", "unknown", "No immunosuppressant ordered yet.", question="A6"
            ),
        }
    )
    basis = "The route code 0584T is ordered with Lantidra (donislecel-jujn), so this is an allogeneic transplant."
    multi = tuple(
        _decision(
            order,
            outcome="documentation_needed",
            pathway="allogeneic",
            pathway_basis=basis,
            pathways=(PathwayResult("allogeneic", "unknown", open_allo),),
            exclusions=_exclusions(),
            notes=("lantidra_conflict",),
        )
        for order in (route, lantidra)
    )

    def context(orders: Sequence[dict[str, Any]]) -> RenderContext:
        return RenderContext(
            hook="order-sign",
            hook_instance="d1577c69-dfbe-44ad-ba6d-3e05e953b2ea",
            orders_by_ref={f"{o['resourceType']}/{o['id']}": o for o in orders},
            coverages=[COVERAGE],
            configuration={},
            crd_version="2.0",
            assertion_date=today,
            wording=w,
        )

    return [
        GalleryCase("Criteria met (allogeneic)", (met,), context([s2102])),
        GalleryCase("Criteria not met (allogeneic: 3 prior infusions)", (not_met,), context([s2102])),
        GalleryCase("Documentation needed (autologous)", (documentation,), context([auto])),
        GalleryCase("Excluded (bioartificial device)", (excluded,), context([bap])),
        GalleryCase("Several orders (route code + Lantidra)", multi, context([route, lantidra])),
    ]


def entries_from_cases(cases: Sequence[GalleryCase]) -> list[GalleryEntry]:
    return [GalleryEntry(c.title, render_response(c.decisions, c.context)) for c in cases]


# --------------------------------------------------------------------------- HTML

_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;background:#eef1f4;margin:0;padding:24px;color:#1d2329}
h1{font-size:20px;margin:0 0 16px}
.cases{display:flex;flex-wrap:wrap;gap:24px;align-items:flex-start}
.case{width:380px}
.case h2{font-size:14px;margin:0 0 8px;color:#3b4650}
.panel{background:#fff;border:1px solid #c9d1d9;border-radius:6px;padding:8px;
  display:flex;flex-direction:column;gap:8px}
.card{border:1px solid #d0d7de;border-left:6px solid #0969da;border-radius:4px;padding:8px 10px;font-size:13px}
.card.warning{border-left-color:#d4a72c}.card.critical{border-left-color:#cf222e}
.summary{font-weight:600;font-size:14px;margin-bottom:4px}
.source{color:#57606a;font-size:11px;margin-bottom:6px}
.detail table{border-collapse:collapse;width:100%;font-size:11px;margin:4px 0}
.detail th,.detail td{border:1px solid #d0d7de;padding:2px 4px;vertical-align:top;text-align:left}
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


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cards.gallery", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="docs/gallery.html", help="HTML file to write (default: %(default)s)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(gallery_html(entries_from_cases(sample_cases())), encoding="utf-8")
    print(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
