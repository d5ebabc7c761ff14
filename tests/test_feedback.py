"""POST /cds-services/{id}/feedback over the Flask test client, on a tiny app of its own."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from flask import Flask, Response, g, jsonify, request
from flask.testing import FlaskClient

from service.api.feedback import bp
from service.errors import ApiError
from service.records.store import DecisionLog
from tests.records_support import make_decision, make_response

SERVICE = "islet-order-sign"
URL = f"/cds-services/{SERVICE}/feedback"


@pytest.fixture
def log(tmp_path: Path) -> Iterator[DecisionLog]:
    decision_log = DecisionLog(f"sqlite:///{tmp_path / 'records.sqlite'}")
    decision_log.migrate()
    yield decision_log
    decision_log.dispose()


@pytest.fixture
def app(log: DecisionLog) -> Flask:
    app = Flask(__name__)
    app.extensions["islet_cds"] = {"records": log, "service_ids": [SERVICE, "islet-order-select"]}
    app.register_blueprint(bp)

    @app.before_request
    def set_caller() -> None:
        # Stands in for the JWT check: a test header names the issuer; no header = auth disabled.
        issuer = request.headers.get("X-Test-Issuer")
        if issuer:
            g.caller = SimpleNamespace(issuer=issuer, tenant=None)

    @app.errorhandler(ApiError)
    def api_error(exc: ApiError) -> tuple[Response, int]:
        return jsonify(exc.outcome()), exc.status

    return app


@pytest.fixture
def client(app: Flask) -> Iterator[FlaskClient]:
    with app.test_client() as c:
        yield c


@pytest.fixture
def recorded(log: DecisionLog) -> dict[str, Any]:
    hook_instance = str(uuid.uuid4())
    body, expected = make_response(["a"])
    log.record_call(hook_instance=hook_instance, hook="order-sign", service_id=SERVICE, patient_id="pat-1",
                    decisions=[make_decision("a")], response=body)
    return {"hook_instance": hook_instance, "card": expected["by_order"]["ServiceRequest/a"]}


def feedback_rows(log: DecisionLog) -> list[dict[str, Any]]:
    return [r for r in log.export(datetime(2000, 1, 1, tzinfo=UTC)) if r["record_type"] == "feedback"]


def accepted(card: str, timestamp: str = "2026-06-01T10:05:31Z") -> dict[str, Any]:
    return {"card": card, "outcome": "accepted", "acceptedSuggestions": [{"id": "sugg-1"}],
            "outcomeTimestamp": timestamp}


def overridden(card: str) -> dict[str, Any]:
    return {"card": card, "outcome": "overridden", "outcomeTimestamp": "2026-06-01T10:06:00.250+02:00",
            "overrideReason": {"reason": {"code": "pt-declined", "system": "http://plan.example.org/override",
                                          "display": "Patient declined"},
                               "userComment": "Will revisit next visit."}}


def test_valid_feedback_is_stored_and_linked(client: FlaskClient, log: DecisionLog, recorded: dict[str, Any]) -> None:
    response = client.post(URL, json={"feedback": [accepted(recorded["card"]), overridden(recorded["card"])]},
                           headers={"X-Test-Issuer": "https://ehr.example.org"})
    assert response.status_code == 200
    assert response.data == b""
    first, second = feedback_rows(log)
    assert (first["outcome"], first["accepted_suggestions"], first["linked"]) == ("accepted", ["sugg-1"], True)
    assert first["hook_instance"] == recorded["hook_instance"]
    assert first["issuer"] == "https://ehr.example.org" and first["service_id"] == SERVICE
    assert first["outcome_timestamp"] == "2026-06-01T10:05:31Z"
    assert second["override_reason_code"] == "pt-declined"
    assert second["override_reason_display"] == "Patient declined"
    assert second["override_user_comment"] == "Will revisit next visit."
    assert second["outcome_timestamp"] == "2026-06-01T08:06:00.250000Z"  # normalised to UTC
    assert [f["outcome"] for f in log.get(recorded["hook_instance"])[0]["feedback"]] == ["accepted", "overridden"]


def test_repeats_are_idempotent(client: FlaskClient, log: DecisionLog, recorded: dict[str, Any]) -> None:
    body = {"feedback": [accepted(recorded["card"]), accepted(recorded["card"])]}
    assert client.post(URL, json=body).status_code == 200
    assert client.post(URL, json=body).status_code == 200
    assert len(feedback_rows(log)) == 1
    # The same instant written with another offset is the same feedback.
    again = {"feedback": [accepted(recorded["card"], "2026-06-01T12:05:31+02:00")]}
    assert client.post(URL, json=again).status_code == 200
    assert len(feedback_rows(log)) == 1


def test_unknown_card_is_stored_unlinked_and_issuer_defaults_to_anonymous(client: FlaskClient,
                                                                          log: DecisionLog) -> None:
    assert client.post(URL, json={"feedback": [overridden("card-from-before-a-purge")]}).status_code == 200
    (row,) = feedback_rows(log)
    assert row["linked"] is False and row["hook_instance"] is None
    assert row["issuer"] == "anonymous"


def test_unknown_service_is_404(client: FlaskClient, log: DecisionLog) -> None:
    response = client.post("/cds-services/no-such-service/feedback", json={"feedback": [overridden("c")]})
    assert response.status_code == 404
    assert response.json is not None and response.json["resourceType"] == "OperationOutcome"
    assert feedback_rows(log) == []


def _without(entry: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in entry.items() if k != key}


GOOD = accepted("card-1")
INVALID_BODIES: list[tuple[str, Any, str]] = [
    ("not an object", [GOOD], "$"),
    ("no feedback", {"cards": []}, "feedback"),
    ("feedback not a list", {"feedback": GOOD}, "feedback"),
    ("empty list", {"feedback": []}, "feedback"),
    ("no card", {"feedback": [_without(GOOD, "card")]}, "feedback[0].card"),
    ("card not a string", {"feedback": [{**GOOD, "card": 12}]}, "feedback[0].card"),
    ("no outcome", {"feedback": [_without(GOOD, "outcome")]}, "feedback[0].outcome"),
    ("bad outcome", {"feedback": [{**GOOD, "outcome": "ignored"}]}, "feedback[0].outcome"),
    ("accepted without suggestions", {"feedback": [GOOD, _without(GOOD, "acceptedSuggestions")]},
     "feedback[1].acceptedSuggestions"),
    ("suggestion without id", {"feedback": [{**GOOD, "acceptedSuggestions": [{"uuid": "x"}]}]},
     "feedback[0].acceptedSuggestions[0].id"),
    ("no timestamp", {"feedback": [_without(GOOD, "outcomeTimestamp")]}, "feedback[0].outcomeTimestamp"),
    ("timestamp without time", {"feedback": [{**GOOD, "outcomeTimestamp": "2026-06-01"}]},
     "feedback[0].outcomeTimestamp"),
    ("timestamp without offset", {"feedback": [{**GOOD, "outcomeTimestamp": "2026-06-01T10:05:31"}]},
     "feedback[0].outcomeTimestamp"),
    ("impossible timestamp", {"feedback": [{**GOOD, "outcomeTimestamp": "2026-13-45T10:05:31Z"}]},
     "feedback[0].outcomeTimestamp"),
    ("reason without system", {"feedback": [{**overridden("c"), "overrideReason": {"reason": {"code": "x"}}}]},
     "feedback[0].overrideReason.reason.system"),
    ("comment not a string", {"feedback": [{**overridden("c"), "overrideReason": {"userComment": 5}}]},
     "feedback[0].overrideReason.userComment"),
]


@pytest.mark.parametrize(("body", "field"), [(b, f) for _, b, f in INVALID_BODIES],
                         ids=[name for name, _, _ in INVALID_BODIES])
def test_invalid_bodies_are_400_naming_the_field(client: FlaskClient, log: DecisionLog, body: Any,
                                                 field: str) -> None:
    response = client.post(URL, json=body)
    assert response.status_code == 400
    outcome = response.json
    assert outcome is not None and outcome["resourceType"] == "OperationOutcome"
    issue = outcome["issue"][0]
    assert issue["code"] == "invalid"
    assert issue["expression"] == [field]
    assert field == "$" or field in issue["diagnostics"]
    assert feedback_rows(log) == []  # nothing of a rejected body is stored


def test_non_json_body_is_rejected(client: FlaskClient) -> None:
    assert client.post(URL, data="feedback", content_type="text/plain").status_code == 415
    assert client.post(URL, data="{not json", content_type="application/json").status_code == 400
