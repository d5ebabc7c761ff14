"""Regression tests for the reviewer's engine findings (dates, attestations, negated keywords, scope,
unconfirmed conditions, undated infusions, HbA1c units, partial occurrences, Lantidra administrations).

Each test fails on the code before its fix: DESIGN.md §2, deny only on evidence, otherwise ask.
"""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest

from service.decision import Decision
from service.facts import Concept as FactConcept
from service.facts import (
    ObservationFact,
    hba1c_percent,
    order_read_problem,
    read_facts,
    read_order,
)
from service.policy import Policy, PolicyError, decide, implausible_date_of_service, load_policy
from service.policy.engine import date_of_service_for
from service.policy.predicates import find_keyword, shift_date
from service.policy.scope import in_scope_orders
from tests.engine_records import (
    CPT,
    DOS,
    HCPCS,
    ICD10CM,
    RXNORM,
    Resource,
    allogeneic_candidate,
    condition,
    days_ago,
    lantidra_administration,
    medication_request,
    observation,
    patient,
    procedure,
    questionnaire_response,
    record,
    service_request,
)

TODAY = date(2026, 2, 16)


@pytest.fixture(scope="module")
def policy() -> Policy:
    return load_policy()


def run(policy: Policy, resources: list[Resource], order: Resource | None = None) -> Decision:
    order = order or service_request(HCPCS, "S2102")
    decisions = decide(policy, record(resources), [order], [order], date_of_service_for(order, TODAY))
    assert len(decisions) == 1
    return decisions[0]


def criterion(decision: Decision, cid: str) -> Any:
    return {c.id: c for c in decision.criteria}[cid]


def replace(resources: list[Resource], resource_type: str, new: Resource | None) -> list[Resource]:
    return [r for r in resources if r["resourceType"] != resource_type] + ([new] if new else [])


# -- 1. extreme dates --------------------------------------------------------------------------------


def test_shift_date_clamps_instead_of_overflowing() -> None:
    assert shift_date(date(1, 1, 5), -365) == date.min
    assert shift_date(date(9999, 12, 30), 365) == date.max
    assert shift_date(DOS, -1) == date(2026, 3, 1)


@pytest.mark.parametrize("when", ["9999-12-31", "0001-02-01"])
def test_extreme_dates_of_service_evaluate_without_overflow(policy: Policy, when: str) -> None:
    infusion = procedure(CPT, "0584T", "9999-12-30" if when.startswith("9999") else "0001-01-01")
    d = run(policy, [*allogeneic_candidate(), infusion], service_request(HCPCS, "S2102", occurrence=when))
    assert d.date_of_service == date.fromisoformat(when)


@pytest.mark.parametrize(
    ("order", "message"),
    [
        ({"occurrenceDateTime": "0001-01-01"}, "occurrenceDateTime 0001-01-01 is not a plausible date of service"),
        ({"authoredOn": "0005-01-01"}, "authoredOn 0005-01-01 is not a plausible date of service"),
        ({"occurrencePeriod": {"start": "1899-12-31"}}, "occurrencePeriod.start 1899-12-31 is not a plausible"),
        ({"occurrenceTiming": {"event": ["2031-02-17"]}}, "occurrenceTiming.event[0] 2031-02-17 is not a plausible"),
    ],
)
def test_implausible_date_of_service_names_the_field(order: Resource, message: str) -> None:
    full = {"resourceType": "ServiceRequest", "id": "sr1", "code": {"coding": [{"system": HCPCS, "code": "S2102"}]}}
    problem = implausible_date_of_service({**full, **order}, TODAY)
    assert problem is not None and problem.startswith(message)


@pytest.mark.parametrize(
    "order",
    [{"occurrenceDateTime": "1900-01-01"}, {"occurrenceDateTime": "2031-02-16"}, {"authoredOn": "2026-02-16"}, {}],
)
def test_plausible_dates_of_service_pass(order: Resource) -> None:
    full = {"resourceType": "ServiceRequest", "id": "sr1", "code": {"coding": [{"system": HCPCS, "code": "S2102"}]}}
    assert implausible_date_of_service({**full, **order}, TODAY) is None


def test_a_tiny_authored_on_never_gives_a_negative_age(policy: Policy) -> None:
    order = service_request(HCPCS, "S2102", occurrence=None)
    order["authoredOn"] = "0005-01-01"
    a1 = criterion(run(policy, allogeneic_candidate(), order), "A1")
    assert a1.status == "unknown" and "-" not in a1.reason.split("old")[0].split(":")[-1]
    assert "after the date of service" in a1.reason


# -- 2. questionnaire answers are checked against the criterion --------------------------------------


