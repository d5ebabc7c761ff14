"""Reading FHIR R4 into facts: statuses, dates, units, questionnaire answers, and skipping bad resources."""

from __future__ import annotations

import copy
import json
from datetime import date
from importlib import import_module
from pathlib import Path
from typing import Any

import pytest

from service.facts import (
    PatientFacts,
    glucose_mg_dl,
    hba1c_percent,
    read_facts,
    read_order,
)
from tests.engine_records import (
    HCPCS,
    ICD10CM,
    RXNORM,
    cc,
    condition,
    hba1c,
    observation,
    patient,
    procedure,
    questionnaire_response,
    record,
)

SCENARIOS = Path(__file__).resolve().parent.parent / "fhir_fixtures" / "scenarios"
READ_TYPES = (
    "Patient",
    "Condition",
    "Observation",
    "Procedure",
    "MedicationRequest",
    "MedicationStatement",
    "Encounter",
    "Device",
    "QuestionnaireResponse",
)


def facts_of(resources: list[dict[str, Any]], gaps: dict[str, str] | None = None) -> PatientFacts:
    return read_facts(record(resources), gaps)


def r4b_accepts(resource: dict[str, Any]) -> bool:
    model = getattr(import_module(f"fhir.resources.R4B.{resource['resourceType'].lower()}"), resource["resourceType"])
    try:
        model.model_validate(copy.deepcopy(resource))
    except Exception:
        return False
    return True


def test_condition_statuses() -> None:
    facts = facts_of(
        [
            condition(ICD10CM, "E10.9", rid="a"),
            condition(ICD10CM, "E10.9", rid="b", verification="entered-in-error"),
            condition(ICD10CM, "E10.9", rid="c", verification="refuted"),
            condition(ICD10CM, "E10.9", rid="d", clinical="resolved"),
            condition(ICD10CM, "E10.9", rid="e", clinical=None, verification=None),
        ]
    )
    by_id = {c.reference: c for c in facts.conditions}
    assert [by_id[f"Condition/{i}"].void for i in "abcde"] == [False, True, True, False, False]
    assert [by_id[f"Condition/{i}"].active for i in "abcde"] == [True, True, True, False, True]


def test_condition_event_date_is_onset_else_recorded() -> None:
    recorded_only = condition(ICD10CM, "E16.A3", onset=None)
    recorded_only["recordedDate"] = "2025-12-01"
    period = condition(ICD10CM, "E16.A3", onset=None)
    period["onsetPeriod"] = {"start": "2025-11-01T10:00:00-05:00"}
    facts = facts_of([recorded_only, period])
    assert sorted(c.event_date for c in facts.conditions if c.event_date) == [date(2025, 11, 1), date(2025, 12, 1)]


@pytest.mark.parametrize(
    ("value", "unit", "percent"),
    [(8.2, "%", 8.2), (64, "mmol/mol", 8.01), (48, "mmol/mol", 6.54), (8.0, "g/dL", None)],
)
def test_hba1c_units(value: float, unit: str, percent: float | None) -> None:
    obs = facts_of([hba1c(value, "2026-01-01", unit=unit)]).observations[0]
    assert hba1c_percent(obs) == percent


@pytest.mark.parametrize(("value", "unit", "mg_dl"), [(50, "mg/dL", 50), (2.8, "mmol/L", 50.4), (3.0, "mmol/L", 54.0)])
def test_glucose_units(value: float, unit: str, mg_dl: float) -> None:
    obs = facts_of([observation("2339-0", value, unit, "2026-01-01")]).observations[0]
    assert glucose_mg_dl(obs) == mg_dl


def test_procedure_status_and_dates() -> None:
    done = procedure(HCPCS, "S2102", "2025-05-01T10:00:00Z")
    planned = procedure(HCPCS, "S2102", None, status="preparation")
    planned["performedPeriod"] = {"start": "2026-04-01"}
    facts = facts_of([done, planned])
    assert [(p.done, p.performed) for p in facts.procedures] == [(True, date(2025, 5, 1)), (False, date(2026, 4, 1))]


def test_medication_reference_to_contained_medication_and_text() -> None:
    mr = {
        "resourceType": "MedicationRequest",
        "id": "m1",
        "status": "active",
        "intent": "order",
        "subject": {"reference": "Patient/p1"},
        "medicationReference": {"reference": "#med"},
        "contained": [{"resourceType": "Medication", "id": "med", "code": cc(RXNORM, "42316", "tacrolimus")}],
    }
    statement = {
        "resourceType": "MedicationStatement",
        "id": "s1",
        "status": "completed",
        "subject": {"reference": "Patient/p1"},
        "effectivePeriod": {"start": "2025-05-01"},
        "medicationCodeableConcept": {"text": "Lantidra (donislecel-jujn) infusion"},
    }
    facts = facts_of([mr, statement])
    request, stated = facts.medications
    assert request.concept.codings == ((RXNORM, "42316"),)
    assert "donislecel" in stated.concept.search_text and stated.when == date(2025, 5, 1)


