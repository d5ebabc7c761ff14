"""CORS: the CDS Hooks sandbox calls from the browser; only configured origins are allowed."""

from __future__ import annotations

from typing import Any

import pytest
from flask.testing import FlaskClient

SANDBOX = "https://sandbox.cds-hooks.org"
ROUTES = ["/cds-services", "/cds-services/islet-transplant-order-sign",
          "/cds-services/islet-transplant-order-sign/feedback", "/fhir/Questionnaire/islet-transplant-documentation"]


@pytest.mark.parametrize("path", ROUTES)
def test_preflight_is_answered_for_allowed_origin(client: FlaskClient, path: str) -> None:
    response = client.options(path, headers={
        "Origin": SANDBOX,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type",
    })
    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == SANDBOX
    allowed_headers = response.headers["Access-Control-Allow-Headers"].lower()
    assert "authorization" in allowed_headers and "content-type" in allowed_headers
    assert "POST" in response.headers["Access-Control-Allow-Methods"]


def test_preflight_from_other_origin_gets_no_cors_headers(client: FlaskClient) -> None:
    response = client.options("/cds-services", headers={
        "Origin": "https://evil.example", "Access-Control-Request-Method": "GET"})
    assert "Access-Control-Allow-Origin" not in response.headers


def test_simple_request_carries_allow_origin(client: FlaskClient) -> None:
    response = client.get("/cds-services", headers={"Origin": SANDBOX})
    assert response.headers["Access-Control-Allow-Origin"] == SANDBOX


def test_no_origins_configured_means_no_cors(make_app: Any) -> None:
    client = make_app({"cors_origins": ""}).test_client()
    response = client.get("/cds-services", headers={"Origin": SANDBOX})
    assert "Access-Control-Allow-Origin" not in response.headers


def test_error_answers_also_carry_cors_headers(client: FlaskClient) -> None:
    # A browser client must be able to read the OperationOutcome of a failed call.
    response = client.post("/cds-services/islet-transplant-order-sign", data="{", content_type="application/json",
                           headers={"Origin": SANDBOX})
    assert response.status_code == 400
    assert response.headers["Access-Control-Allow-Origin"] == SANDBOX
