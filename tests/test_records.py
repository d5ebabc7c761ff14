"""The decision log: extraction, round trip, idempotency, export, purge, and what is never stored."""

from __future__ import annotations

import argparse
import json
import sqlite3
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import inspect, text

from service.envelope import parse_hook_request
from service.records import extract
from service.records.cli import add_subcommands, run
from service.records.store import DecisionLog, FeedbackItem, OverrideReason, normalise_database_url
from tests.records_support import (
    ACCESS_TOKEN,
    BIRTH_DATE,
    PATIENT_NAME,
    fresh_postgres_database,
    make_decision,
    make_response,
)


class FakeClock:
    """A settable clock, so records can be made 'old' without waiting."""

    def __init__(self) -> None:
        self.now = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'nested' / 'dir' / 'records.sqlite'}"
    else:
        with fresh_postgres_database() as url:
            yield url


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def log(database_url: str, clock: FakeClock) -> Iterator[DecisionLog]:
    decision_log = DecisionLog(database_url, clock=clock)
    decision_log.migrate()
    yield decision_log
    decision_log.dispose()


def record(log: DecisionLog, order_ids: list[str], hook_instance: str | None = None,
           outcome: str = "covered") -> tuple[str, dict[str, Any]]:
    hook_instance = hook_instance or str(uuid.uuid4())
    body, expected = make_response(order_ids)
    log.record_call(
        hook_instance=hook_instance,
        hook="order-sign",
        service_id="islet-order-sign",
        patient_id="pat-1",
        issuer="https://ehr.example.org",
        tenant="tenant-a",
        decisions=[make_decision(o, outcome) for o in order_ids],
        response=body,
        timings={"parse": 0.41, "evaluate": 1.2},
    )
    return hook_instance, expected


# -- pure extraction ------------------------------------------------------------------------------


def test_card_uuids_by_order_follows_associated_resource_and_gives_general_cards_to_every_order() -> None:
    body, expected = make_response(["a", "b"])
    by_order = extract.card_uuids_by_order(body, ["ServiceRequest/a", "ServiceRequest/b"])
    assert by_order == {
        "ServiceRequest/a": [expected["by_order"]["ServiceRequest/a"], expected["general"]],
        "ServiceRequest/b": [expected["by_order"]["ServiceRequest/b"], expected["general"]],
    }
    assert extract.card_uuids(body) == [c["uuid"] for c in body["cards"]]
    assert extract.card_orders(body, ["ServiceRequest/a", "ServiceRequest/b"])[expected["general"]] == [
        "ServiceRequest/a", "ServiceRequest/b"]


def test_card_extraction_ignores_malformed_cards() -> None:
    body = {"cards": [{"summary": "no uuid"}, "junk", {"uuid": "u1", "extension": {"davinci-crd.associated-resource":
                                                                                  [{"reference": 5}, "x"]}}]}
    # A card whose extension names no usable reference concerns the whole call.
    assert extract.card_uuids_by_order(body, ["ServiceRequest/a"]) == {"ServiceRequest/a": ["u1"]}
    assert extract.card_uuids(None) == []
    assert extract.coverage_assertion_ids_by_order({"systemActions": [{"resource": {"id": 1}}, 7]}) == {}


def test_coverage_assertion_ids_are_read_per_order_and_coverage() -> None:
    body, expected = make_response(["a", "b"])
    second = body["systemActions"][0]["resource"]["extension"][0]
    body["systemActions"][0]["resource"]["extension"].append(
        {"url": second["url"], "extension": [{"url": "coverage-assertion-id", "valueString": "second-coverage"}]}
    )
    body["systemActions"][0]["resource"]["extension"].append({"url": "http://other", "valueString": "x"})
    assert extract.coverage_assertion_ids_by_order(body) == {
        "ServiceRequest/a": [expected["assertion"]["ServiceRequest/a"], "second-coverage"],
        "ServiceRequest/b": [expected["assertion"]["ServiceRequest/b"]],
    }


def test_criteria_rows_keep_pointers_not_free_text() -> None:
    rows = extract.criteria_rows(make_decision())
    assert [(r["id"], r["group"], r["status"]) for r in rows] == [
        ("A1", "allogeneic", "met"), ("A2", "allogeneic", "met"), ("A6", "allogeneic", "unknown"),
        ("X1", "exclusion", "met"),
    ]
    assert rows[1]["evidence"] == [
        {"reference": "Condition/t1d-1", "system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "E10.9",
         "date": "2019-04-02"}
    ]
    assert rows[0]["evidence"] == [{"reference": "Patient/pat-1", "system": None, "code": None, "date": None}]
    assert rows[0]["reason"] == "Born [birth date]: 44 years old on the date of service."
    assert PATIENT_NAME not in json.dumps(rows)
    assert BIRTH_DATE not in json.dumps(rows)