def test_questionnaire_answers_nested_or_flat() -> None:
    nested = questionnaire_response({})
    nested["item"] = [
        {
            "linkId": "group",
            "item": [
                {
                    "linkId": "A3",
                    "answer": [
                        {"valueBoolean": True, "item": [{"linkId": "A3.date", "answer": [{"valueDate": "2026-01-28"}]}]}
                    ],
                },
                {
                    "linkId": "A6",
                    "answer": [
                        {"valueCoding": {"system": "http://terminology.hl7.org/CodeSystem/v2-0136", "code": "N"}}
                    ],
                },
            ],
        }
    ]
    facts = facts_of([nested])
    qr = facts.questionnaire_responses[0]
    assert qr.questionnaire == "https://healthplan.org/fhir/Questionnaire/islet-transplant-documentation"
    assert qr.answers["A3"] == (True,) and qr.answers["A3.date"] == (date(2026, 1, 28),)
    assert qr.answers["A6"] == (False,)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda r: r.update(effectiveDateTime="not-a-date"), "effectiveDateTime"),
        (lambda r: r.update(status="bogus"), "status"),
        (lambda r: r["valueQuantity"].update(value="abc"), "valueQuantity.value"),
        (lambda r: r.update(code={"coding": "notalist"}), "code.coding"),
        (lambda r: r.pop("code"), "code"),
    ],
)
def test_invalid_resource_is_skipped_and_named(mutate: Any, message: str) -> None:
    bad = hba1c(8.0, "2026-01-01")
    bad["id"] = "9"
    mutate(bad)
    facts = facts_of([bad, hba1c(7.5, "2026-01-02")])
    assert len(facts.observations) == 1
    assert len(facts.skipped) == 1
    assert facts.skipped[0].startswith("Observation/9: ")
    assert message in facts.skipped[0]


def test_r4b_names_the_fault_when_it_sees_one() -> None:
    bad = patient("2001-13-45")
    facts = facts_of([bad])
    assert facts.patient is None
    assert facts.skipped == ("Patient/p1: birthDate: Value error, Date value string does not match spec regex.",)


def test_types_the_policy_does_not_read_are_not_parsed() -> None:
    garbage = [
        {"resourceType": "Coverage", "id": "c", "status": 5},
        {"resourceType": "Basic", "code": 1},
        "not a resource",
        {"no": "type"},
    ]
    facts = read_facts({"coverage": garbage, "conditions": None, "patient": [patient()]})  # type: ignore[dict-item]
    assert facts.skipped == () and facts.patient is not None


def test_duplicates_are_read_once_and_gaps_are_kept() -> None:
    cond = condition(ICD10CM, "E10.9", rid="dup")
    facts = read_facts({"conditions": [cond], "encounters": [copy.deepcopy(cond)]}, {"procedures": "timeout"})
    assert len(facts.conditions) == 1 and facts.gaps == {"procedures": "timeout"}


def test_order_reading() -> None:
    appointment = {
        "resourceType": "Appointment",
        "id": "ap",
        "status": "proposed",
        "start": "2026-04-01T09:00:00Z",
        "serviceType": [cc(HCPCS, "S2102", "Islet cell tissue transplant")],
    }
    got = read_order(appointment)
    assert got is not None and got.occurrence == date(2026, 4, 1) and got.concept.codings == ((HCPCS, "S2102"),)
    assert read_order({"resourceType": "ServiceRequest", "id": "x", "occurrenceDateTime": "soon"}) is None
    assert read_order({"resourceType": "Patient", "id": "x"}) is None


def _fixture_resources() -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for path in sorted(SCENARIOS.glob("*.json")):
        prefetch = json.loads(path.read_text(encoding="utf-8"))["request"].get("prefetch") or {}
        for value in prefetch.values():
            if isinstance(value, dict) and value.get("resourceType") == "Bundle":
                out.extend(e["resource"] for e in value.get("entry") or [])
            elif isinstance(value, dict):
                out.append(value)
    return [r for r in out if r.get("resourceType") in READ_TYPES]


def test_the_fast_reader_agrees_with_r4b_on_every_fixture_resource() -> None:
    """Every scenario resource is valid R4 (per R4B), and the fast reader accepts it too; a corrupted
    copy of each is rejected by both (the reader is not laxer than the model on what it reads)."""
    resources = _fixture_resources()
    assert len(resources) > 100
    for resource in resources:
        assert r4b_accepts(resource), resource["id"]
        assert read_facts({"x": [resource]}).skipped == (), resource["id"]
        broken = copy.deepcopy(resource)
        date_fields = [
            k
            for k in broken
            if k in ("birthDate", "onsetDateTime", "effectiveDateTime", "performedDateTime", "authoredOn", "authored")
        ]
        if date_fields:
            broken[date_fields[0]] = "31/12/2025"
            assert not r4b_accepts(broken)
            assert len(read_facts({"x": [broken]}).skipped) == 1, resource["id"]
