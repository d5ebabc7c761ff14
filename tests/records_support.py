"""Builders and databases shared by the decision-log tests (not a test module itself)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from typing import Any

import pytest

from service.decision import CriterionResult, Decision, Evidence, OrderRef, PathwayResult
from service.records.extract import COVERAGE_INFORMATION_URL

POSTGRES_HOST = "127.0.0.1"
POSTGRES_PORT = 5432
POSTGRES_USERS = ("postgres", "root")
# Things that must never reach the log (they appear in the inputs the tests pass in).
PATIENT_NAME = "Zebulon Quixotehart"
BIRTH_DATE = "1981-11-07"
ACCESS_TOKEN = "tok-3f9a1c77e2b84d0c9a6e5b4d3c2b1a09-never-store-me"


def make_decision(order_id: str = "islet-1", outcome: str = "covered", version: str = "2026.1") -> Decision:
    """A Decision shaped like the engine's, with free text that the log must not keep."""
    evidence = Evidence(
        reference="Condition/t1d-1",
        system="http://hl7.org/fhir/sid/icd-10-cm",
        code="E10.9",
        display=f"Type 1 diabetes ({PATIENT_NAME})",
        date="2019-04-02",
        value="8.2 %",
        note=f"entered by {PATIENT_NAME}",
    )
    criteria = (
        CriterionResult("A1", "Adult", "met", f"Born {BIRTH_DATE}: 44 years old on the date of service.",
                        (Evidence(reference="Patient/pat-1", date=BIRTH_DATE),)),
        CriterionResult("A2", "Type 1 diabetes", "met", "Type 1 diabetes is on record.", (evidence,)),
        CriterionResult("A6", "Immunosuppression", "unknown", "No immunosuppressant order.", question="A6"),
    )
    return Decision(
        policy_id="pancreatic-islet-cell-transplantation",
        policy_version=version,
        policy_title="Pancreatic Islet Cell Transplantation",
        policy_url="https://plan.example.org/policies/islet",
        plan_label="Example Health Plan",
        questionnaire_url="https://plan.example.org/Questionnaire/islet|2026.1",
        order=OrderRef(
            reference=f"ServiceRequest/{order_id}",
            resource_type="ServiceRequest",
            id=order_id,
            codes=(("http://www.ama-assn.org/go/cpt", "0584T"),),
            description="Islet cell transplant",
        ),
        date_of_service=date(2026, 6, 15),
        outcome=outcome,  # type: ignore[arg-type]
        pathway="allogeneic",
        pathway_basis="Lantidra order present.",
        pathways=(PathwayResult("allogeneic", "unknown", criteria),),
        exclusions=(CriterionResult("X1", "Bioartificial pancreas", "met", "No bioartificial device ordered."),),
        data_gaps=("Procedure: timeout",),
    )


def coverage_action(order_id: str, assertion_id: str) -> dict[str, Any]:
    return {
        "type": "update",
        "description": "Coverage information",
        "resource": {
            "resourceType": "ServiceRequest",
            "id": order_id,
            "extension": [
                {
                    "url": COVERAGE_INFORMATION_URL,
                    "extension": [
                        {"url": "covered", "valueCode": "covered"},
                        {"url": "coverage-assertion-id", "valueString": assertion_id},
                    ],
                }
            ],
        },
    }


def make_response(order_ids: list[str], general_card: bool = True) -> tuple[dict[str, Any], dict[str, Any]]:
    """A CDS Hooks response: one card per order (associated-resource), one card for the call, one
    coverage-information action per order. Returns (body, expected) with the uuids and assertion ids."""
    cards: list[dict[str, Any]] = []
    actions = []
    expected: dict[str, Any] = {"by_order": {}, "assertion": {}, "general": None}
    for order_id in order_ids:
        card_uuid = str(uuid.uuid4())
        assertion_id = f"ca-{uuid.uuid4().hex[:12]}"
        cards.append({
            "uuid": card_uuid,
            "summary": "Policy criteria met; prior authorization required",
            "indicator": "info",
            "source": {"label": "Example Health Plan"},
            "extension": {"davinci-crd.associated-resource": [{"reference": f"ServiceRequest/{order_id}"}]},
        })
        actions.append(coverage_action(order_id, assertion_id))
        expected["by_order"][f"ServiceRequest/{order_id}"] = card_uuid
        expected["assertion"][f"ServiceRequest/{order_id}"] = assertion_id
    if general_card:
        general = str(uuid.uuid4())
        cards.append({"uuid": general, "summary": "Policy", "indicator": "info", "source": {"label": "Plan"}})
        expected["general"] = general
    return {"cards": cards, "systemActions": actions}, expected


def _admin_connection() -> Any:
    import psycopg

    errors = []
    for user in POSTGRES_USERS:
        try:
            return psycopg.connect(
                host=POSTGRES_HOST, port=POSTGRES_PORT, user=user, dbname="test", autocommit=True, connect_timeout=3
            ), user
        except psycopg.OperationalError as exc:
            errors.append(f"{user}: {str(exc).strip()}")
    pytest.skip(f"PostgreSQL unreachable at {POSTGRES_HOST}:{POSTGRES_PORT} ({'; '.join(errors)})")


@contextmanager
def fresh_postgres_database() -> Iterator[str]:
    """A new, uniquely named PostgreSQL database for one test, dropped afterwards; skips if unreachable."""
    admin, user = _admin_connection()
    name = f"islet_cds_test_{uuid.uuid4().hex[:16]}"
    try:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield f"postgresql://{user}@{POSTGRES_HOST}:{POSTGRES_PORT}/{name}"
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        admin.close()
