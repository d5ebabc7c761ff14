"""Shared fixtures: an app with development settings on a temporary SQLite file."""

from __future__ import annotations

import copy
import json
import uuid
from collections.abc import Callable, Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from pytest_httpserver import HTTPServer

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = ROOT / "fhir_fixtures" / "scenarios"
TODAY = date(2026, 6, 1)


@pytest.fixture
def make_app(tmp_path: Path) -> Callable[..., Flask]:
    from service.app import create_app

    def factory(config: dict[str, Any] | None = None, **kwargs: Any) -> Flask:
        settings: dict[str, Any] = {
            "database_url": f"sqlite:///{tmp_path / 'records.sqlite'}",
            "auth": "disabled",
            "cors_origins": "https://sandbox.cds-hooks.org",
        }
        settings.update(config or {})
        kwargs.setdefault("clock", lambda: TODAY)
        return create_app(settings, environ={}, **kwargs)

    return factory


@pytest.fixture
def app(make_app: Callable[..., Flask]) -> Flask:
    return make_app()


@pytest.fixture
def client(app: Flask) -> Iterator[FlaskClient]:
    with app.test_client() as c:
        yield c


def islet_order(order_id: str = "islet-1", code: str = "0584T", system: str = "http://www.ama-assn.org/go/cpt",
                patient: str = "pat-1") -> dict[str, Any]:
    return {
        "resourceType": "ServiceRequest",
        "id": order_id,
        "status": "draft",
        "intent": "order",
        "code": {"coding": [{"system": system, "code": code}], "text": "Islet cell transplant"},
        "subject": {"reference": f"Patient/{patient}"},
        "authoredOn": "2026-05-20",
        "occurrenceDateTime": "2026-06-15",
        "requester": {"reference": "Practitioner/dr-1"},
    }


def glucose_order(order_id: str = "lab-1") -> dict[str, Any]:
    return {
        "resourceType": "ServiceRequest",
        "id": order_id,
        "status": "draft",
        "intent": "order",
        "code": {"coding": [{"system": "http://loinc.org", "code": "2345-7"}]},
        "subject": {"reference": "Patient/pat-1"},
        "authoredOn": "2026-05-20",
        "requester": {"reference": "Practitioner/dr-1"},
    }


def order_sign_request(*orders: dict[str, Any], prefetch: dict[str, Any] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "hook": "order-sign",
        "hookInstance": str(uuid.uuid4()),
        "context": {
            "userId": "Practitioner/dr-1",
            "patientId": "pat-1",
            "draftOrders": {
                "resourceType": "Bundle",
                "type": "collection",
                "entry": [{"resource": copy.deepcopy(o)} for o in orders],
            },
        },
    }
    if prefetch is not None:
        body["prefetch"] = prefetch
    return body


def load_scenarios() -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted(SCENARIOS.glob("*.json"))]


@pytest.fixture(scope="module")
def make_httpserver() -> Iterator[HTTPServer]:
    """Overrides pytest-httpserver's server: threaded, so parallel queries overlap and a hung handler
    does not block the others (the FHIR-fallback tests rely on both)."""
    server = HTTPServer(host="127.0.0.1", port=0, threaded=True)
    server.start()
    yield server
    server.clear()
    if server.is_running():
        server.stop()
