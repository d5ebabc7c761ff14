"""The policy file: validated at start-up, errors name the field, the result is frozen."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from fhir.resources.R4B.questionnaire import Questionnaire

from service.policy import Policy, PolicyError, load_policy
from service.policy.loader import DEFAULT_POLICY_DIR
from service.policy.predicates import PREDICATE_PARAMS, PREDICATES

PREFETCH_KEYS = {
    "patient",
    "coverage",
    "conditions",
    "observations",
    "procedures",
    "medicationRequests",
    "medicationStatements",
    "medicationAdministrations",
    "encounters",
    "devices",
    "questionnaireResponses",
}


@pytest.fixture(scope="module")
def policy() -> Policy:
    return load_policy()


def broken_copy(tmp_path: Path, edit: Callable[[dict[str, Any]], None]) -> Path:
    target = tmp_path / "policy"
    shutil.copytree(DEFAULT_POLICY_DIR, target)
    path = target / "policy.yaml"
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    edit(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def test_the_packaged_policy_loads(policy: Policy) -> None:
    assert policy.id == "pancreatic-islet-cell-transplantation"
    assert re.fullmatch(r"\d+\.\d+\.\d+", policy.version)
    assert policy.effective_start.isoformat() == "2026-01-24"
    assert policy.url.startswith("https://healthplan.org/")
    assert policy.plan_label == "THP Health Plan"
    assert policy.questionnaire_url == f"{policy.questionnaire['url']}|{policy.questionnaire['version']}"
    assert policy.lantidra_note == "review"
    assert list(policy.criteria) == ["A1", "A2", "A3", "A4", "A5", "A6", "A7", "A8", "A9", "B1", "B2", "B3"]
    assert list(policy.exclusions) == ["X1", "X2", "X3", "X4"]


def test_prefetch_templates_use_only_the_patient_id_token(policy: Policy) -> None:
    assert set(policy.prefetch) == PREFETCH_KEYS
    for template in policy.prefetch.values():
        assert re.findall(r"\{\{[^}]*\}\}", template)
        assert set(re.findall(r"\{\{[^}]*\}\}", template)) == {"{{context.patientId}}"}
    assert policy.prefetch["patient"] == "Patient/{{context.patientId}}"
    assert policy.prefetch["coverage"] == "Coverage?patient={{context.patientId}}&status=active"


def test_every_criterion_names_a_predicate_with_a_rationale_and_every_unknown_has_a_question(policy: Policy) -> None:
    assert set(PREDICATES) == set(PREDICATE_PARAMS)
    for spec in [*policy.criteria.values(), *policy.exclusions.values()]:
        assert spec.predicate in PREDICATES and spec.rationale
    # A8 is the only criterion that cannot be unknown (DESIGN §3); exclusions are met/not_met.
    asked = {cid for cid, spec in policy.criteria.items() if spec.question is not None}
    assert asked == {"A1", "A2", "A3", "A4", "A5", "A6", "A7", "A9", "B1", "B2", "B3"}


def test_the_questionnaire_is_valid_fhir_and_has_an_item_per_question(policy: Policy) -> None:
    Questionnaire.model_validate(policy.questionnaire)
    assert policy.questionnaire["status"] == "active"
    link_ids = {i["linkId"] for i in policy.questionnaire["item"]}
    assert {s.question.link_id for s in policy.criteria.values() if s.question} == link_ids
    json.dumps(policy.questionnaire)  # plain JSON: the API serves it as is


def test_policy_is_frozen(policy: Policy) -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        policy.version = "9.9.9"  # type: ignore[misc]
    with pytest.raises(TypeError):
        policy.criteria["A3"].params["window_days"] = 1  # type: ignore[index]


def test_overrides_flip_the_lantidra_switch_and_are_validated() -> None:
    assert load_policy(overrides={"lantidra_note": "investigational"}).lantidra_note == "investigational"
    with pytest.raises(PolicyError, match=r"^lantidra_note: 'maybe' is not one of"):
        load_policy(overrides={"lantidra_note": "maybe"})
    tuned = load_policy(overrides={"criteria": {"A3": {"params": {"min_events": 3}}}})
    assert tuned.criteria["A3"].params["min_events"] == 3
    assert tuned.criteria["A3"].params["window_days"] == 365  # deep merge keeps the rest


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(data: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = data
        for part in parents:
            node = node[part]
        if value is _DELETE:
            del node[last]
        else:
            node[last] = value

    return edit


_DELETE = object()


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (_set("criteria.A3.params.window_days", "x"), "criteria.A3.params.window_days: 'x' is not of type 'integer'"),
        (_set("criteria.A1.params.years", -1), "criteria.A1.params.years: -1 is less than the minimum of 0"),
        (_set("criteria.A2.predicate", "has_type_one"), "criteria.A2.predicate: unknown predicate 'has_type_one'"),
        (
            _set("criteria.A4.params.valueset", "hba1c-typo"),
            "criteria.A4.params.valueset: no ValueSet with id 'hba1c-typo'",
        ),
        (
            _set("criteria.A4.params.target_percent", _DELETE),
            "criteria.A4.params.target_percent: required by predicate",
        ),
        (_set("criteria.A5.question", {"link_id": "Z9", "requires": "date"}), "criteria.A5.question.link_id: 'Z9'"),
        (_set("criteria.B1.params.colour", "red"), "criteria.B1.params: 'colour' does not match any of the regexes"),
        (_set("criteria.A6", _DELETE), "criteria: 'A6' is a required property"),
        (_set("version", "2026.1"), "version: '2026.1' does not match"),
        (_set("triggers.route", "nope"), "triggers.route: no ValueSet with id 'nope'"),
        (_set("prefetch.conditions", 5), "prefetch.conditions: 5 is not of type 'string'"),
        (_set("effective.start", "2026-02-30"), "effective.start: '2026-02-30' is not a date"),
    ],
)
def test_a_broken_policy_file_names_the_field(
    tmp_path: Path, edit: Callable[[dict[str, Any]], None], message: str
) -> None:
    path = broken_copy(tmp_path, edit)
    with pytest.raises(PolicyError) as info:
        load_policy(path)
    assert str(info.value).startswith(message), str(info.value)


def test_broken_files_around_the_policy(tmp_path: Path) -> None:
    path = broken_copy(tmp_path, lambda d: None)
    (path.parent / "valuesets" / "hba1c.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(PolicyError, match=r"^valuesets/hba1c\.json"):
        load_policy(path.parent)
    with pytest.raises(PolicyError, match="cannot read the policy file"):
        load_policy(tmp_path / "missing.yaml")
    (tmp_path / "bad.yaml").write_text("id: [unclosed", encoding="utf-8")
    with pytest.raises(PolicyError, match="not valid YAML"):
        load_policy(tmp_path / "bad.yaml")