def a3_after(policy: Policy, answers: dict[str, Any], authored: str = "2026-02-12") -> Any:
    base = [
        r
        for r in allogeneic_candidate()
        if not (r["resourceType"] == "Condition" and r["code"]["coding"][0]["code"] == "E16.A3")
    ]
    assert criterion(run(policy, base), "A3").status == "unknown"
    return criterion(run(policy, [*base, questionnaire_response(answers, authored=authored)]), "A3")


def test_a3_attested_recent_episode_is_met(policy: Policy) -> None:
    assert a3_after(policy, {"A3": True, "A3.date": date(2026, 1, 28)}).status == "met"


@pytest.mark.parametrize(
    ("answers", "authored", "says"),
    [
        ({"A3": True, "A3.date": date(2010, 1, 1)}, "2026-02-12", "not within the 365 days"),
        ({"A3": True, "A3.date": date(2027, 1, 1)}, "2026-02-12", "in the future"),
        ({"A3": True, "A3.date": date(2026, 2, 20)}, "2026-02-12", "in the future"),  # after the response
        ({"A3": True, "A3.date": date(2026, 1, 28)}, "2012-01-01", "older than the 365 days"),
        ({"A3": True, "A3.date": date(2026, 1, 28)}, "2026-03-05", "after the date of service"),
        ({"A3": False}, "2026-03-05", "after the date of service"),
    ],
)
def test_a3_attestation_that_does_not_fit_stays_unknown(
    policy: Policy, answers: dict[str, Any], authored: str, says: str
) -> None:
    a3 = a3_after(policy, answers, authored)
    assert a3.status == "unknown" and says in a3.reason


def test_a1_attested_birth_date_under_18_is_not_met(policy: Policy) -> None:
    resources = replace(allogeneic_candidate(), "Patient", patient(None))
    qr = questionnaire_response({"A1": True, "A1.date": date(2015, 5, 5)})
    a1 = criterion(run(policy, [*resources, qr]), "A1")
    assert a1.status == "not_met" and "10 years old" in a1.reason


def test_a1_attested_adult_birth_date_is_met(policy: Policy) -> None:
    resources = replace(allogeneic_candidate(), "Patient", patient(None))
    qr = questionnaire_response({"A1": True, "A1.date": date(1980, 5, 5)})
    assert criterion(run(policy, [*resources, qr]), "A1").status == "met"


def test_a9_attested_date_less_than_a_year_is_not_met_and_a_year_is_met(policy: Policy) -> None:
    infusion = procedure(CPT, "0584T", None)  # undated: A9 unknown until attested
    base = [*allogeneic_candidate(), infusion]
    assert criterion(run(policy, base), "A9").status == "unknown"
    recent = questionnaire_response({"A9": True, "A9.date": date(2025, 9, 1)})
    a9 = criterion(run(policy, [*base, recent]), "A9")
    assert a9.status == "not_met" and "2026-09-01" in a9.reason
    old = questionnaire_response({"A9": True, "A9.date": date(2024, 9, 1)})
    assert criterion(run(policy, [*base, old]), "A9").status == "met"


def test_b1_attested_pancreatectomy_planned_on_the_date_of_service_is_met(policy: Policy) -> None:
    resources = [
        patient("1980-01-01"),
        condition(ICD10CM, "K86.1", onset="2019-05-20", severity="24484000"),
    ]
    order = service_request(CPT, "0584T")
    base = [*resources, questionnaire_response({"B3": True}, authored="2026-02-10")]
    planned = questionnaire_response({"B1": True, "B1.date": DOS}, authored="2026-02-12")
    assert criterion(run(policy, [*base, planned], order), "B1").status == "met"
    stale = questionnaire_response({"B1": True, "B1.date": date(2025, 6, 1)}, authored="2026-02-12")
    b1 = criterion(run(policy, [*base, stale], order), "B1")
    assert b1.status == "unknown" and "not within the 30 days" in b1.reason


# -- 3. negated or incidental exclusion phrases ------------------------------------------------------


@pytest.mark.parametrize(
    "note",
    [
        "Indication: severe hypoglycemia unawareness, NOT for lifestyle reasons.",
        "Hypoglycemia persists despite lifestyle modification and insulin pump.",
        "Donor pancreas: no machine perfusion used.",
        "Patient cannot stop insulin safely",
        "Transplant for survival, not for increased longevity",
    ],
)
def test_negated_or_incidental_exclusion_text_does_not_exclude(policy: Policy, note: str) -> None:
    d = run(policy, allogeneic_candidate(), service_request(HCPCS, "S2102", note=note))
    assert d.excluded_by == () and d.outcome == "covered"


