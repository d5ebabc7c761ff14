"""Cards, wording, configuration options and the gallery (cards/)."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from markdown_it import MarkdownIt

from cards import (
    RenderContext,
    WordingError,
    configuration_options,
    effective_configuration,
    load_wording,
    render_response,
)
from cards.cards import SUMMARY_MAX, cap_summary, card_uuid, md_escape
from cards.gallery import gallery_html
from cards.wording import Wording
from service.cli import main
from service.decision import CriterionResult, Evidence
from tests.card_samples import entries_from_cases, request_for, sample_cases
from tests.conformance import card_kinds, check_response

WORDING_FILE = (
    Path(__file__).resolve().parent.parent
    / "service"
    / "policies"
    / "pancreatic-islet-cell-transplantation"
    / "cards.yaml"
)


@pytest.fixture(scope="module")
def wording() -> Wording:
    return load_wording()


@pytest.fixture(scope="module")
def cases() -> dict[str, Any]:
    found = sample_cases()
    return dict(zip(["met", "not_met", "documentation", "excluded", "multi"], found, strict=True))


def _render(case: Any, **changes: Any) -> dict[str, Any]:
    return render_response(case.decisions, dataclasses.replace(case.context, **changes))


def _by_topic(body: dict[str, Any], code: str) -> list[dict[str, Any]]:
    return [c for c in body["cards"] if c["source"]["topic"]["code"] == code]




# --------------------------------------------------------------------------- summary card


@pytest.mark.parametrize(
    ("name", "indicator", "summary_key"),
    [("met", "info", "covered"), ("not_met", "warning", None), ("documentation", "warning", None)],
)
def test_summary_card_indicator_and_summary(
    cases: dict[str, Any], wording: Wording, name: str, indicator: str, summary_key: str | None
) -> None:
    summary = _by_topic(_render(cases[name]), "coverage-info")[0]
    assert summary["indicator"] == indicator
    if summary_key:
        assert summary["summary"] == wording.summary(summary_key)
    assert "links" not in summary and "suggestions" not in summary  # an Instructions card
    assert card_kinds(summary) == {"instructions"}


def test_not_covered_summary_gives_the_first_reason(cases: dict[str, Any]) -> None:
    summary = _by_topic(_render(cases["not_met"]), "coverage-info")[0]["summary"]
    assert summary == "Not covered: 3 prior islet infusions on record; the policy allows at most 3"
    excluded = _by_topic(_render(cases["excluded"]), "coverage-info")[0]
    assert "encapsulated bioartificial islet device" in excluded["summary"]
    assert excluded["indicator"] == "warning"


def test_documentation_summary_counts_open_criteria(cases: dict[str, Any], wording: Wording) -> None:
    summary = _by_topic(_render(cases["documentation"]), "coverage-info")[0]["summary"]
    assert summary == wording.counted_summary("documentation_needed", 2) == "Documentation needed: 2 criteria"
    assert wording.counted_summary("documentation_needed", 1) == "Documentation needed: 1 criterion"


def test_indeterminate_summary_says_what_failed(cases: dict[str, Any]) -> None:
    case = cases["met"]
    broken = dataclasses.replace(case.decisions[0], outcome="indeterminate", data_gaps=("Procedure: timeout",))
    body = render_response((broken,), case.context)
    summary = _by_topic(body, "coverage-info")[0]
    assert summary["indicator"] == "warning" and "Procedure: timeout" in summary["summary"]


def test_summary_is_capped_at_139_characters(cases: dict[str, Any]) -> None:
    case = cases["not_met"]
    decision = case.decisions[0]
    long_reason = "Three prior islet infusions are on record " * 10
    pathway = decision.pathways[0]
    criteria = tuple(
        dataclasses.replace(c, reason=long_reason) if c.status == "not_met" else c for c in pathway.criteria
    )
    changed = dataclasses.replace(decision, pathways=(dataclasses.replace(pathway, criteria=criteria),))
    summary = _by_topic(render_response((changed,), case.context), "coverage-info")[0]["summary"]
    assert len(summary) == SUMMARY_MAX and summary.endswith("…")
    assert cap_summary("x" * 139) == "x" * 139 and len(cap_summary("x" * 140)) == 139


def test_detail_has_the_criteria_table_evidence_dates_and_policy_version(cases: dict[str, Any]) -> None:
    detail = _by_topic(_render(cases["not_met"]), "coverage-info")[0]["detail"]
    assert "| Criterion | Status | Reason | Evidence |" in detail
    assert "| A8 At most 3 infusions | ❌ Not met |" in detail
    assert "2023-02-01" in detail and "Procedure/p-inf1" in detail  # evidence with dates and references
    assert "version 2026.1.0" in detail
    assert "#### Exclusions" in detail and "No exclusion applies." in detail
    assert "| X1" not in detail  # exclusions that do not apply get no rows
    html = MarkdownIt("gfm-like", {"linkify": False}).render(detail)
    assert html.count("<table>") == 1


def test_excluded_detail_lists_the_applying_exclusion_first(cases: dict[str, Any]) -> None:
    detail = _by_topic(_render(cases["excluded"]), "coverage-info")[0]["detail"]
    exclusions = detail.split("#### Exclusions", 1)[1]
    rows = [line for line in exclusions.splitlines() if line.startswith("| X")]
    assert len(rows) == 1 and rows[0].startswith("| X1 Bioartificial pancreas device | ❌ Applies |")
    assert "No exclusion applies." not in detail


def test_exclusion_that_could_not_be_checked_is_shown(cases: dict[str, Any]) -> None:
    case = cases["met"]
    decision = case.decisions[0]
    unknown = dataclasses.replace(decision.exclusions[3], status="unknown", reason="Order notes unreadable.")
    changed = dataclasses.replace(decision, exclusions=(*decision.exclusions[:3], unknown))
    detail = _by_topic(render_response((changed,), case.context), "coverage-info")[0]["detail"]
    assert "| X4 Lifestyle or longevity indication | ❔ Unknown | Order notes unreadable. |" in detail


def test_lantidra_conflict_note_only_when_the_decision_says_so(cases: dict[str, Any], wording: Wording) -> None:
    note = wording.notes["lantidra_conflict"]
    met = _by_topic(_render(cases["met"]), "coverage-info")[0]["detail"]
    assert note in met
    autologous = _by_topic(_render(cases["documentation"]), "coverage-info")[0]["detail"]
    assert note not in autologous


def test_record_text_cannot_break_the_markdown(cases: dict[str, Any]) -> None:
    case = cases["met"]
    decision = case.decisions[0]
    hostile = CriterionResult(
        "A1",
        "Age | 18 <b>",
        "met",
        "Reason with | pipe, [link](javascript:alert(1)) and <script>x</script>\nnew line",
        (Evidence(reference="Patient/p|1", display="*bold* _it_ `code`", date="2000-01-01T10:00:00Z"),),
    )
    pathway = decision.pathways[0]
    changed = dataclasses.replace(
        decision, pathways=(dataclasses.replace(pathway, criteria=(hostile, *pathway.criteria[1:])),)
    )
    detail = _by_topic(render_response((changed,), case.context), "coverage-info")[0]["detail"]
    html = MarkdownIt("gfm-like", {"linkify": False}).render(detail)
    first_table = html.split("<tbody>", 1)[1].split("</tbody>", 1)[0]
    first_row = first_table.split("</tr>", 1)[0]
    assert first_row.count("<td>") == 4  # the pipes did not add columns
    assert "<script>" not in html and "<b>" not in html and 'href="javascript' not in html
    assert "2000-01-01" in first_row and "T10:00" not in first_row
    assert md_escape("a|b") == "a\\|b"


def test_policy_url_is_the_source_url_and_plan_label_the_source_label(cases: dict[str, Any]) -> None:
    decision = cases["met"].decisions[0]
    for card in _render(cases["met"])["cards"]:
        assert card["source"]["label"] == decision.plan_label
        assert card["source"]["url"] == decision.policy_url
        assert card["extension"] == {"davinci-crd.associated-resource": [{"reference": decision.order.reference}]}


@pytest.mark.parametrize(
    ("version", "system"),
    [
        (None, "http://hl7.org/fhir/us/davinci-crd/CodeSystem/temp"),
        ("2.2", "http://terminology.hl7.org/CodeSystem/cdshooks-card-type"),
    ],
)
def test_topic_system_follows_the_crd_version(cases: dict[str, Any], version: str | None, system: str) -> None:
    body = _render(cases["documentation"], crd_version=version or "2.0")
    assert {c["source"]["topic"]["system"] for c in body["cards"]} == {system}
    assert check_response(request_for(cases["documentation"], version=version), body) == []


def test_override_reasons_on_cards_that_can_be_overridden(cases: dict[str, Any]) -> None:
    assert "overrideReasons" not in _by_topic(_render(cases["met"]), "coverage-info")[0]
    for name in ("not_met", "documentation"):
        reasons = _by_topic(_render(cases[name]), "coverage-info")[0]["overrideReasons"]
        assert reasons and all({"system", "code", "display"} <= set(r) for r in reasons)


# --------------------------------------------------------------------------- reference and documentation


def test_reference_card_links_the_policy_with_absolute_links_only(cases: dict[str, Any], wording: Wording) -> None:
    decision = cases["met"].decisions[0]
    (card,) = _by_topic(_render(cases["met"]), "guideline")
    assert card["links"] == [{"label": wording.link_labels["policy"], "url": decision.policy_url, "type": "absolute"}]
    assert card_kinds(card) == {"external-reference"}
    assert card["summary"] == "Medical policy: Pancreatic Islet Cell Transplantation"


def test_documentation_card_launches_dtr_with_app_context(cases: dict[str, Any], wording: Wording) -> None:
    body = _render(cases["documentation"])
    (card,) = _by_topic(body, "appropriate-use")
    (link,) = card["links"]
    assert link["type"] == "smart" and link["url"] == wording.dtr_launch_url
    context = json.loads(link["appContext"])
    decision = cases["documentation"].decisions[0]
    assert context["questionnaire"] == decision.questionnaire_url
    assert context["order"] == decision.order.reference
    ids = {
        p["valueString"]
        for p in body["systemActions"][0]["resource"]["extension"][0]["extension"]
        if p["url"] == "coverage-assertion-id"
    }
    assert {context["coverageAssertionId"]} == ids
    assert "B2 Severe chronic pancreatitis" in card["detail"] and "B1" not in card["detail"]
    assert card_kinds(card) == {"launch-smart"}


def test_dtr_launch_url_can_be_overridden_per_deployment(cases: dict[str, Any]) -> None:
    body = _render(cases["documentation"], dtr_launch_url="https://dtr.plan.example/launch")
    assert _by_topic(body, "appropriate-use")[0]["links"][0]["url"] == "https://dtr.plan.example/launch"


def test_no_documentation_card_when_nothing_is_open(cases: dict[str, Any]) -> None:
    for name in ("met", "not_met", "excluded"):
        assert _by_topic(_render(cases[name]), "appropriate-use") == []


# --------------------------------------------------------------------------- several orders


def test_several_orders_share_one_card_that_names_them(cases: dict[str, Any]) -> None:
    body = _render(cases["multi"])
    summaries = _by_topic(body, "coverage-info")
    assert len(summaries) == 1
    card = summaries[0]
    assert card["summary"].endswith("(2 orders)")
    assert "ServiceRequest/sr-0584t" in card["detail"] and "MedicationRequest/mr-lantidra" in card["detail"]
    assert "Islet cell transplant, percutaneous" in card["detail"]  # human-readable names (dev-24)
    assert card["extension"]["davinci-crd.associated-resource"] == [
        {"reference": "ServiceRequest/sr-0584t"},
        {"reference": "MedicationRequest/mr-lantidra"},
    ]


def test_different_decisions_get_separate_cards(cases: dict[str, Any]) -> None:
    first, second = cases["multi"].decisions
    second = dataclasses.replace(second, outcome="not_covered")
    body = render_response((first, second), cases["multi"].context)
    summaries = _by_topic(body, "coverage-info")
    assert len(summaries) == 2
    assert summaries[0]["summary"].endswith("(Islet cell transplant, percutaneous)")
    assert summaries[1]["summary"].startswith("Not covered:")
    assert summaries[1]["summary"].endswith("(Lantidra (donislecel-jujn) infusion)")
    assert [s["extension"]["davinci-crd.associated-resource"] for s in summaries] == [
        [{"reference": "ServiceRequest/sr-0584t"}],
        [{"reference": "MedicationRequest/mr-lantidra"}],
    ]


# --------------------------------------------------------------------------- uuids


def test_card_uuids_are_deterministic_and_distinct(cases: dict[str, Any]) -> None:
    body = _render(cases["documentation"])
    again = _render(cases["documentation"])
    assert [c["uuid"] for c in body["cards"]] == [c["uuid"] for c in again["cards"]]
    assert len({c["uuid"] for c in body["cards"]}) == len(body["cards"])
    other = _render(cases["documentation"], hook_instance="another-hook-instance")
    assert not {c["uuid"] for c in body["cards"]} & {c["uuid"] for c in other["cards"]}
    assert card_uuid("h", "summary", ["B", "A"]) == card_uuid("h", "summary", ["A", "B"])
    assert card_uuid("h", "summary", ["A"]) != card_uuid("h", "reference", ["A"])


# --------------------------------------------------------------------------- configuration


def test_configuration_options_advertise_every_card_type(wording: Wording) -> None:
    options = configuration_options(wording)
    codes = [o["code"] for o in options]
    assert len(codes) == len(set(codes))  # dev-8
    assert {"coverage-info", "max-cards"} <= set(codes)
    for kind in wording.card_kinds.values():
        assert kind.topic in codes  # dev-5: one boolean per card type returned
    for option in options:
        assert set(option) == {"code", "type", "name", "description", "default"}
        assert option["type"] in ("boolean", "integer")
        assert isinstance(option["default"], bool) == (option["type"] == "boolean")
    assert len({o["name"] for o in options}) == len(options)
    assert len({o["description"] for o in options}) == len(options)
    assert configuration_options() == options


def test_each_card_type_can_be_switched_off(cases: dict[str, Any], wording: Wording) -> None:
    for kind in ("reference", "documentation"):
        topic = wording.card_kinds[kind].topic
        body = _render(cases["documentation"], configuration={topic: False})
        assert _by_topic(body, topic) == []
        assert body["cards"] and body["systemActions"]


def test_max_cards_keeps_the_most_important(cases: dict[str, Any]) -> None:
    body = _render(cases["documentation"], configuration={"max-cards": 1})
    assert [c["source"]["topic"]["code"] for c in body["cards"]] == ["coverage-info"]
    assert _render(cases["documentation"], configuration={"max-cards": 0})["cards"] == []
    assert len(_render(cases["documentation"], configuration={"max-cards": "2"})["cards"]) == 2


@pytest.mark.parametrize(
    "configuration",
    [
        {"max-cards": -3},
        {"max-cards": True},
        {"max-cards": "lots"},
        {"max-cards": 2.5},
        {"guideline": "maybe"},
        {"guideline": 7},
        {"guideline": None},
        {"unknown-option": False, "cost": False},
    ],
)
def test_nonsense_configuration_falls_back_to_defaults(cases: dict[str, Any], configuration: dict[str, Any]) -> None:
    assert _render(cases["documentation"], configuration=configuration) == _render(cases["documentation"])


def test_boolean_strings_are_understood(wording: Wording) -> None:
    assert not effective_configuration({"guideline": "false"}, wording).allows("guideline")
    assert effective_configuration({"guideline": "TRUE"}, wording).allows("guideline")
    assert not effective_configuration({"guideline": 0}, wording).allows("guideline")
    assert effective_configuration(None, wording).max_cards == 10


# --------------------------------------------------------------------------- wording


def test_wording_comes_from_the_data_file(cases: dict[str, Any], tmp_path: Path) -> None:
    data = yaml.safe_load(WORDING_FILE.read_text(encoding="utf-8"))
    data["summaries"]["covered"] = "Criteria met - PA required (custom wording)"
    data["link_labels"]["policy"] = "Policy PDF"
    path = tmp_path / "cards.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    custom = load_wording(path)
    body = _render(cases["met"], wording=custom)
    assert _by_topic(body, "coverage-info")[0]["summary"] == "Criteria met - PA required (custom wording)"
    assert _by_topic(body, "guideline")[0]["links"][0]["label"] == "Policy PDF"


@pytest.mark.parametrize(
    ("section", "key"),
    [
        ("summaries", "covered"),
        ("headings", "criteria"),
        ("card_kinds", "summary"),
        ("configuration_options", "guideline"),
    ],
)
def test_missing_wording_fails_at_load_naming_the_key(tmp_path: Path, section: str, key: str) -> None:
    data = yaml.safe_load(WORDING_FILE.read_text(encoding="utf-8"))
    del data[section][key]
    path = tmp_path / "cards.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    with pytest.raises(WordingError, match=re.escape(f"{section}.{key}")):
        load_wording(path)


def test_override_reasons_need_a_display(tmp_path: Path) -> None:
    data = yaml.safe_load(WORDING_FILE.read_text(encoding="utf-8"))
    del data["override_reasons"]["not_covered"][0]["display"]
    path = tmp_path / "cards.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    with pytest.raises(WordingError, match="override_reasons.not_covered"):
        load_wording(path)


# --------------------------------------------------------------------------- gallery


def test_gallery_writes_a_self_contained_page(tmp_path: Path) -> None:
    out = tmp_path / "gallery.html"
    # The documented command: the real pipeline over fixture scenarios.
    fixtures = Path(__file__).resolve().parent.parent / "fhir_fixtures" / "scenarios"
    assert main(["gallery", "--out", str(out), "--fixtures", str(fixtures)]) == 0
    page = out.read_text(encoding="utf-8")
    assert page.count('<section class="case">') == 6
    assert "<table>" in page and 'class="button absolute"' in page and 'class="button smart"' in page
    assert 'class="card warning"' in page and 'class="card info"' in page
    assert "<script" not in page and "http-equiv" not in page  # nothing loaded from elsewhere
    assert not re.search(r'<(link|img)[^>]+(href|src)="http', page)


def test_gallery_takes_any_list_of_responses() -> None:
    page = gallery_html([dataclasses.replace(e, title="Fixture X") for e in entries_from_cases(sample_cases()[:1])])
    assert "Fixture X" in page and page.count('<section class="case">') == 1


def test_every_gallery_response_conforms(cases: dict[str, Any]) -> None:
    for case in cases.values():
        body = render_response(case.decisions, case.context)
        assert check_response(request_for(case), body) == [], case.title
        assert check_response(request_for(case, version="2.2"), _render(case, crd_version="2.2")) == [], case.title


def test_render_context_is_what_the_pipeline_builds(cases: dict[str, Any], wording: Wording) -> None:
    # The fields service/pipeline.py passes; the two optional ones have defaults.
    case = cases["met"]
    ctx = RenderContext(
        hook="order-sign",
        hook_instance="h",
        orders_by_ref=dict(case.context.orders_by_ref),
        coverages=[],
        configuration={},
        crd_version="2.0",
        assertion_date=case.context.assertion_date,
        wording=wording,
    )
    assert ctx.dtr_launch_url is None and ctx.fhir_server is None
    assert render_response((), ctx) == {"cards": [], "systemActions": []}


def test_not_covered_without_a_failing_criterion(cases: dict[str, Any], wording: Wording) -> None:
    # "All other indications": nothing failed, yet no covered pathway fits the order.
    case = cases["met"]
    decision = dataclasses.replace(
        case.decisions[0], outcome="not_covered", pathway=None, notes=("not_medically_necessary",)
    )
    body = render_response((decision,), case.context)
    summary = _by_topic(body, "coverage-info")[0]
    assert summary["summary"] == wording.summary("not_covered_no_criterion")
    assert wording.notes["not_medically_necessary"] in summary["detail"]
    assert "Both pathways were evaluated" in summary["detail"]
    reason = [
        p["valueCodeableConcept"]["text"]
        for p in body["systemActions"][0]["resource"]["extension"][0]["extension"]
        if p["url"] == "reason"
    ]
    assert reason == [wording.coverage_information["investigational_reason"]]
