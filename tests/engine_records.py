"""Small FHIR R4 resource builders for the engine's unit and property tests.

Each builder returns a plain resource dict, as the EHR would send it; ``record()`` sorts resources
into the prefetch keys the way ``service.policy.decide`` takes them.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

Resource = dict[str, Any]

ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
SNOMED = "http://snomed.info/sct"
LOINC = "http://loinc.org"
CPT = "http://www.ama-assn.org/go/cpt"
HCPCS = "http://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
PCS = "http://www.cms.gov/Medicare/Coding/ICD10"
QUESTIONNAIRE = "https://healthplan.org/fhir/Questionnaire/islet-transplant-documentation|2026.1.0"
ISLET_OUTCOMES = "https://healthplan.org/fhir/CodeSystem/islet-outcomes"
DOS = date(2026, 3, 2)
PATIENT = "Patient/p1"

KEY_OF_TYPE = {
    "Patient": "patient",
    "Coverage": "coverage",
    "Condition": "conditions",
    "Observation": "observations",
    "Procedure": "procedures",
    "MedicationRequest": "medicationRequests",
    "MedicationStatement": "medicationStatements",
    "MedicationAdministration": "medicationAdministrations",
    "Encounter": "encounters",
    "Device": "devices",
    "QuestionnaireResponse": "questionnaireResponses",
}
PREFETCH_KEYS = tuple(KEY_OF_TYPE.values())

_counter = {"n": 0}


def _id(prefix: str) -> str:
    _counter["n"] += 1
    return f"{prefix}{_counter['n']}"


def days_ago(days: int, base: date = DOS) -> str:
    return (base - timedelta(days=days)).isoformat()


def cc(system: str, code: str, display: str | None = None, text: str | None = None) -> dict[str, Any]:
    coding: dict[str, Any] = {"system": system, "code": code}
    if display:
        coding["display"] = display
    out: dict[str, Any] = {"coding": [coding]}
    if text:
        out["text"] = text
    return out


def patient(birth_date: str | None = "1985-06-14") -> Resource:
    r: Resource = {"resourceType": "Patient", "id": "p1"}
    if birth_date is not None:
        r["birthDate"] = birth_date
    return r


def condition(
    system: str,
    code: str,
    onset: str | None = "2010-01-01",
    clinical: str | None = "active",
    verification: str | None = "confirmed",
    severity: str | None = None,
    rid: str | None = None,
) -> Resource:
    r: Resource = {
        "resourceType": "Condition",
        "id": rid or _id("cond"),
        "subject": {"reference": PATIENT},
        "code": cc(system, code),
    }
    if clinical:
        r["clinicalStatus"] = cc("http://terminology.hl7.org/CodeSystem/condition-clinical", clinical)
    if verification:
        r["verificationStatus"] = cc("http://terminology.hl7.org/CodeSystem/condition-ver-status", verification)
    if onset:
        r["onsetDateTime"] = onset
    if severity:
        r["severity"] = cc(SNOMED, severity)
    return r


def t1d(**kwargs: Any) -> Resource:
    return condition(ICD10CM, "E10.65", **kwargs)


def severe_hypo(onset: str, **kwargs: Any) -> Resource:
    return condition(ICD10CM, "E16.A3", onset=onset, clinical=kwargs.pop("clinical", "resolved"), **kwargs)


def observation(code: str, value: float, unit: str, when: str, status: str = "final") -> Resource:
    return {
        "resourceType": "Observation",
        "id": _id("obs"),
        "status": status,
        "subject": {"reference": PATIENT},
        "code": cc(LOINC, code),
        "effectiveDateTime": when,
        "valueQuantity": {"value": value, "unit": unit, "system": "http://unitsofmeasure.org", "code": unit},
    }


def hba1c(value: float, when: str, unit: str = "%") -> Resource:
    return observation("59261-8" if unit == "mmol/mol" else "4548-4", value, unit, when)


def procedure(system: str, code: str, when: str | None, status: str = "completed") -> Resource:
    r: Resource = {
        "resourceType": "Procedure",
        "id": _id("proc"),
        "status": status,
        "subject": {"reference": PATIENT},
        "code": cc(system, code),
    }
    if when:
        r["performedDateTime"] = when
    return r


def medication_request(
    system: str, code: str, status: str = "active", authored: str | None = None, text: str | None = None
) -> Resource:
    r: Resource = {
        "resourceType": "MedicationRequest",
        "id": _id("mr"),
        "status": status,
        "intent": "order",
        "subject": {"reference": PATIENT},
        "medicationCodeableConcept": cc(system, code, text=text),
    }
    if authored:
        r["authoredOn"] = authored
    return r


def device(system: str, code: str, status: str = "active") -> Resource:
    return {
        "resourceType": "Device",
        "id": _id("dev"),
        "status": status,
        "patient": {"reference": PATIENT},
        "type": cc(system, code),
    }


def questionnaire_response(
    answers: dict[str, Any], authored: str = "2026-02-12", questionnaire: str = QUESTIONNAIRE, status: str = "completed"
) -> Resource:
    items = []
    for link_id, value in answers.items():
        answer: dict[str, Any]
        if isinstance(value, bool):
            answer = {"valueBoolean": value}
        elif isinstance(value, date):
            answer = {"valueDate": value.isoformat()}
        else:
            answer = {"valueString": str(value)}
        items.append({"linkId": link_id, "answer": [answer]})
    return {
        "resourceType": "QuestionnaireResponse",
        "id": _id("qr"),
        "status": status,
        "questionnaire": questionnaire,
        "subject": {"reference": PATIENT},
        "authored": authored,
        "item": items,
    }


def service_request(
    system: str,
    code: str,
    occurrence: str | None = DOS.isoformat(),
    rid: str = "sr1",
    note: str | None = None,
    reason_text: str | None = None,
) -> Resource:
    r: Resource = {
        "resourceType": "ServiceRequest",
        "id": rid,
        "status": "draft",
        "intent": "order",
        "subject": {"reference": PATIENT},
        "code": cc(system, code),
    }
    if occurrence:
        r["occurrenceDateTime"] = occurrence
    if note:
        r["note"] = [{"text": note}]
    if reason_text:
        r["reasonCode"] = [{"text": reason_text}]
    return r


def lantidra_order(rid: str = "mr-lantidra", code: str = "J3590") -> Resource:
    return {
        "resourceType": "MedicationRequest",
        "id": rid,
        "status": "draft",
        "intent": "order",
        "subject": {"reference": PATIENT},
        "authoredOn": DOS.isoformat(),
        "medicationCodeableConcept": cc(HCPCS, code, "Unclassified biologics", "Lantidra (donislecel-jujn)"),
    }


def lantidra_administration(when: str | None, status: str = "completed") -> Resource:
    r: Resource = {
        "resourceType": "MedicationAdministration",
        "id": _id("madm"),
        "status": status,
        "subject": {"reference": PATIENT},
        "medicationCodeableConcept": cc(HCPCS, "J3590", "Unclassified biologics", "Lantidra (donislecel-jujn)"),
    }
    if when:
        r["effectiveDateTime"] = when
    return r


def allogeneic_candidate() -> list[Resource]:
    """An adult whose record meets every allogeneic criterion (A1–A9) for an S2102 order on DOS."""
    return [
        patient("1985-06-14"),
        t1d(onset="2001-09-10"),
        severe_hypo(days_ago(200)),
        severe_hypo(days_ago(90)),
        hba1c(8.1, days_ago(50)),
        device(SNOMED, "69805005"),
        procedure(HCPCS, "G0108", days_ago(300)),
        medication_request(RXNORM, "198377", status="draft", authored=days_ago(14)),
    ]


def autologous_candidate() -> list[Resource]:
    return [
        patient("1980-01-01"),
        condition(ICD10CM, "K86.1", onset="2019-05-20", severity="24484000"),
        questionnaire_response({"B3": True}),
    ]


def record(resources: list[Resource]) -> dict[str, list[Resource]]:
    out: dict[str, list[Resource]] = {key: [] for key in PREFETCH_KEYS}
    for r in resources:
        out[KEY_OF_TYPE[r["resourceType"]]].append(r)
    return out