@pytest.mark.parametrize(
    ("note", "excluded"),
    [
        ("Requested for lifestyle reasons: wants to be insulin free", "X4"),
        ("Severe hypoglycemia, no ED visits; but the patient wants to stop taking insulin", "X4"),
        ("Donor pancreas on ex-situ machine perfusion", "X2"),
    ],
)
def test_stated_exclusion_still_excludes(policy: Policy, note: str, excluded: str) -> None:
    d = run(policy, allogeneic_candidate(), service_request(HCPCS, "S2102", note=note))
    assert d.excluded_by == (excluded,) and d.outcome == "not_covered"


def test_negation_rule() -> None:
    cues = ("no", "not", "despite")
    assert find_keyword("not for lifestyle reasons", ["lifestyle reasons"], cues) is None
    assert find_keyword("no ED visit. lifestyle reasons", ["lifestyle reasons"], cues) == "lifestyle reasons"
    assert find_keyword("nothing for lifestyle reasons", ["lifestyle reasons"], cues) == "lifestyle reasons"
    assert find_keyword("not for lifestyle reasons", ["lifestyle reasons"]) == "lifestyle reasons"


def test_coded_exclusion_is_never_cancelled(policy: Policy) -> None:
    order = service_request("http://www.cms.gov/Medicare/Coding/ICD10", "3E0J3U1", note="not a xenotransplant")
    order["code"]["coding"].append({"system": "http://snomed.info/sct", "code": "67562009"})
    d = run(policy, allogeneic_candidate(), order)
    assert "X3" in d.excluded_by


# -- 4. unreadable fields of an order with a trigger code --------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "named"),
    [
        ("occurrenceDateTime", 20260302, "occurrenceDateTime"),
        ("authoredOn", 20260216, "authoredOn"),
        ("occurrencePeriod", {"start": 20260302}, "occurrencePeriod.start"),
        ("occurrenceTiming", {"event": [20260302]}, "occurrenceTiming.event[0]"),
    ],
)
def test_unreadable_field_is_reported_and_the_order_stays_in_scope(
    policy: Policy, field: str, value: Any, named: str
) -> None:
    order = service_request(HCPCS, "S2102", occurrence=None)
    order[field] = value
    assert read_order(order) is None
    problem = order_read_problem(order)
    assert problem is not None and problem.startswith(f"{named}:")
    assert in_scope_orders(policy, [order]) == [order]


def test_readable_order_has_no_read_problem() -> None:
    assert order_read_problem(service_request(HCPCS, "S2102")) is None


# -- 5. unconfirmed conditions never deny ------------------------------------------------------------


@pytest.mark.parametrize("verification", ["provisional", "unconfirmed", "differential"])
def test_unconfirmed_kidney_transplant_status_asks_for_review(policy: Policy, verification: str) -> None:
    z94 = condition(ICD10CM, "Z94.0", verification=verification)
    a7 = criterion(run(policy, [*allogeneic_candidate(), z94]), "A7")
    assert a7.status == "unknown" and verification in a7.reason and "review" in a7.reason


@pytest.mark.parametrize("verification", ["confirmed", None])
def test_confirmed_kidney_transplant_status_denies(policy: Policy, verification: str | None) -> None:
    z94 = condition(ICD10CM, "Z94.0", verification=verification)
    assert criterion(run(policy, [*allogeneic_candidate(), z94]), "A7").status == "not_met"


def test_unconfirmed_other_diabetes_does_not_deny_a2(policy: Policy) -> None:
    resources = [r for r in allogeneic_candidate() if not (r["resourceType"] == "Condition" and "E10" in str(r))]
    t2d = condition(ICD10CM, "E11.9", verification="provisional")
    assert criterion(run(policy, [*resources, t2d]), "A2").status == "unknown"


# -- 6. birth date after the date of service ---------------------------------------------------------


def test_birth_date_after_the_date_of_service_is_a_data_error(policy: Policy) -> None:
    resources = replace(allogeneic_candidate(), "Patient", patient("9999-01-01"))
    a1 = criterion(run(policy, resources), "A1")
    assert a1.status == "unknown" and "after the date of service" in a1.reason
    assert "years old" not in a1.reason


def test_year_month_birth_date_in_december_does_not_crash(policy: Policy) -> None:
    resources = replace(allogeneic_candidate(), "Patient", patient("1990-12"))
    assert criterion(run(policy, resources), "A1").status == "met"


# -- 7. undated infusions ----------------------------------------------------------------------------


def test_undated_infusions_count_once_and_never_deny(policy: Policy) -> None:
    undated = [procedure(CPT, "0584T", None) for _ in range(3)]
    a8 = criterion(run(policy, [*allogeneic_candidate(), *undated]), "A8")
    assert a8.status == "met" and a8.reason.startswith("1 prior")


