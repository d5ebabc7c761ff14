"""Health, readiness, metrics, the Questionnaire endpoint and the benchmark floor switch."""

from __future__ import annotations

from typing import Any

from flask.testing import FlaskClient


def test_healthz(client: FlaskClient) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok"}


def test_readyz_reports_policy_and_records(client: FlaskClient) -> None:
    response = client.get("/readyz")
    assert response.status_code == 200
    body = response.get_json()
    assert body["status"] == "ready"
    assert body["checks"]["records"] == "ok"
    assert "pancreatic" in body["checks"]["policy"]


def test_readyz_fails_when_the_database_is_unavailable(make_app: Any) -> None:
    app = make_app()
    app.extensions["islet_cds"]["state"].records = _Broken()
    response = app.test_client().get("/readyz")
    assert response.status_code == 503
    assert response.get_json()["checks"]["records"] == "unavailable"


class _Broken:
    def health(self) -> bool:
        return False


def test_metrics_are_prometheus_text(client: FlaskClient) -> None:
    client.get("/cds-services")
    response = client.get("/metrics")
    assert response.status_code == 200
    assert "islet_cds_request_seconds" in response.get_data(as_text=True)


def test_questionnaire_is_served_under_its_canonical(client: FlaskClient, app: Any) -> None:
    questionnaire = app.extensions["islet_cds"]["state"].policy.questionnaire
    response = client.get(f"/fhir/Questionnaire/{questionnaire['id']}")
    assert response.status_code == 200
    assert response.mimetype == "application/fhir+json"
    body = response.get_json(force=True)
    assert body["resourceType"] == "Questionnaire"
    assert body["url"] == questionnaire["url"]
    search = client.get("/fhir/Questionnaire", query_string={"url": f"{body['url']}|{body['version']}"})
    assert search.get_json(force=True)["total"] == 1
    miss = client.get("/fhir/Questionnaire", query_string={"url": "https://other.example/Q"})
    assert miss.get_json(force=True)["total"] == 0
    assert client.get("/fhir/Questionnaire/nope").status_code == 404


def test_bench_floor_only_when_enabled(make_app: Any) -> None:
    assert make_app().test_client().post("/bench/floor", json={}).status_code == 404
    enabled = make_app({"bench_endpoints": True}).test_client()
    response = enabled.post("/bench/floor", json={"hook": "order-sign"})
    assert response.status_code == 200
    assert response.get_json() == {"cards": []}
