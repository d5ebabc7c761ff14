"""Hand-made Decisions covering every outcome, rendered by cards.render_response (tests only)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

from cards.gallery import GalleryEntry
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
    "questionnaire_url": "https://healthplan.org/fhir/Questionnaire/islet-transplant-documentation|2026.1.0",
}
CPT = "http://www.ama-assn.org/go/cpt"
HCPCS = "https://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets"


@dataclass(frozen=True)
class GalleryCase:
    title: str
    decisions: tuple[Decision, ...]
    context: RenderContext




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


def request_for(case: Any, hook: str = "order-sign", version: str | None = None, **extension: Any) -> dict[str, Any]:
    """The CDS Hooks request a sample case answers (draft orders from its render context)."""
    body: dict[str, Any] = {
        "hook": hook,
        "hookInstance": case.context.hook_instance,
        "context": {
            "userId": "Practitioner/dr-1",
            "patientId": "pat-1",
            "draftOrders": {
                "resourceType": "Bundle",
                "type": "collection",
                "entry": [{"resource": r} for r in case.context.orders_by_ref.values()],
            },
        },
    }
    ext = dict(extension)
    if version:
        ext["davinci-crd.requestedVersion"] = version
    if ext:
        body["extension"] = ext
    return body
