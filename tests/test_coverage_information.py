"""The CRD coverage-information extension and its update system action (cards/coverage_information.py)."""

from __future__ import annotations

import copy
import dataclasses
from datetime import date
from typing import Any

import pytest

from cards import RenderContext, load_wording, render_response
from cards.coverage_information import (
    EXT_COVERAGE_INFORMATION,
    CoverageProblem,
    coverage_assertion_id,
    coverage_information_action,
    coverage_information_extension,
    normalise_crd_version,
    requested_crd_version,
    select_coverage,
)
from cards.wording import Wording
from service.decision import Decision
from tests.card_samples import COVERAGE, sample_cases
from tests.conformance import check_coverage_information, check_update_echo

TODAY = date(2026, 6, 1)
OUTCOMES = ("covered", "not_covered", "documentation_needed", "indeterminate")


@pytest.fixture(scope="module")
def wording() -> Wording:
    return load_wording()


@pytest.fixture(scope="module")
def samples() -> dict[str, Any]:
    cases = sample_cases()
    return {
        "met": cases[0],
        "not_met": cases[1],
        "documentation": cases[2],
        "excluded": cases[3],
        "multi": cases[4],
    }


def _decision(samples: dict[str, Any], outcome: str) -> Decision:
    by_outcome = {
        "covered": samples["met"].decisions[0],
        "not_covered": samples["not_met"].decisions[0],
        "documentation_needed": samples["documentation"].decisions[0],
        "indeterminate": dataclasses.replace(
            samples["met"].decisions[0], outcome="indeterminate", data_gaps=("Procedure: timeout",)
        ),
    }
    return by_outcome[outcome]


def _extension(decision: Decision, wording: Wording, hook: str = "order-sign", version: str = "2.0") -> dict[str, Any]:
    return coverage_information_extension(
        decision,
        coverage_ref="Coverage/cov-1",
        assertion_id="a-1",
        assertion_date=TODAY,
        hook=hook,
        crd_version=version,  # type: ignore[arg-type]
        wording=wording,
    )