def test_limit_reached_only_through_an_undated_record_asks_for_review(policy: Policy) -> None:
    prior = [
        procedure(CPT, "0584T", "2019-01-01"),
        procedure(CPT, "0584T", "2021-01-01"),
        procedure(CPT, "0584T", None),
    ]
    a8 = criterion(run(policy, [*allogeneic_candidate(), *prior]), "A8")
    assert a8.status == "unknown" and "review" in a8.reason


def test_three_dated_infusions_still_deny(policy: Policy) -> None:
    prior = [procedure(CPT, "0584T", d) for d in ("2019-01-01", "2021-01-01", "2023-01-01")]
    assert criterion(run(policy, [*allogeneic_candidate(), *prior]), "A8").status == "not_met"


# -- 8. HbA1c units ----------------------------------------------------------------------------------


def _obs(value: float, unit: str | None) -> ObservationFact:
    return ObservationFact("Observation/o", FactConcept(), "final", DOS, None, value, unit, FactConcept())


@pytest.mark.parametrize(
    ("value", "unit", "percent"),
    [
        (8.1, "%{HbA1c}", 8.1),
        (8.1, "% Hb", 8.1),
        (8.1, "%", 8.1),
        (8.1, None, 8.1),
        (64.0, "mmol/mol{Hb}", 8.01),
        (64.0, None, None),
        (8.1, "mg/dL", None),
    ],
)
def test_hba1c_units(value: float, unit: str | None, percent: float | None) -> None:
    assert hba1c_percent(_obs(value, unit)) == percent


def test_unusable_hba1c_unit_is_named_in_the_reason(policy: Policy) -> None:
    resources = [r for r in allogeneic_candidate() if r["resourceType"] != "Observation"]
    a4 = criterion(run(policy, [*resources, observation("4548-4", 8.1, "g/L", days_ago(20))]), "A4")
    assert a4.status == "unknown" and "unit" in a4.reason and "No HbA1c" not in a4.reason
    annotated = observation("4548-4", 8.1, "%{HbA1c}", days_ago(20))
    assert criterion(run(policy, [*resources, annotated]), "A4").status == "met"


# -- 9. partial occurrence dates ---------------------------------------------------------------------


@pytest.mark.parametrize(("occurrence", "expected"), [("2026", "2026-02-16"), ("2026-02", "2026-02-16")])
def test_partial_occurrence_gives_way_to_a_later_authored_on(occurrence: str, expected: str) -> None:
    order = service_request(HCPCS, "S2102", occurrence=occurrence)
    order["authoredOn"] = "2026-02-16"
    assert date_of_service_for(order, TODAY) == date.fromisoformat(expected)


def test_partial_occurrence_after_authored_on_is_kept() -> None:
    order = service_request(HCPCS, "S2102", occurrence="2026-04")
    order["authoredOn"] = "2026-02-16"
    assert date_of_service_for(order, TODAY) == date(2026, 4, 1)


# -- 10. Lantidra administrations --------------------------------------------------------------------


def test_lantidra_administrations_are_read() -> None:
    facts = read_facts(record([lantidra_administration("2024-01-01")]))
    assert [m.resource_type for m in facts.medications] == ["MedicationAdministration"]


def test_lantidra_administrations_count_as_prior_infusions(policy: Policy) -> None:
    given = [lantidra_administration(d) for d in ("2020-01-01", "2022-01-01", "2024-01-01")]
    not_given = lantidra_administration("2025-01-01", status="not-done")
    d = run(policy, [*allogeneic_candidate(), *given, not_given])
    assert criterion(d, "A8").status == "not_met"
    assert "2024-01-01" in criterion(d, "A8").reason


def test_a_lantidra_administration_starts_the_repeat_clock(policy: Policy) -> None:
    insulin = medication_request(RXNORM, "311041", status="active", authored=days_ago(30))
    d = run(policy, [*allogeneic_candidate(), insulin, lantidra_administration(days_ago(100))])
    assert criterion(d, "A9").status == "not_met" and d.earliest_eligible_date is not None


def test_policy_declares_the_medication_administrations_prefetch_key(policy: Policy) -> None:
    assert policy.prefetch["medicationAdministrations"] == "MedicationAdministration?patient={{context.patientId}}"


def test_a_date_rule_without_its_parameter_is_refused_at_load() -> None:
    broken = {"criteria": {"A3": {"question": {"link_id": "A3", "requires": "detail", "date_rule": "within_window"}}}}
    with pytest.raises(PolicyError, match="A3.question.date_rule"):
        load_policy(overrides=broken)
    missing = {"criteria": {"A6": {"question": {"link_id": "A6", "requires": "date", "date_rule": "wait_elapsed"}}}}
    with pytest.raises(PolicyError, match="wait_days"):
        load_policy(overrides=missing)
