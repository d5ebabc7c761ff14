"""Every hook answers a valid request; unknown fields are ignored; out-of-scope orders get no cards."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from flask.testing import FlaskClient
from pytest_httpserver import HTTPServer

from tests.conftest import glucose_order, islet_order, order_sign_request

CI_URL = "http://hl7.org/fhir/us/davinci-crd/StructureDefinition/ext-coverage-information"
SIGN = "/cds-services/islet-transplant-order-sign"


def searchset(*resources: dict[str, Any]) -> dict[str, Any] | None:
    if not resources:
        return None
    return {"resourceType": "Bundle", "type": "searchset", "total": len(resources),
            "entry": [{"resource": r} for r in resources]}


def full_prefetch(patient_id: str = "pat-1") -> dict[str, Any]:
    """An adult with type 1 diabetes and an active Coverage; the rest of the record is empty (null)."""
    patient = {"resourceType": "Patient", "id": patient_id, "birthDate": "1980-04-02"}
    coverage = {"resourceType": "Coverage", "id": "cov-1", "status": "active",
                "beneficiary": {"reference": f"Patient/{patient_id}"},
                "payor": [{"display": "THP Health Plan"}]}
    t1d = {"resourceType": "Condition", "id": "t1d", "subject": {"reference": f"Patient/{patient_id}"},
           "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                                          "code": "active"}]},
           "verificationStatus": {"coding": [{"system":
                                              "http://terminology.hl7.org/CodeSystem/condition-ver-status",
                                              "code": "confirmed"}]},
           "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "E10.9"}]},
           "onsetDateTime": "1995-01-01"}
    return {
        "patient": patient,
        "coverage": searchset(coverage),
        "conditions": searchset(t1d),
        "observations": None,
        "procedures": None,
        "medicationRequests": None,
        "medicationStatements": None,
        "encounters": None,
        "devices": None,
        "questionnaireResponses": None,
    }


def post(client: FlaskClient, path: str, body: dict[str, Any]) -> Any:
    return client.post(path, data=json.dumps(body), content_type="application/json")


def coverage_info_actions(body: dict[str, Any]) -> list[dict[str, Any]]:
    return [a for a in body.get("systemActions", [])
            if any(e.get("url") == CI_URL for e in a.get("resource", {}).get("extension", []))]


def check(request: dict[str, Any], body: dict[str, Any]) -> None:
    from tests.conformance import check_response

    assert check_response(request, body) == []


def test_order_sign_answers_with_cards_and_coverage_information(client: FlaskClient) -> None:
    request = order_sign_request(islet_order(), prefetch=full_prefetch())
    response = post(client, SIGN, request)
    assert response.status_code == 200, response.get_data(as_text=True)
    body = response.get_json()
    assert body["cards"]
    actions = coverage_info_actions(body)
    assert [a["resource"]["id"] for a in actions] == ["islet-1"]
    assert actions[0]["type"] == "update"
    check(request, body)


def test_order_out_of_scope_gets_no_cards(client: FlaskClient) -> None:
    response = post(client, SIGN, order_sign_request(glucose_order(), prefetch=full_prefetch()))
    assert response.status_code == 200
    assert response.get_json() == {"cards": []}


def test_only_in_scope_orders_get_coverage_information(client: FlaskClient) -> None:
    request = order_sign_request(islet_order(), glucose_order(), prefetch=full_prefetch())
    body = post(client, SIGN, request).get_json()
    assert [a["resource"]["id"] for a in coverage_info_actions(body)] == ["islet-1"]


def test_order_select_reports_only_selected_orders(client: FlaskClient) -> None:
    request = order_sign_request(islet_order("islet-1"), islet_order("islet-2"), prefetch=full_prefetch())
    request["hook"] = "order-select"
    request["context"]["selections"] = ["ServiceRequest/islet-2"]
    response = post(client, "/cds-services/islet-transplant-order-select", request)
    assert response.status_code == 200, response.get_data(as_text=True)
    body = response.get_json()
    ids = {a["resource"]["id"] for a in coverage_info_actions(body)}
    assert ids <= {"islet-2"}
    for action in coverage_info_actions(body):
        for ext in action["resource"]["extension"]:
            doc_needed = [e.get("valueCode") for e in ext.get("extension", []) if e["url"] == "doc-needed"]
            assert not set(doc_needed) & {"clinical", "admin"}  # hook-19: secondary hooks
    check(request, body)


def test_appointment_book_answers_for_an_islet_appointment(client: FlaskClient) -> None:
    appointment = {
        "resourceType": "Appointment", "id": "appt-1", "status": "proposed",
        "serviceType": [{"coding": [{"system": "http://www.ama-assn.org/go/cpt", "code": "0584T"}]}],
        "start": "2026-06-15T09:00:00Z", "end": "2026-06-15T15:00:00Z",
        "participant": [{"actor": {"reference": "Patient/pat-1"}, "status": "needs-action"}],
    }
    request = {
        "hook": "appointment-book", "hookInstance": "2d6c7bb2-29b7-4b1c-9a3c-0c0b6a1f1e01",
        "context": {"userId": "Practitioner/dr-1", "patientId": "pat-1",
                    "appointments": {"resourceType": "Bundle", "type": "collection",
                                     "entry": [{"resource": appointment}]}},
        "prefetch": full_prefetch(),
    }
    response = post(client, "/cds-services/islet-transplant-appointment-book", request)
    assert response.status_code == 200, response.get_data(as_text=True)
    body = response.get_json()
    assert [a["resource"]["id"] for a in coverage_info_actions(body)] == ["appt-1"]
    check(request, body)


@pytest.mark.parametrize("shape", ["hook-1.1", "inferno"])
def test_order_dispatch_reads_the_dispatched_order_from_the_ehr(make_app: Any, httpserver: HTTPServer,
                                                                shape: str) -> None:
    order = islet_order()
    order["status"] = "active"
    httpserver.expect_request("/fhir/ServiceRequest/islet-1").respond_with_json(order)
    base = httpserver.url_for("/fhir")
    client = make_app({"allowed_fhir_servers": base, "fhir_require_https": False}).test_client()
    context: dict[str, Any] = {"patientId": "pat-1", "performer": "Organization/center-1"}
    if shape == "hook-1.1":
        context["dispatchedOrders"] = ["ServiceRequest/islet-1"]
    else:
        context["order"] = "ServiceRequest/islet-1"
    request = {"hook": "order-dispatch", "hookInstance": "6f0e2a39-7f3e-4f55-9d8a-1f4f5c3f0a10",
               "fhirServer": base, "context": context, "prefetch": full_prefetch()}
    response = post(client, "/cds-services/islet-transplant-order-dispatch", request)
    assert response.status_code == 200, response.get_data(as_text=True)
    body = response.get_json()
    actions = coverage_info_actions(body)
    assert [a["resource"]["id"] for a in actions] == ["islet-1"]
    assert actions[0]["resource"]["status"] == "active"  # echoed as read, unchanged


def test_unknown_fields_and_extensions_are_ignored(client: FlaskClient) -> None:
    request = order_sign_request(islet_order(), prefetch=full_prefetch())
    plain = post(client, SIGN, request).get_json()
    noisy = copy.deepcopy(request)
    noisy["somethingNew"] = {"a": 1}
    noisy["context"]["futureField"] = [1, 2]
    noisy["extension"] = {"com.example.unknown": {"x": True}, "davinci-crd.configuration": {"no-such-option": 3}}
    noisy["prefetch"]["notOurKey"] = {"resourceType": "Basic", "id": "b"}
    response = post(client, SIGN, noisy)
    assert response.status_code == 200
    assert response.get_json() == plain


def test_decision_is_recorded(app: Any, client: FlaskClient) -> None:
    request = order_sign_request(islet_order(), prefetch=full_prefetch())
    assert post(client, SIGN, request).status_code == 200
    records = app.extensions["islet_cds"]["records"]
    exported = list(records.export(since=None))
    assert any(r.get("hook_instance") == request["hookInstance"] for r in exported)