def _codes(ext: dict[str, Any]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for part in ext["extension"]:
        if "valueCode" in part:
            out.setdefault(part["url"], []).append(part["valueCode"])
    return out


def _urls(ext: dict[str, Any]) -> list[str]:
    return [p["url"] for p in ext["extension"]]


# --------------------------------------------------------------------------- the DESIGN.md §4 table


def test_covered_asks_for_prior_authorization_with_documentation(samples: dict[str, Any], wording: Wording) -> None:
    ext = _extension(_decision(samples, "covered"), wording)
    assert ext["url"] == EXT_COVERAGE_INFORMATION
    assert _codes(ext) == {
        "covered": ["covered"],
        "pa-needed": ["auth-needed"],
        "doc-needed": ["clinical"],
        "doc-purpose": ["withpa"],
    }
    assert "reason" in _urls(ext)  # 2.2.1 q8: doc-purpose needs a reason
    questionnaire = [p["valueCanonical"] for p in ext["extension"] if p["url"] == "questionnaire"]
    assert questionnaire == [samples["met"].decisions[0].questionnaire_url]


def test_not_covered_names_the_failing_criteria_and_has_no_pa_needed(samples: dict[str, Any], wording: Wording) -> None:
    ext = _extension(_decision(samples, "not_covered"), wording)
    assert _codes(ext) == {"covered": ["not-covered"]}
    reasons = [p["valueCodeableConcept"]["text"] for p in ext["extension"] if p["url"] == "reason"]
    assert len(reasons) == 1 and "A8 At most 3 infusions" in reasons[0]


def test_exclusion_is_named_in_the_not_covered_reason(samples: dict[str, Any], wording: Wording) -> None:
    ext = _extension(samples["excluded"].decisions[0], wording)
    reasons = [p["valueCodeableConcept"]["text"] for p in ext["extension"] if p["url"] == "reason"]
    assert "X1 Bioartificial pancreas device" in reasons[0]


def test_documentation_needed_is_conditional_with_questionnaire(samples: dict[str, Any], wording: Wording) -> None:
    decision = _decision(samples, "documentation_needed")
    ext = _extension(decision, wording)
    assert _codes(ext) == {
        "covered": ["conditional"],
        "pa-needed": ["auth-needed"],
        "doc-needed": ["clinical"],
        "info-needed": ["OTH"],
    }
    reason = next(p["valueCodeableConcept"]["text"] for p in ext["extension"] if p["url"] == "reason")
    assert "B2 Severe chronic pancreatitis" in reason and "B3" in reason and "B1" not in reason


def test_order_select_never_asks_for_clinical_documentation(samples: dict[str, Any], wording: Wording) -> None:
    for outcome in OUTCOMES:
        ext = _extension(_decision(samples, outcome), wording, hook="order-select")
        assert "doc-needed" not in _urls(ext) and "questionnaire" not in _urls(ext), outcome  # CRD hook-19
        assert "doc-purpose" not in _urls(ext)


def test_indeterminate_for_22_callers_says_technical(samples: dict[str, Any], wording: Wording) -> None:
    ext = _extension(_decision(samples, "indeterminate"), wording, version="2.2")
    assert _codes(ext)["covered"] == ["indeterminate"]
    reason = next(p["valueCodeableConcept"] for p in ext["extension"] if p["url"] == "reason")
    assert reason["coding"] == [{"system": "http://hl7.org/fhir/us/davinci-crd/CodeSystem/temp", "code": "technical"}]
    assert "Procedure: timeout" in reason["text"]
    assert check_coverage_information(ext, "2.2.1") == []
    # 2.0.1 has no "indeterminate": the same extension must fail there, which is why 2.0 callers differ.
    assert any("indeterminate" in e for e in check_coverage_information(ext, "2.0.1"))


def test_indeterminate_for_20_callers_is_conditional_with_reason_text(
    samples: dict[str, Any], wording: Wording
) -> None:
    ext = _extension(_decision(samples, "indeterminate"), wording, version="2.0")
    assert _codes(ext) == {"covered": ["conditional"], "pa-needed": ["auth-needed"], "info-needed": ["OTH"]}
    reason = next(p["valueCodeableConcept"] for p in ext["extension"] if p["url"] == "reason")
    assert "coding" not in reason and "Procedure: timeout" in reason["text"]


@pytest.mark.parametrize("outcome", OUTCOMES)
@pytest.mark.parametrize("hook", ["order-sign", "order-dispatch", "appointment-book", "order-select"])
@pytest.mark.parametrize("version", ["2.0", "2.2"])
def test_every_extension_is_valid_under_the_callers_version_and_cross_version_safe(
    samples: dict[str, Any], wording: Wording, outcome: str, hook: str, version: str
) -> None:
    decision = dataclasses.replace(_decision(samples, outcome), notes=("lantidra_conflict",))
    ext = _extension(decision, wording, hook=hook, version=version)
    assert check_coverage_information(ext, "2.2.1") == []
    if not (version == "2.2" and outcome == "indeterminate"):
        assert check_coverage_information(ext, "2.0.1") == []
    urls = _urls(ext)
    for always in ("coverage", "covered", "date", "coverage-assertion-id"):
        assert urls.count(always) == 1
    assert urls.count("doc-needed") <= 1


def test_lantidra_conflict_adds_a_reason_unless_not_covered(samples: dict[str, Any], wording: Wording) -> None:
    text = wording.coverage_information["lantidra_conflict_reason"]
    covered = _extension(_decision(samples, "covered"), wording)
    assert text in [p["valueCodeableConcept"]["text"] for p in covered["extension"] if p["url"] == "reason"]
    plain = dataclasses.replace(_decision(samples, "covered"), notes=())
    assert text not in str(_extension(plain, wording))


# --------------------------------------------------------------------------- coverage selection


def _coverage(cid: str, **fields: Any) -> dict[str, Any]:
    return {"resourceType": "Coverage", "id": cid, "status": "active", **fields}


def test_select_coverage_takes_the_single_active_coverage() -> None:
    chosen = select_coverage([_coverage("c1"), _coverage("c2", status="cancelled")], on=TODAY)
    assert isinstance(chosen, dict) and chosen["id"] == "c1"


def test_select_coverage_reports_none_when_nothing_is_active() -> None:
    expired = _coverage("c3", period={"start": "2020-01-01", "end": "2025-12-31"})
    problem = select_coverage(
        [expired, {"resourceType": "Patient", "id": "p"}, _coverage("", status="active")], on=TODAY
    )
    assert problem == CoverageProblem(kind="none", count=0)
    assert select_coverage([]) == CoverageProblem(kind="none", count=0)


def test_select_coverage_prefers_the_primary_by_order_else_reports_ambiguity() -> None:
    primary = select_coverage([_coverage("c2", order=2), _coverage("c1", order=1)])
    assert isinstance(primary, dict) and primary["id"] == "c1"
    assert select_coverage([_coverage("a"), _coverage("b")]) == CoverageProblem(kind="several", count=2)
    assert select_coverage([_coverage("a", order=1), _coverage("b", order=1)]) == CoverageProblem(
        kind="several", count=2
    )


def test_select_coverage_counts_a_repeated_coverage_once() -> None:
    chosen = select_coverage([_coverage("c1"), _coverage("c1")])
    assert isinstance(chosen, dict) and chosen["id"] == "c1"


# --------------------------------------------------------------------------- coverage-assertion-id


def test_coverage_assertion_id_is_stable_and_depends_on_policy_orders_and_coverage(samples: dict[str, Any]) -> None:
    decisions = samples["multi"].decisions
    first = coverage_assertion_id(decisions, "Coverage/cov-1")
    assert first == coverage_assertion_id(tuple(reversed(decisions)), "Coverage/cov-1")  # order set, not order
    assert first != coverage_assertion_id(decisions, "Coverage/cov-2")
    assert first != coverage_assertion_id(decisions[:1], "Coverage/cov-1")
    newer = tuple(dataclasses.replace(d, policy_version="2027.1.0") for d in decisions)
    assert first != coverage_assertion_id(newer, "Coverage/cov-1")
    assert first != coverage_assertion_id(decisions, "Coverage/cov-1", scope="https://ehr.example.org/fhir")


def test_one_assertion_id_per_coverage_within_a_response(samples: dict[str, Any]) -> None:
    case = samples["multi"]
    body = render_response(case.decisions, case.context)
    ids = {
        p["valueString"]
        for action in body["systemActions"]
        for ext in action["resource"]["extension"]
        for p in ext["extension"]
        if p["url"] == "coverage-assertion-id"
    }
    assert len(body["systemActions"]) == 2 and len(ids) == 1


# --------------------------------------------------------------------------- the update action


def test_action_echoes_the_draft_unchanged_plus_the_extension(samples: dict[str, Any], wording: Wording) -> None:
    case = samples["met"]
    draft = next(iter(case.context.orders_by_ref.values()))
    before = copy.deepcopy(draft)
    ext = _extension(case.decisions[0], wording)
    action = coverage_information_action(draft, ext, "describe")
    assert action is not None
    assert action["type"] == "update" and action["description"] == "describe" and "resourceId" not in action
    assert check_update_echo(draft, action["resource"]) == []
    assert action["resource"]["extension"] == [ext]
    action["resource"]["code"]["coding"][0]["code"] = "changed"  # a deep copy: the draft is untouched
    assert draft == before


def test_action_replaces_our_old_extension_and_keeps_others(samples: dict[str, Any], wording: Wording) -> None:
    decision = samples["met"].decisions[0]
    draft = copy.deepcopy(next(iter(samples["met"].context.orders_by_ref.values())))
    old = _extension(dataclasses.replace(decision, outcome="documentation_needed"), wording)
    other_payer = copy.deepcopy(old)
    other_payer["extension"][0] = {"url": "coverage", "valueReference": {"reference": "Coverage/other"}}
    unrelated = {"url": "http://example.org/ext", "valueString": "kept"}
    draft["extension"] = [unrelated, old, other_payer]
    new = _extension(decision, wording)
    action = coverage_information_action(draft, new, "describe")
    assert action is not None
    assert action["resource"]["extension"] == [unrelated, other_payer, new]
    assert check_update_echo(draft, action["resource"]) == []


def test_no_action_when_the_order_already_carries_the_same_assertion(samples: dict[str, Any], wording: Wording) -> None:
    decision = samples["met"].decisions[0]
    draft = copy.deepcopy(next(iter(samples["met"].context.orders_by_ref.values())))
    yesterday = _extension(decision, wording)
    yesterday["extension"] = [
        {"url": "date", "valueDate": "2026-05-31"} if p["url"] == "date" else p for p in yesterday["extension"]
    ]
    draft["extension"] = [yesterday]
    assert coverage_information_action(draft, _extension(decision, wording), "describe") is None  # resp-35


# --------------------------------------------------------------------------- versions and rendering


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2.0", "2.0"),
        ("2.0.1", "2.0"),
        ("2.2", "2.2"),
        ("2.2.1", "2.2"),
        ("2.1", "2.2"),
        (None, "2.0"),
        ("x", "2.0"),
        (2.2, "2.0"),
        ("3.0", "2.2"),
    ],
)
def test_normalise_crd_version(value: Any, expected: str) -> None:
    assert normalise_crd_version(value) == expected


