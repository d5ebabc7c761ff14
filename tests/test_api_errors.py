"""Every error answer: status, OperationOutcome issue code and diagnostics naming the field."""

from __future__ import annotations

import json
from typing import Any

import pytest
from flask.testing import FlaskClient

from tests.conftest import islet_order, order_sign_request

SIGN = "/cds-services/islet-transplant-order-sign"


def outcome_of(response: Any) -> dict[str, Any]:
    assert response.mimetype == "application/fhir+json"
    body = response.get_json(force=True)
    assert body["resourceType"] == "OperationOutcome"
    assert body["issue"] and body["issue"][0]["severity"] == "error"
    return body["issue"][0]


def post(client: FlaskClient, body: Any, path: str = SIGN, **kwargs: Any) -> Any:
    data = body if isinstance(body, str | bytes) else json.dumps(body)
    kwargs.setdefault("content_type", "application/json")
    return client.post(path, data=data, **kwargs)


def test_unparseable_json_is_400(client: FlaskClient) -> None:
    response = post(client, '{"hook": "order-sign",')
    assert response.status_code == 400
    issue = outcome_of(response)
    assert issue["code"] == "invalid"
    assert "not valid JSON" in issue["diagnostics"]


def test_nan_is_not_json(client: FlaskClient) -> None:
    response = post(client, '{"hook": NaN}')
    assert response.status_code == 400


def test_empty_body_is_400(client: FlaskClient) -> None:
    response = post(client, b"")
    assert response.status_code == 400
    assert "empty" in outcome_of(response)["diagnostics"]


def test_body_must_be_an_object(client: FlaskClient) -> None:
    response = post(client, "[1, 2]")
    assert response.status_code == 400
    assert outcome_of(response)["expression"] == ["$"]


def _without(body: dict[str, Any], *path: str) -> dict[str, Any]:
    target = body
    for key in path[:-1]:
        target = target[key]
    del target[path[-1]]
    return body


def _with(body: dict[str, Any], value: Any, *path: str) -> dict[str, Any]:
    target = body
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return body


INVALID_ENVELOPES = [
    ("missing hook", lambda b: _without(b, "hook"), "$", "'hook' is a required property"),
    ("missing hookInstance", lambda b: _without(b, "hookInstance"), "$", "'hookInstance' is a required"),
    ("hookInstance not a UUID", lambda b: _with(b, "abc", "hookInstance"), "hookInstance", "does not match"),
    ("missing context", lambda b: _without(b, "context"), "$", "'context' is a required"),
    ("context not an object", lambda b: _with(b, [], "context"), "context", "must be of type 'object'"),
    ("missing patientId", lambda b: _without(b, "context", "patientId"), "context", "'patientId' is a required"),
    ("missing userId", lambda b: _without(b, "context", "userId"), "context", "'userId' is a required"),
    ("missing draftOrders", lambda b: _without(b, "context", "draftOrders"), "context", "'draftOrders'"),
    ("draftOrders not a Bundle", lambda b: _with(b, {"resourceType": "List"}, "context", "draftOrders"),
     "context.draftOrders.resourceType", "must be 'Bundle'"),
    ("fhirAuthorization without fhirServer",
     lambda b: _with(b, {"access_token": "t", "token_type": "Bearer", "expires_in": 30, "scope": "patient/*.read",
                         "subject": "cds"}, "fhirAuthorization"), "$", "'fhirServer' is a dependency"),
    ("fhirAuthorization missing subject",
     lambda b: _with(_with(b, "https://ehr.example.org/fhir", "fhirServer"),
                     {"access_token": "t", "token_type": "Bearer", "expires_in": 30, "scope": "s"},
                     "fhirAuthorization"), "fhirAuthorization", "'subject' is a required"),
    ("expires_in not an integer",
     lambda b: _with(_with(b, "https://ehr.example.org/fhir", "fhirServer"),
                     {"access_token": "t", "token_type": "Bearer", "expires_in": "30", "scope": "s", "subject": "c"},
                     "fhirAuthorization"), "fhirAuthorization.expires_in", "must be of type 'integer'"),
    ("fhirServer not a URL", lambda b: _with(b, "ehr.example.org", "fhirServer"), "fhirServer", "does not match"),
    ("prefetch value a string", lambda b: _with(b, {"patient": "Patient/1"}, "prefetch"), "prefetch.patient",
     "must be of type 'object' or 'null'"),
    ("prefetch value without resourceType", lambda b: _with(b, {"patient": {"id": "1"}}, "prefetch"),
     "prefetch.patient", "'resourceType' is a required property"),
]


