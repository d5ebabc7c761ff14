"""The conformance checker itself: it passes good responses and catches every kind of broken one."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from datetime import date
from typing import Any

import pytest

from cards import render_response
from tests.card_samples import request_for, sample_cases
from tests.conformance import (
    card_kinds,
    check_coverage_information,
    check_invariants,
    check_response,
    check_update_echo,
    demonstrated_card_kinds,
)
from tests.conformance.checks import empty_values, requested_version
from tests.conftest import SCENARIOS, glucose_order, order_sign_request

Body = dict[str, Any]




@pytest.fixture(scope="module")
def documentation_case() -> Any:
    return sample_cases()[2]


@pytest.fixture
def good(documentation_case: Any) -> tuple[Body, Body]:
    """A conforming (request, response) pair with all three card kinds and one coverage-info action."""
    request = request_for(documentation_case)
    response = render_response(documentation_case.decisions, documentation_case.context)
    assert check_response(request, response) == []
    assert {k for c in response["cards"] for k in card_kinds(c)} == {
        "instructions",
        "launch-smart",
        "external-reference",
    }
    return request, response


def _ext(response: Body, index: int = 0) -> Body:
    extension: Body = response["systemActions"][index]["resource"]["extension"][0]
    return extension


def _part(response: Body, url: str) -> Body:
    return next(p for p in _ext(response)["extension"] if p["url"] == url)


def _set_code(response: Body, url: str, code: str) -> None:
    parts = _ext(response)["extension"]
    for p in parts:
        if p["url"] == url:
            p["valueCode"] = code
            return
    parts.append({"url": url, "valueCode": code})


def _drop(response: Body, url: str) -> None:
    _ext(response)["extension"] = [p for p in _ext(response)["extension"] if p["url"] != url]


def _card(response: Body, topic: str) -> Body:
    card: Body = next(c for c in response["cards"] if c["source"]["topic"]["code"] == topic)
    return card


Mutation = Callable[[Body, Body], object]  # lambdas may return what they call


def _codes_set(*codes: tuple[str, str], drop: tuple[str, ...] = ()) -> Mutation:
    """A mutation that removes the ``drop`` sub-extensions, then sets each (url, code)."""

    def mutate(request: Body, response: Body) -> None:
        for url in drop:
            _drop(response, url)
        for url, code in codes:
            _set_code(response, url, code)

    return mutate


# (name, mutation of (request, response), a fragment the error must contain)
BROKEN: list[tuple[str, Mutation, str]] = [
    ("summary of 140 characters", lambda q, r: r["cards"][0].update(summary="x" * 140), "summary"),
    ("indicator outside the enum", lambda q, r: r["cards"][0].update(indicator="danger"), "indicator"),
    ("card without source.topic", lambda q, r: r["cards"][0]["source"].pop("topic"), "topic"),
    ("card without uuid", lambda q, r: r["cards"][0].pop("uuid"), "uuid"),
    ("duplicate card uuids", lambda q, r: r["cards"][1].update(uuid=r["cards"][0]["uuid"]), "duplicates"),
    ("card without indicator", lambda q, r: r["cards"][0].pop("indicator"), "indicator"),
    ("misspelt card field", lambda q, r: r["cards"][0].update(overideReasons=[]), "overideReasons"),
    (
        "appContext on an absolute link",
        lambda q, r: _card(r, "guideline")["links"][0].update(appContext="{}"),
        "links[0]",
    ),
    ("link type outside the enum", lambda q, r: _card(r, "guideline")["links"][0].update(type="launch"), "type"),
    ("relative link url", lambda q, r: _card(r, "guideline")["links"][0].update(url="/policy"), "url"),
    (
        "appContext that is not JSON",
        lambda q, r: _card(r, "appropriate-use")["links"][0].update(appContext="{x"),
        "JSON",
    ),
    (
        "override reason without display",
        lambda q, r: _card(r, "coverage-info")["overrideReasons"][0].pop("display"),
        "display",
    ),
    (
        "suggestions without selectionBehavior",
        lambda q, r: r["cards"][0].update(suggestions=[{"label": "Do it", "uuid": "s-1"}]),
        "selectionBehavior",
    ),
    (
        "suggestion without uuid (CRD resp-3)",
        lambda q, r: r["cards"][0].update(suggestions=[{"label": "Do it"}], selectionBehavior="any"),
        "uuid",
    ),
    ("instructions card without detail", lambda q, r: _card(r, "coverage-info").pop("detail"), "detail"),
    (
        "topic code not a CRD card type",
        lambda q, r: r["cards"][0]["source"]["topic"].update(code="advice"),
        "card type",
    ),
    (
        "2.2 topic system for a 2.0 caller",
        lambda q, r: r["cards"][0]["source"]["topic"].update(
            system="http://terminology.hl7.org/CodeSystem/cdshooks-card-type"
        ),
        "topic.system",
    ),
    ("empty string", lambda q, r: r["cards"][0].update(detail=""), "empty string"),
    ("null value", lambda q, r: r["cards"][0]["source"].update(icon=None), "null"),
    ("empty links array", lambda q, r: _card(r, "guideline").update(links=[]), "links"),
    ("systemActions missing on order-sign", lambda q, r: r.pop("systemActions"), "systemActions"),
    ("cards missing", lambda q, r: r.pop("cards"), "cards"),
    ("action without description", lambda q, r: r["systemActions"][0].pop("description"), "description"),
    ("coverage-info as a create", lambda q, r: r["systemActions"][0].update(type="create"), "must be an update"),
    (
        "coverage-info action with resourceId",
        lambda q, r: r["systemActions"][0].update(resourceId="ServiceRequest/sr-48160"),
        "resourceId",
    ),
    ("update that changes the order", lambda q, r: r["systemActions"][0]["resource"].update(status="active"), "status"),
    (
        "update of an order not in draftOrders",
        lambda q, r: r["systemActions"][0]["resource"].update(id="elsewhere"),
        "not in the request",
    ),
    ("update that is not valid FHIR", lambda q, r: r["systemActions"][0]["resource"].pop("subject"), "not valid FHIR"),
    (
        "delete without resourceId",
        lambda q, r: r["systemActions"].append({"type": "delete", "description": "d"}),
        "resourceId",
    ),
    (
        "no coverage-information action on a primary hook",
        lambda q, r: r["systemActions"][0]["resource"].pop("extension"),
        "Inferno item 13",
    ),
    (
        "unknown sub-extension",
        lambda q, r: _ext(r)["extension"].append({"url": "verdict", "valueCode": "yes"}),
        "verdict",
    ),
    ("missing date", lambda q, r: _drop(r, "date"), "date"),
    ("missing coverage-assertion-id", lambda q, r: _drop(r, "coverage-assertion-id"), "coverage-assertion-id"),
    ("date not a FHIR date", lambda q, r: _part(r, "date").update(valueDate="01/06/2026"), "valueDate"),
    (
        "coverage not a Coverage",
        lambda q, r: _part(r, "coverage")["valueReference"].update(reference="Patient/1"),
        "Coverage",
    ),
    ("covered code outside the value set", lambda q, r: _set_code(r, "covered", "maybe"), "maybe"),
    ("indeterminate for a 2.0 caller", lambda q, r: _set_code(r, "covered", "indeterminate"), "indeterminate"),
    (
        "two doc-needed (2.0.1 is 0..1)",
        lambda q, r: _ext(r)["extension"].append({"url": "doc-needed", "valueCode": "admin"}),
        "doc-needed",
    ),
    ("2.0.1 doc-needed 'patient'", lambda q, r: _set_code(r, "doc-needed", "patient"), "patient"),
    ("questionnaire without doc-needed (q1)", lambda q, r: _drop(r, "doc-needed"), "crd-ci-q1"),
    (
        "pa-needed with not-covered (2.2.1 q2)",
        _codes_set(("covered", "not-covered"), drop=("info-needed",)),
        "crd-ci-q2",
    ),
    ("conditional without info-needed (2.2.1 q3)", lambda q, r: _drop(r, "info-needed"), "CRD 2.2.1 crd-ci-q3"),
    (
        "info-needed without conditional (2.0.1 q3)",
        lambda q, r: _set_code(r, "covered", "covered"),
        "CRD 2.0.1 crd-ci-q3",
    ),
    ("covered without pa-needed (2.0.1 q2)", lambda q, r: _drop(r, "pa-needed"), "CRD 2.0.1 crd-ci-q2"),
    (
        "withpa with no-auth (2.2.1 q4)",
        _codes_set(("pa-needed", "no-auth"), ("doc-purpose", "withpa")),
        "crd-ci-q4",
    ),
    ("satisfied without satisfied-pa-id (q5)", lambda q, r: _set_code(r, "pa-needed", "satisfied"), "crd-ci-q5"),
    ("info-needed OTH without reason (2.2.1 q6)", lambda q, r: _drop(r, "reason"), "crd-ci-q6"),
    (
        "reason coded outside the value set without text (2.2.1 q7)",
        lambda q, r: _part(r, "reason").update(valueCodeableConcept={"coding": [{"system": "urn:x", "code": "y"}]}),
        "crd-ci-q7",
    ),
    (
        "doc-purpose without reason (2.2.1 q8)",
        _codes_set(("covered", "covered"), ("doc-purpose", "withpa"), drop=("reason", "info-needed")),
        "crd-ci-q8",
    ),
]


@pytest.mark.parametrize(("name", "mutate", "fragment"), BROKEN, ids=[b[0] for b in BROKEN])
def test_checker_catches_broken_responses(good: tuple[Body, Body], name: str, mutate: Mutation, fragment: str) -> None:
    request, response = copy.deepcopy(good)
    mutate(request, response)
    errors = check_response(request, response)
    assert errors, f"{name}: not detected"
    assert any(fragment in e for e in errors), errors


def test_indeterminate_without_reason_breaks_2_2_1_q9(documentation_case: Any) -> None:
    request = request_for(documentation_case, version="2.2")
    response = render_response(documentation_case.decisions, documentation_case.context)
    for card in response["cards"]:
        card["source"]["topic"]["system"] = "http://terminology.hl7.org/CodeSystem/cdshooks-card-type"
    _set_code(response, "covered", "indeterminate")
    _drop(response, "info-needed")
    assert check_response(request, response) == []  # valid for a 2.2 caller (and not checked against 2.0.1)
    _drop(response, "reason")
    assert any("crd-ci-q9" in e for e in check_response(request, response))


def test_assertion_ids_one_per_coverage_and_distinct_across_coverages() -> None:
    case = sample_cases()[4]  # two orders, one coverage
    request = request_for(case)
    response = render_response(case.decisions, case.context)
    assert check_response(request, response) == []
    two_ids = copy.deepcopy(response)
    _ext(two_ids, 1)["extension"] = [
        {"url": "coverage-assertion-id", "valueString": "other"} if p["url"] == "coverage-assertion-id" else p
        for p in _ext(two_ids, 1)["extension"]
    ]
    assert any("2 distinct coverage-assertion-ids" in e for e in check_response(request, two_ids))
    shared = copy.deepcopy(response)
    _ext(shared, 1)["extension"] = [
        {"url": "coverage", "valueReference": {"reference": "Coverage/second"}} if p["url"] == "coverage" else p
        for p in _ext(shared, 1)["extension"]
    ]
    assert any("is shared by" in e for e in check_response(request, shared))


def test_secondary_hooks_must_not_ask_for_clinical_documentation(good: tuple[Body, Body]) -> None:
    request, response = copy.deepcopy(good)
    request["hook"] = "order-select"
    request["context"]["selections"] = ["ServiceRequest/sr-48160"]
    assert any("hook-19" in e for e in check_response(request, response))
    response.pop("systemActions")
    assert not any("systemActions" in e for e in check_response(request, response))  # optional on order-select


def test_coverage_info_switched_off_needs_no_action(good: tuple[Body, Body]) -> None:
    request, response = copy.deepcopy(good)
    response["systemActions"] = []
    assert any("Inferno item 13" in e for e in check_response(request, response))
    request["extension"] = {"davinci-crd.configuration": {"coverage-info": False}}
    assert check_response(request, response) == []


def test_appointment_book_expects_an_appointment_update(good: tuple[Body, Body]) -> None:
    request, response = copy.deepcopy(good)
    request["hook"] = "appointment-book"
    assert any("['Appointment']" in e for e in check_response(request, response))


def test_not_an_object() -> None:
    assert check_response({"hook": "order-sign"}, ["cards"]) == ["response: not a JSON object"]
    assert check_response({"hook": "order-select"}, {"cards": []}) == []


# --------------------------------------------------------------------------- the parts on their own


def test_update_echo_accepts_only_coverage_information_changes() -> None:
    draft: Body = {
        "resourceType": "ServiceRequest",
        "id": "1",
        "status": "draft",
        "extension": [{"url": "x", "valueString": "a"}],
    }
    ci: Body = {
        "url": "http://hl7.org/fhir/us/davinci-crd/StructureDefinition/ext-coverage-information",
        "extension": [],
    }
    assert check_update_echo(draft, {**draft, "extension": [{"url": "x", "valueString": "a"}, ci]}) == []
    assert check_update_echo(draft, {**draft, "extension": [ci]})  # dropped an unrelated extension
    assert check_update_echo(draft, {**draft, "status": "active", "extension": draft["extension"] + [ci]})
    assert check_update_echo(draft, {**draft, "note": [{"text": "n"}]})


def test_invariants_directly() -> None:
    def ext(*codes: tuple[str, str], extra: list[Body] | None = None) -> Body:
        parts: list[Body] = [{"url": u, "valueCode": c} for u, c in codes]
        return {"extension": parts + (extra or [])}

    reason = {"url": "reason", "valueCodeableConcept": {"text": "why"}}
    assert check_invariants(ext(("covered", "covered"), ("pa-needed", "auth-needed")), "2.0.1") == []
    assert check_invariants(ext(("covered", "covered")), "2.2.1") == []
    assert [e.split()[2] for e in check_invariants(ext(("covered", "covered")), "2.0.1")] == ["crd-ci-q2"]
    assert check_invariants(ext(("covered", "not-covered"), ("pa-needed", "no-auth")), "2.2.1")
    assert check_invariants(ext(("covered", "indeterminate")), "2.2.1")
    assert check_invariants(ext(("covered", "indeterminate"), extra=[reason]), "2.2.1") == []
    technical = {
        "url": "reason",
        "valueCodeableConcept": {
            "coding": [{"system": "http://hl7.org/fhir/us/davinci-crd/CodeSystem/temp", "code": "technical"}]
        },
    }
    assert check_invariants(ext(("covered", "indeterminate"), extra=[technical]), "2.2.1") == []
    satisfied = ext(
        ("covered", "covered"), ("pa-needed", "satisfied"), extra=[{"url": "satisfied-pa-id", "valueString": "PA1"}]
    )
    assert check_invariants(satisfied, "2.0.1") == [] and check_invariants(satisfied, "2.2.1") == []
    assert check_invariants(
        ext(
            ("covered", "covered"),
            ("pa-needed", "satisfied"),
            ("doc-purpose", "PA"),
            extra=[{"url": "satisfied-pa-id", "valueString": "PA1"}],
        ),
        "2.0.1",
    )


def test_coverage_information_schema_alone(good: tuple[Body, Body]) -> None:
    extension = _ext(good[1])
    assert check_coverage_information(extension, "2.0.1") == [] and check_coverage_information(extension, "2.2.1") == []
    detail_201 = {
        "url": "detail",
        "extension": [{"url": "code", "valueCodeableConcept": {"text": "note"}}, {"url": "value", "valueString": "v"}],
    }
    with_detail = copy.deepcopy(extension)
    with_detail["extension"].append(detail_201)
    assert check_coverage_information(with_detail, "2.0.1") == []
    assert any("category" in e for e in check_coverage_information(with_detail, "2.2.1"))  # 2.2.1 category 1..1


def test_empty_values_and_requested_version() -> None:
    assert empty_values({"a": [], "b": {}, "c": "", "d": None, "e": [0, False]}) == [
        "$.a: empty array",
        "$.b: empty object",
        "$.c: empty string",
        "$.d: null value",
    ]
    assert requested_version({"extension": {"davinci-crd.requestedVersion": "2.2"}}) == "2.2"
    assert requested_version({}) == "2.0"


# --------------------------------------------------------------------------- over HTTP


@pytest.mark.parametrize(
    ("scenario", "version"),
    [
        ("auto-48160-undocumented", None),
        ("allo-s2102-all-met", None),
        ("allo-s2102-all-met", "2.2"),
        ("excl-bioartificial-pancreas", None),
        ("appointment-book-s2102", None),
        ("order-select-48160-undocumented", "2.2"),
    ],
)
def test_service_responses_over_http_conform(make_app: Callable[..., Any], scenario: str, version: str | None) -> None:
    path = SCENARIOS / f"{scenario}.json"
    if not path.exists():
        pytest.skip(f"fixture {scenario} not present")
    data = json.loads(path.read_text(encoding="utf-8"))
    request = copy.deepcopy(data["request"])
    if version:
        request.setdefault("extension", {})["davinci-crd.requestedVersion"] = version
    today = date.fromisoformat(data["today"])
    client = make_app(clock=lambda: today).test_client()
    services = client.get("/cds-services").get_json()["services"]
    service_id = next(s["id"] for s in services if s["hook"] == request["hook"])
    answer = client.post(f"/cds-services/{service_id}", json=request)
    assert answer.status_code == 200
    body = answer.get_json()
    assert check_response(request, body) == []
    assert body["cards"]  # each of these scenarios has an order in scope


def test_out_of_scope_request_needs_no_coverage_information(make_app: Callable[..., Any]) -> None:
    client = make_app().test_client()
    services = client.get("/cds-services").get_json()["services"]
    service_id = next(s["id"] for s in services if s["hook"] == "order-select")
    request = order_sign_request(glucose_order("lab-1"))
    request["hook"] = "order-select"
    request["context"]["selections"] = ["ServiceRequest/lab-1"]
    body = client.post(f"/cds-services/{service_id}", json=request).get_json()
    assert check_response(request, body, require_coverage_information=False) == []
    assert check_response({**request, "hook": "order-sign"}, {"cards": []}, require_coverage_information=False) == [
        "systemActions: required for the primary hook order-sign (Inferno item 8)"
    ]


def test_demonstrated_card_kinds_across_responses() -> None:
    responses = [render_response(c.decisions, c.context) for c in sample_cases()]
    assert demonstrated_card_kinds(responses) == {
        "external-reference",
        "instructions",
        "launch-smart",
        "coverage-information",
    }
    assert demonstrated_card_kinds([{"cards": []}]) == set()