def test_requested_crd_version_reads_the_request_extension() -> None:
    assert requested_crd_version({"davinci-crd.requestedVersion": "2.2"}) == "2.2"
    assert requested_crd_version({}) == "2.0"
    assert requested_crd_version(None) == "2.0"


def _context(case: Any, **changes: Any) -> RenderContext:
    return dataclasses.replace(case.context, **changes)


def test_without_a_coverage_cards_still_explain_and_no_extension_is_sent(
    samples: dict[str, Any], wording: Wording
) -> None:
    case = samples["met"]
    body = render_response(case.decisions, _context(case, coverages=[]))
    assert body["systemActions"] == []  # present on a primary hook (Inferno item 8), but nothing to send
    summary = body["cards"][0]
    assert wording.outcome_lines["coverage_problem"] in summary["detail"]
    ambiguous = render_response(case.decisions, _context(case, coverages=[_coverage("a"), _coverage("b")]))
    assert ambiguous["systemActions"] == []


def test_secondary_hook_without_actions_omits_system_actions(samples: dict[str, Any]) -> None:
    case = samples["met"]
    body = render_response(case.decisions, _context(case, hook="order-select", coverages=[]))
    assert "systemActions" not in body and body["cards"]


def test_coverage_info_switched_off_by_configuration(samples: dict[str, Any]) -> None:
    case = samples["met"]
    body = render_response(case.decisions, _context(case, configuration={"coverage-info": False}))
    assert body["systemActions"] == []
    assert all(c["source"]["topic"]["code"] != "coverage-info" for c in body["cards"])


def test_order_missing_from_orders_by_ref_gets_no_action(samples: dict[str, Any]) -> None:
    case = samples["multi"]
    only_first = dict(list(case.context.orders_by_ref.items())[:1])
    body = render_response(case.decisions, _context(case, orders_by_ref=only_first))
    assert [a["resource"]["id"] for a in body["systemActions"]] == ["sr-0584t"]


def test_assertion_date_comes_from_the_context(samples: dict[str, Any]) -> None:
    case = samples["met"]
    body = render_response(case.decisions, _context(case, assertion_date=date(2027, 2, 3)))
    ext = body["systemActions"][0]["resource"]["extension"][0]
    assert {"url": "date", "valueDate": "2027-02-03"} in ext["extension"]
    coverage = {"url": "coverage", "valueReference": {"reference": f"Coverage/{COVERAGE['id']}"}}
    assert coverage in ext["extension"]
