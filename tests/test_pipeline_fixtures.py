"""Every fixture, end to end: the same answer with full prefetch, with none (read from a loopback FHIR
server), and from ``islet-cds evaluate``; and every answer passes the CDS Hooks / CRD checks."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from pytest_httpserver import HTTPServer

from service.cli import main
from tests.conformance import check_response
from tests.ehr_server import serve_prefetch
from tests.scenarios import Scenario, load_scenarios

SCENARIOS = load_scenarios()


def _app(make_app: Callable[..., Flask], scenario: Scenario, config: dict[str, Any] | None = None) -> Flask:
    return make_app(config or {}, clock=lambda: scenario.today, policy_overrides=scenario.policy_overrides or None)


def _post(app: Flask, request: dict[str, Any]) -> Any:
    path = f"/cds-services/islet-transplant-{request['hook']}"
    return app.test_client().post(path, data=json.dumps(request), content_type="application/json")


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_same_answer_with_full_prefetch_and_with_none(make_app: Callable[..., Flask], httpserver: HTTPServer,
                                                      scenario: Scenario) -> None:
    full = _post(_app(make_app, scenario), scenario.request)
    assert full.status_code == 200, full.get_data(as_text=True)

    app = _app(make_app, scenario, {"allowed_fhir_servers": httpserver.url_for("/fhir"),
                                    "fhir_require_https": False})
    policy = app.extensions["islet_cds"]["state"].policy
    base = serve_prefetch(httpserver, scenario.request["prefetch"], policy.prefetch, scenario.request["context"])
    bare = copy.deepcopy(scenario.request)
    del bare["prefetch"]
    bare["fhirServer"] = base
    fetched = _post(app, bare)
    assert fetched.status_code == 200, fetched.get_data(as_text=True)
    assert coded_decisions(fetched.get_json()) == coded_decisions(full.get_json())
    if not _unreadable_keys(scenario):
        # Nothing failed either way: the answers are identical to the byte.
        assert fetched.get_json() == full.get_json()
    assert check_response(scenario.request, full.get_json()) == [] or not scenario.expected


def _unreadable_keys(scenario: Scenario) -> list[str]:
    prefetch = scenario.request.get("prefetch") or {}
    return [k for k, v in prefetch.items() if isinstance(v, dict) and v.get("resourceType") == "OperationOutcome"]


def coded_decisions(body: dict[str, Any]) -> list[Any]:
    """The decision in coded form: per order, the coverage-information codes; per card, its indicator.

    Where a key could not be read, the free-text reason says why (prefetch said so, or the server
    failed), and that wording may differ; the coded decision may not.
    """
    coded: list[Any] = []
    for action in body.get("systemActions", []):
        for ext in action["resource"].get("extension", []):
            coded.append((action["resource"]["id"], sorted(
                (e["url"], e.get("valueCode") or e.get("valueCanonical") or e.get("valueString") or "")
                for e in ext.get("extension", []) if e["url"] != "reason")))
    coded.append([card["indicator"] for card in body.get("cards", [])])
    return coded


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_evaluate_gives_the_http_answer(make_app: Callable[..., Flask], scenario: Scenario,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    http = _post(_app(make_app, scenario), scenario.request).get_json()
    assert main(["evaluate", str(scenario.path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == http


DECIDED = [s for s in SCENARIOS if s.expected]


@pytest.mark.parametrize("scenario", DECIDED, ids=[s.name for s in DECIDED])
def test_crd_2_2_callers_get_conforming_answers(make_app: Callable[..., Flask], scenario: Scenario) -> None:
    request = copy.deepcopy(scenario.request)
    request.setdefault("extension", {})["davinci-crd.requestedVersion"] = "2.2"
    response = _post(_app(make_app, scenario), request)
    assert response.status_code == 200
    assert check_response(request, response.get_json()) == []