@pytest.mark.parametrize(
    ("name", "mutate", "expression", "message"), INVALID_ENVELOPES, ids=[c[0] for c in INVALID_ENVELOPES]
)
def test_invalid_envelope_is_400_naming_the_field(client: FlaskClient, name: str, mutate: Any, expression: str,
                                                  message: str) -> None:
    body = mutate(order_sign_request(islet_order()))
    response = post(client, body)
    assert response.status_code == 400, response.get_data(as_text=True)
    issue = outcome_of(response)
    assert issue["code"] == "invalid"
    assert issue["expression"] == [expression]
    assert message in issue["diagnostics"]


def test_hook_must_match_the_service(client: FlaskClient) -> None:
    body = order_sign_request(islet_order())
    body["hook"] = "order-select"
    response = post(client, body)
    assert response.status_code == 400
    issue = outcome_of(response)
    assert issue["expression"] == ["hook"]
    assert "order-sign" in issue["diagnostics"]


@pytest.mark.parametrize(
    ("service", "context", "message"),
    [
        ("islet-transplant-order-select", {"userId": "Practitioner/1", "patientId": "p", "draftOrders":
                                            {"resourceType": "Bundle"}}, "'selections' is a required"),
        ("islet-transplant-order-dispatch", {"patientId": "p", "performer": "Organization/1"},
         "dispatchedOrders"),
        ("islet-transplant-order-dispatch", {"patientId": "p", "dispatchedOrders": ["ServiceRequest/1"]},
         "'performer' is a required"),
        ("islet-transplant-appointment-book", {"userId": "Practitioner/1", "patientId": "p"},
         "'appointments' is a required"),
    ],
)
def test_each_hook_requires_its_context_fields(client: FlaskClient, service: str, context: dict[str, Any],
                                                message: str) -> None:
    hook = service.removeprefix("islet-transplant-")
    body = {"hook": hook, "hookInstance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea", "context": context}
    response = post(client, body, path=f"/cds-services/{service}")
    assert response.status_code == 400
    assert message in outcome_of(response)["diagnostics"]


def test_unknown_service_is_404(client: FlaskClient) -> None:
    response = post(client, order_sign_request(islet_order()), path="/cds-services/nope")
    assert response.status_code == 404
    issue = outcome_of(response)
    assert issue["code"] == "not-found"
    assert "nope" in issue["diagnostics"]


def test_unknown_path_is_404_with_outcome(client: FlaskClient) -> None:
    response = client.get("/nothing-here")
    assert response.status_code == 404
    assert "/cds-services" in outcome_of(response)["diagnostics"]


@pytest.mark.parametrize(("method", "path"), [("get", SIGN), ("put", SIGN), ("delete", "/cds-services"),
                                              ("post", "/cds-services")])
def test_wrong_method_is_405(client: FlaskClient, method: str, path: str) -> None:
    response = getattr(client, method)(path)
    assert response.status_code == 405
    issue = outcome_of(response)
    assert issue["code"] == "not-supported"
    assert method.upper() in issue["diagnostics"]
    assert response.headers.get("Allow")


def test_body_over_the_limit_is_413(make_app: Any) -> None:
    client = make_app({"max_body_bytes": 2048}).test_client()
    body = order_sign_request(islet_order())
    body["padding"] = "x" * 4096
    response = post(client, body)
    assert response.status_code == 413
    issue = outcome_of(response)
    assert issue["code"] == "too-costly"
    assert "2048" in issue["diagnostics"]


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
def test_not_json_is_415(client: FlaskClient, content_type: str | None) -> None:
    kwargs = {"content_type": content_type} if content_type else {}
    response = client.post(SIGN, data=json.dumps(order_sign_request(islet_order())), **kwargs)
    assert response.status_code == 415
    issue = outcome_of(response)
    assert issue["code"] == "not-supported"
    assert issue["expression"] == ["Content-Type"]


def test_fhir_json_content_type_is_accepted(client: FlaskClient) -> None:
    body = order_sign_request(islet_order())
    body["context"]["draftOrders"]["entry"] = []
    response = post(client, body, content_type="application/fhir+json; charset=utf-8")
    assert response.status_code == 200
    assert response.get_json() == {"cards": []}