def test_outcome_summary() -> None:
    assert extract.outcome_summary(200, []) == "no_orders_in_scope"
    assert extract.outcome_summary(412, [make_decision()]) == "error"
    assert extract.outcome_summary(200, [make_decision("a", "not_covered"), make_decision("b", "covered"),
                                         make_decision("c", "covered")]) == "covered,not_covered"


# -- engine and URLs ------------------------------------------------------------------------------


def test_plain_postgresql_urls_use_psycopg_3() -> None:
    assert normalise_database_url("postgresql://u@h:5432/db").drivername == "postgresql+psycopg"
    assert normalise_database_url("postgres://u@h/db").drivername == "postgresql+psycopg"
    assert normalise_database_url("postgresql+psycopg://u@h/db").drivername == "postgresql+psycopg"
    with pytest.raises(ValueError, match="Unsupported"):
        normalise_database_url("mysql://u@h/db")


def test_sqlite_file_gets_its_directory_and_wal(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "records.sqlite"
    log = DecisionLog(f"sqlite:///{path}")
    log.migrate()
    with log.engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert connection.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL
        assert (connection.exec_driver_sql("PRAGMA busy_timeout").scalar() or 0) > 0
    log.dispose()
    assert path.exists()


def test_health_needs_a_migrated_schema(tmp_path: Path) -> None:
    log = DecisionLog(f"sqlite:///{tmp_path / 'r.sqlite'}")
    assert log.health() is False
    log.migrate()
    assert log.health() is True
    log.dispose()
    unreachable = DecisionLog("postgresql://nobody@127.0.0.1:1/none")
    assert unreachable.health() is False


def test_in_memory_sqlite_works_across_sessions() -> None:
    log = DecisionLog("sqlite://")
    log.migrate()
    hook_instance, _ = record(log, ["a"])
    assert len(log.get(hook_instance)) == 1


# -- round trip and idempotency (SQLite and PostgreSQL) -------------------------------------------


def test_round_trip_one_row_per_order(log: DecisionLog, clock: FakeClock) -> None:
    hook_instance, expected = record(log, ["a", "b"])
    rows = log.get(hook_instance)
    assert [r["order_reference"] for r in rows] == ["ServiceRequest/a", "ServiceRequest/b"]
    first = rows[0]
    assert first["hook"] == "order-sign" and first["service_id"] == "islet-order-sign"
    assert first["issuer"] == "https://ehr.example.org" and first["tenant"] == "tenant-a"
    assert first["patient_id"] == "pat-1"
    assert first["order_codes"] == [["http://www.ama-assn.org/go/cpt", "0584T"]]
    assert first["policy_version"] == "2026.1" and first["outcome"] == "covered"
    assert first["pathway"] == "allogeneic"
    assert first["coverage_assertion_id"] == expected["assertion"]["ServiceRequest/a"]
    assert first["card_uuids"] == [expected["by_order"]["ServiceRequest/a"], expected["general"]]
    assert first["timings"] == {"parse": 0.41, "evaluate": 1.2}
    assert first["data_gaps"] == ["Procedure: timeout"]
    assert [c["id"] for c in first["criteria"]] == ["A1", "A2", "A6", "X1"]
    assert first["created_at"] == "2026-06-01T12:00:00Z"
    assert first["feedback"] == []

    # The same records by row id and by coverage-assertion-id.
    assert log.get(first["id"]) == [first]
    assert log.get(str(first["id"])) == [first]
    assert log.get(expected["assertion"]["ServiceRequest/b"]) == [rows[1]]
    assert log.get("no-such-thing") == []

    calls = log.invocations(hook_instance)
    assert len(calls) == 1
    assert calls[0]["status_code"] == 200 and calls[0]["order_count"] == 2
    assert calls[0]["outcome_summary"] == "covered"
    assert len(calls[0]["card_uuids"]) == 3


def test_retried_call_adds_rows_and_keeps_every_answer_sent(log: DecisionLog, clock: FakeClock) -> None:
    hook_instance, first_expected = record(log, ["a"], outcome="indeterminate")
    clock.now += timedelta(seconds=5)
    _, expected = record(log, ["a"], hook_instance=hook_instance, outcome="covered")
    rows = log.get(hook_instance)
    calls = log.invocations(hook_instance)
    assert [c["outcome_summary"] for c in calls] == ["indeterminate", "covered"]
    # Newest call first, each decision with the call that sent it.
    assert [r["outcome"] for r in rows] == ["covered", "indeterminate"]
    assert [r["invocation_id"] for r in rows] == [calls[1]["id"], calls[0]["id"]]
    assert [r["invocation"]["created_at"] for r in rows] == ["2026-06-01T12:00:05Z", "2026-06-01T12:00:00Z"]
    assert [r["invocation"]["status_code"] for r in rows] == [200, 200]
    assert rows[0]["invocation"]["outcome_summary"] == "covered"
    assert rows[0]["coverage_assertion_id"] == expected["assertion"]["ServiceRequest/a"]
    # The answer sent first still resolves to what was sent then.
    first = log.get(first_expected["assertion"]["ServiceRequest/a"])
    assert [(r["outcome"], r["created_at"]) for r in first] == [("indeterminate", "2026-06-01T12:00:00Z")]


def _record_same_response(log: DecisionLog, hook_instance: str, body: dict[str, Any], outcome: str) -> None:
    """What the service does on a retry: card uuids and assertion ids are deterministic, so a retried
    call sends the very same ids, possibly with another outcome (the record changed in between)."""
    log.record_call(hook_instance=hook_instance, hook="order-sign", service_id="islet-order-sign",
                    patient_id="pat-1", decisions=[make_decision("a", outcome)], response=body)


def test_same_ids_sent_twice_resolve_to_both_answers_newest_first(log: DecisionLog, clock: FakeClock) -> None:
    hook_instance = str(uuid.uuid4())
    body, expected = make_response(["a"])
    _record_same_response(log, hook_instance, body, "covered")
    clock.now += timedelta(minutes=1)
    _record_same_response(log, hook_instance, body, "not_covered")
    by_assertion = log.get(expected["assertion"]["ServiceRequest/a"])
    assert [r["outcome"] for r in by_assertion] == ["not_covered", "covered"]
    assert by_assertion == log.get(hook_instance)
    assert [r["id"] for r in by_assertion] == sorted((r["id"] for r in by_assertion), reverse=True)
    # Each decision row is still reachable by its own id, unchanged.
    assert [r["outcome"] for r in log.get(by_assertion[1]["id"])] == ["covered"]


def test_feedback_links_to_the_newest_call_that_sent_the_card_before_it(log: DecisionLog, clock: FakeClock) -> None:
    hook_instance = str(uuid.uuid4())
    body, expected = make_response(["a"])
    card = expected["by_order"]["ServiceRequest/a"]
    sent_first = clock.now
    _record_same_response(log, hook_instance, body, "covered")
    clock.now += timedelta(minutes=5)
    _record_same_response(log, hook_instance, body, "not_covered")
    first_call, second_call = (c["id"] for c in log.invocations(hook_instance))

    log.record_feedback("islet-order-sign", "iss", [
        FeedbackItem(card, "accepted", sent_first + timedelta(minutes=1)),  # between the two calls
        FeedbackItem(card, "overridden", sent_first + timedelta(minutes=10)),  # after the retry
        FeedbackItem(card, "overridden", sent_first),  # at the very instant of the first call
        FeedbackItem(card, "accepted", sent_first - timedelta(hours=1)),  # EHR clock behind ours
    ])
    linked = {(f["outcome"], f["outcome_timestamp"]): (f["invocation_id"], f["hook_instance"], f["linked"])
              for f in log.export() if f["record_type"] == "feedback"}
    assert linked == {
        ("accepted", "2026-06-01T12:01:00Z"): (first_call, hook_instance, True),
        ("overridden", "2026-06-01T12:10:00Z"): (second_call, hook_instance, True),
        ("overridden", "2026-06-01T12:00:00Z"): (first_call, hook_instance, True),
        ("accepted", "2026-06-01T11:00:00Z"): (first_call, hook_instance, True),
    }
    newest, oldest = log.get(hook_instance)
    assert newest["invocation_id"] == second_call
    assert [f["outcome_timestamp"] for f in newest["feedback"]] == ["2026-06-01T12:10:00Z"]
    assert [f["outcome_timestamp"] for f in oldest["feedback"]] == [
        "2026-06-01T12:01:00Z", "2026-06-01T12:00:00Z", "2026-06-01T11:00:00Z"]


def test_calls_without_orders_and_failed_calls_are_logged(log: DecisionLog) -> None:
    quiet = str(uuid.uuid4())
    log.record_call(hook_instance=quiet, hook="order-select", service_id="islet-order-select", patient_id="pat-1",
                    response={"cards": []}, timings={"total": 2})
    log.record_call(hook_instance=None, hook=None, service_id="islet-order-sign", patient_id=None,
                    status_code=400, error="invalid: context.draftOrders")
    assert log.get(quiet) == []
    assert log.invocations(quiet)[0]["outcome_summary"] == "no_orders_in_scope"
    exported = [r for r in log.export(datetime(2026, 1, 1, tzinfo=UTC)) if r["record_type"] == "invocation"]
    failed = [r for r in exported if r["status_code"] == 400]
    assert len(failed) == 1 and failed[0]["outcome_summary"] == "error"
    assert failed[0]["error"] == "invalid: context.draftOrders"


def test_decisions_need_the_calls_identity(log: DecisionLog) -> None:
    with pytest.raises(ValueError):
        log.record_call(hook_instance=None, hook="order-sign", service_id="s", patient_id="p",
                        decisions=[make_decision()])


# -- feedback ---------------------------------------------------------------------------------------


def test_feedback_is_linked_by_card_uuid_and_idempotent(log: DecisionLog) -> None:
    hook_instance, expected = record(log, ["a", "b"])
    card_a = expected["by_order"]["ServiceRequest/a"]
    at = datetime(2026, 6, 1, 12, 3, 4, 500000, tzinfo=UTC)
    items = [
        FeedbackItem(card_a, "accepted", at, accepted_suggestions=("sugg-1",)),
        FeedbackItem(expected["general"], "overridden", at,
                     override_reason=OverrideReason("http://plan.example.org/override", "patient-refused", "Refused"),
                     user_comment="Discussed with the patient."),
        FeedbackItem("unknown-card", "overridden", at),
    ]
    assert log.record_feedback("islet-order-sign", "https://ehr.example.org", items) == 3
    assert log.record_feedback("islet-order-sign", "https://ehr.example.org", items) == 0
    # The same card at another time is another item.
    later = FeedbackItem(card_a, "accepted", at + timedelta(minutes=1), accepted_suggestions=("sugg-1",))
    assert log.record_feedback("islet-order-sign", "https://ehr.example.org", [later]) == 1

    row_a, row_b = log.get(hook_instance)
    assert [f["outcome"] for f in row_a["feedback"]] == ["accepted", "overridden", "accepted"]
    assert row_a["feedback"][0]["accepted_suggestions"] == ["sugg-1"]
    assert row_a["feedback"][0]["outcome_timestamp"] == "2026-06-01T12:03:04.500000Z"
    assert all(f["linked"] and f["hook_instance"] == hook_instance for f in row_a["feedback"])
    override = row_b["feedback"][0]
    assert (override["override_reason_code"], override["override_user_comment"]) == (
        "patient-refused", "Discussed with the patient.")
    unlinked = [r for r in log.export(at - timedelta(days=1))
                if r["record_type"] == "feedback" and r["card_uuid"] == "unknown-card"]
    assert len(unlinked) == 1 and unlinked[0]["linked"] is False and unlinked[0]["hook_instance"] is None


def test_feedback_from_another_service_is_not_linked(log: DecisionLog) -> None:
    _, expected = record(log, ["a"])
    item = FeedbackItem(expected["general"], "overridden", datetime(2026, 6, 1, tzinfo=UTC))
    assert log.record_feedback("islet-order-select", "iss", [item]) == 1
    feedback = [r for r in log.export(datetime(2026, 1, 1, tzinfo=UTC)) if r["record_type"] == "feedback"]
    assert feedback[0]["linked"] is False


# -- export and purge ------------------------------------------------------------------------------


def test_export_since_is_json_lines_ready_with_stable_keys(log: DecisionLog, clock: FakeClock) -> None:
    old, _ = record(log, ["a"])
    clock.now += timedelta(days=2)
    new, expected = record(log, ["b"])
    log.record_feedback("islet-order-sign", "iss", [
        FeedbackItem(expected["general"], "overridden", datetime(2026, 6, 3, tzinfo=UTC))])

    since = datetime(2026, 6, 2, tzinfo=UTC)
    exported = list(log.export(since))
    assert [r["record_type"] for r in exported] == ["invocation", "decision", "feedback"]
    assert {r["hook_instance"] for r in exported} == {new}
    decision = exported[1]
    assert list(decision)[:4] == ["record_type", "id", "invocation_id", "coverage_assertion_id"]
    # Same columns, same order (get adds the sending call and the feedback).
    assert list(decision) == list(log.get(new)[0])[:-2]
    assert list(log.get(new)[0])[-2:] == ["invocation", "feedback"]
    lines = [json.dumps(r) for r in exported]
    assert json.loads(lines[1])["order_reference"] == "ServiceRequest/b"
    # A naive "since" is UTC; everything since the first call includes the old one.
    assert {r["hook_instance"] for r in log.export(datetime(2026, 6, 1))} == {old, new}
    assert [r["record_type"] for r in log.export()] == ["invocation", "invocation", "decision", "decision",
                                                         "feedback"]


def test_purge_deletes_only_old_records(log: DecisionLog, clock: FakeClock) -> None:
    old, old_expected = record(log, ["a", "b"])
    log.record_feedback("islet-order-sign", "iss", [
        FeedbackItem(old_expected["general"], "overridden", datetime(2026, 6, 1, tzinfo=UTC))])
    clock.now += timedelta(days=40)
    new, _ = record(log, ["c"])

    # 1 invocation + 2 decisions + 3 cards + 1 feedback are older than 30 days.
    assert log.count_older_than(30) == 7
    assert log.purge(30) == 7
    assert log.get(old) == [] and log.invocations(old) == []
    assert len(log.get(new)) == 1 and len(log.invocations(new)) == 1
    assert log.purge(30) == 0
    with pytest.raises(ValueError):
        log.purge(-1)


# -- no tokens, no names ---------------------------------------------------------------------------


def _dump_everything(log: DecisionLog) -> str:
    """Every stored value of every table, as text (plus the raw SQLite files)."""
    parts = []
    with log.engine.connect() as connection:
        for table in inspect(connection).get_table_names():
            for row in connection.execute(text(f'SELECT * FROM "{table}"')):
                parts.append(repr(tuple(row)))
    if log.backend == "sqlite":
        database = Path(log.engine.url.database or "")
        for path in database.parent.glob(database.name + "*"):
            parts.append(path.read_bytes().decode("latin-1"))
        with sqlite3.connect(database) as raw:
            parts.extend(raw.iterdump())
    return "\n".join(parts)


def test_no_token_patient_name_or_birth_date_is_stored(log: DecisionLog) -> None:
    body = {
        "hook": "order-sign",
        "hookInstance": str(uuid.uuid4()),
        "fhirServer": "https://ehr.example.org/fhir",
        "fhirAuthorization": {"access_token": ACCESS_TOKEN, "token_type": "Bearer", "expires_in": 300,
                              "scope": "user/Patient.read", "subject": "cds-service"},
        "context": {
            "userId": "Practitioner/dr-1",
            "patientId": "pat-1",
            "draftOrders": {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": {
                "resourceType": "ServiceRequest", "id": "a", "status": "draft", "intent": "order",
                "code": {"text": "Islet transplant"}, "subject": {"reference": "Patient/pat-1"}}}]},
        },
    }
    request = parse_hook_request("islet-order-sign", "order-sign", body)
    response, _ = make_response(["a"])
    # What the pipeline hands over: the request's fields, the decisions, the response body.
    log.record_call(hook_instance=request.hook_instance, hook=request.hook, service_id=request.service_id,
                    patient_id=request.patient_id, issuer="https://ehr.example.org", decisions=[make_decision("a")],
                    response=response, timings={"total": 3.5})
    dump = _dump_everything(log)
    assert request.hook_instance in dump  # the dump does see the records
    assert ACCESS_TOKEN not in dump
    assert PATIENT_NAME not in dump
    assert BIRTH_DATE not in dump