def test_unexpected_failure_is_a_generic_500(client: FlaskClient, monkeypatch: pytest.MonkeyPatch,
                                             caplog: pytest.LogCaptureFixture) -> None:
    from service import pipeline

    def explode(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("Jane Doe born 1990-01-01")

    monkeypatch.setattr(pipeline, "handle_hook", explode)
    response = post(client, order_sign_request(islet_order()))
    assert response.status_code == 500
    issue = outcome_of(response)
    assert issue["code"] == "exception"
    text = response.get_data(as_text=True)
    assert "Jane Doe" not in text and "Traceback" not in text and "RuntimeError" not in text


def test_in_scope_order_without_any_data_source_is_412(client: FlaskClient) -> None:
    # No prefetch and no fhirServer: the data the policy needs cannot be obtained.
    response = post(client, order_sign_request(islet_order()))
    assert response.status_code == 412, response.get_data(as_text=True)
    issue = outcome_of(response)
    assert "could not be obtained" in issue["diagnostics"]


def test_in_scope_order_without_id_is_422(client: FlaskClient) -> None:
    order = islet_order()
    del order["id"]
    response = post(client, order_sign_request(order))
    assert response.status_code == 422
    issue = outcome_of(response)
    assert issue["code"] == "required"
    assert issue["expression"] == ["context.draftOrders"]


def test_refused_calls_are_recorded_without_content(app: Any, client: FlaskClient) -> None:
    body = order_sign_request(islet_order())
    del body["context"]["userId"]
    response = post(client, body)
    assert response.status_code == 400
    records = app.extensions["islet_cds"]["records"]
    rows = records.invocations(body["hookInstance"])
    assert [r["status_code"] for r in rows] == [400]
    assert "context" in rows[0]["error"]
    assert "Islet cell transplant" not in str(rows)


@pytest.mark.parametrize(
    ("coverage", "status", "code"),
    [
        (None, 400, "not-found"),
        ({"resourceType": "Bundle", "type": "searchset", "entry": [
            {"resource": {"resourceType": "Coverage", "id": f"c{i}", "status": "active",
                          "beneficiary": {"reference": "Patient/pat-1"}, "payor": [{"display": "THP"}]}}
            for i in (1, 2)]}, 400, "multiple-matches"),
        ({"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "exception"}]}, 412,
         "not-found"),
    ],
    ids=["no-coverage", "two-coverages", "coverage-unreadable"],
)
def test_coverage_must_be_one_and_readable(client: FlaskClient, coverage: Any, status: int, code: str) -> None:
    from tests.test_api_hooks import full_prefetch

    prefetch = full_prefetch()
    prefetch["coverage"] = coverage
    response = post(client, order_sign_request(islet_order(), prefetch=prefetch))
    assert response.status_code == status, response.get_data(as_text=True)
    issue = outcome_of(response)
    assert issue["code"] == code
    assert issue["expression"] == ["prefetch.coverage"]


def test_deeply_nested_json_is_400(client: FlaskClient) -> None:
    response = post(client, "[" * 100_000 + "]" * 100_000)
    assert response.status_code == 400
    assert "nested" in outcome_of(response)["diagnostics"]


@pytest.mark.parametrize(
    ("field", "value", "expression"),
    [
        ("code", "0584T", "context.draftOrders.entry[0].resource.code"),
        ("occurrenceDateTime", "not-a-date", "context.draftOrders.entry[0].resource.occurrenceDateTime"),
        ("status", 7, "context.draftOrders.entry[0].resource.status"),
    ],
)
def test_invalid_fhir_order_is_400_naming_the_field(client: FlaskClient, field: str, value: Any,
                                                   expression: str) -> None:
    order = islet_order()
    order[field] = value
    response = post(client, order_sign_request(order))
    assert response.status_code == 400, response.get_data(as_text=True)
    issue = outcome_of(response)
    assert issue["code"] == "structure"
    assert issue["expression"] == [expression]
    assert "ServiceRequest/islet-1" in issue["diagnostics"]


def test_diagnostics_never_quote_request_values(client: FlaskClient) -> None:
    # Values in a request can be patient data; a 400 names the field and the rule, not the value.
    body = order_sign_request(islet_order())
    body["prefetch"] = {"patient": {"name": [{"family": "Doe-Secret"}], "birthDate": "1961-07-04"}}
    body["context"]["encounterId"] = ["Doe-Secret"]
    for mutated in (body, {**body, "hookInstance": "Doe-Secret"}):
        response = post(client, mutated)
        assert response.status_code == 400
        text = response.get_data(as_text=True)
        assert "Doe-Secret" not in text and "1961" not in text


@pytest.mark.parametrize(
    ("field", "value"),
    [("occurrenceDateTime", 20260615), ("occurrencePeriod", {"start": 20260615})],
)
def test_in_scope_order_with_an_unreadable_date_is_400(client: FlaskClient, field: str, value: Any) -> None:
    order = islet_order()
    del order["occurrenceDateTime"]
    order[field] = value
    response = post(client, order_sign_request(order))
    assert response.status_code == 400, response.get_data(as_text=True)
    issue = outcome_of(response)
    assert issue["expression"][0].startswith("context.draftOrders.entry[0].resource")
    assert field in issue["diagnostics"]


@pytest.mark.parametrize("when", ["0001-01-01", "2190-01-01"])
def test_implausible_date_of_service_is_422(client: FlaskClient, when: str) -> None:
    from tests.test_api_hooks import full_prefetch

    order = islet_order()
    order["occurrenceDateTime"] = when
    response = post(client, order_sign_request(order, prefetch=full_prefetch()))
    assert response.status_code == 422, response.get_data(as_text=True)
    issue = outcome_of(response)
    assert issue["code"] == "business-rule"
    assert when in issue["diagnostics"]