# -- operators' commands ---------------------------------------------------------------------------


def _cli(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="islet-cds")
    add_subcommands(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


def test_cli_show_export_purge(log: DecisionLog, database_url: str, clock: FakeClock, tmp_path: Path,
                               monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("ISLET_CDS_DATABASE_URL", database_url)
    # Settings are validated as a whole: with authentication on (the default) a public URL is required.
    monkeypatch.setenv("ISLET_CDS_PUBLIC_BASE_URL", "https://cds.example.org")
    # Recorded years ago by the fake clock; the CLI's own DecisionLog uses real time.
    clock.now = datetime(2020, 6, 1, 12, 0, tzinfo=UTC)
    hook_instance, expected = record(log, ["a"])

    assert run(_cli(["decisions", "show", hook_instance])) == 0
    shown = json.loads(capsys.readouterr().out)
    assert [d["order_reference"] for d in shown["decisions"]] == ["ServiceRequest/a"]
    assert len(shown["invocations"]) == 1
    assert run(_cli(["decisions", "show", expected["assertion"]["ServiceRequest/a"]])) == 0
    assert json.loads(capsys.readouterr().out)["decisions"][0]["hook_instance"] == hook_instance
    assert run(_cli(["decisions", "show", "nothing-like-this"])) == 1
    capsys.readouterr()

    out = tmp_path / "exports" / "decisions.jsonl"
    assert run(_cli(["decisions", "export", "--since", "2020-05-31", "--out", str(out)])) == 0
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["record_type"] for r in lines] == ["invocation", "decision"]
    assert run(_cli(["decisions", "export", "--since", "2020-06-02T00:00:00Z"])) == 0
    assert capsys.readouterr().out == ""

    days = (datetime.now(UTC) - clock.now).days - 1
    assert run(_cli(["decisions", "purge", "--older-than", str(days)])) == 0
    assert "4 records" in capsys.readouterr().out
    assert len(log.get(hook_instance)) == 1  # counted, not deleted
    assert run(_cli(["decisions", "purge", "--older-than", str(days), "--yes"])) == 0
    assert "deleted 4 records" in capsys.readouterr().out
    assert log.get(hook_instance) == []


def test_cli_rejects_bad_arguments() -> None:
    with pytest.raises(SystemExit):
        _cli(["decisions", "export", "--since", "yesterday"])
    with pytest.raises(SystemExit):
        _cli(["decisions", "purge", "--older-than", "-3"])


# -- through the app: a retried call with a changed record (reviewer's d1) ------------------------


def test_app_retry_with_a_changed_record_keeps_both_answers(make_app: Any, tmp_path: Path) -> None:
    from tests.conftest import ROOT

    app = make_app({"database_url": f"sqlite:///{tmp_path / 'app.sqlite'}"})
    client = app.test_client()
    records: DecisionLog = app.extensions["islet_cds"]["records"]
    url = "/cds-services/islet-transplant-order-sign"
    body = json.loads((ROOT / "fhir_fixtures" / "requests" / "order-sign-allogeneic-met.json").read_text())
    first = client.post(url, json=body)
    changed = json.loads(json.dumps(body))
    changed["prefetch"]["patient"]["birthDate"] = "2015-01-01"  # now a child: not covered
    second = client.post(url, json=changed)
    assert first.status_code == second.status_code == 200

    rows = records.get(body["hookInstance"])
    assert [r["outcome"] for r in rows] == ["not_covered", "covered"]
    calls = records.invocations(body["hookInstance"])
    assert [r["invocation_id"] for r in rows] == [calls[1]["id"], calls[0]["id"]]
    # What the EHR was told the first time still resolves to the first answer (with the later one).
    for row in rows:
        assert row["coverage_assertion_id"] is not None
        assert row in records.get(row["coverage_assertion_id"])

    # Card uuids are deterministic: the retry sent the same card uuid with another answer. Feedback
    # belongs to the newest call that showed the card at or before the feedback's outcomeTimestamp.
    card = first.get_json()["cards"][0]["uuid"]
    assert card in {c["uuid"] for c in second.get_json()["cards"]}
    items = [{"card": card, "outcome": "accepted", "acceptedSuggestions": [{"id": "s"}],
              "outcomeTimestamp": calls[0]["created_at"]},  # while the first answer was on screen
             {"card": card, "outcome": "overridden", "outcomeTimestamp": "2099-01-01T00:00:00Z"}]
    assert calls[0]["created_at"] < calls[1]["created_at"]
    assert client.post(f"{url}/feedback", json={"feedback": items}).status_code == 200
    newest, oldest = records.get(body["hookInstance"])
    assert [(f["outcome"], f["invocation_id"]) for f in oldest["feedback"]] == [("accepted", calls[0]["id"])]
    assert [(f["outcome"], f["invocation_id"]) for f in newest["feedback"]] == [("overridden", calls[1]["id"])]
    records.dispose()
