"""service.fhirdata: prefetch resolution and the FHIR fallback, against a real FHIR server on loopback.

The server is pytest-httpserver (werkzeug, threaded so parallel queries can overlap). Failure modes
(timeouts, HTTP errors, refusals) are in test_fhirdata_faults.py.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from service.envelope import FhirAuthorization, HookRequest
from service.fhirdata import DataUnavailable, PatientRecord, gather
from service.fhirdata.servers import is_allowed, parse_base, within
from service.fhirdata.templates import render
from tests.ehr_server import serve_prefetch, settings_for

PATIENT_ID = "pat-1"
TOKEN = "tok-secret-123"
ROOT = Path(__file__).resolve().parents[1]
TEMPLATES: dict[str, str] = {
    "patient": "Patient/{{context.patientId}}",
    "coverage": "Coverage?patient={{context.patientId}}&status=active",
    "conditions": "Condition?patient={{context.patientId}}",
    "observations": "Observation?patient={{context.patientId}}&code=4548-4,http://x.org/cs|a-b",
    "procedures": "Procedure?patient={{context.patientId}}",
    "medicationRequests": "MedicationRequest?patient={{context.patientId}}",
    "medicationStatements": "MedicationStatement?patient={{context.patientId}}",
    "encounters": "Encounter?patient={{context.patientId}}",
    "devices": "Device?patient={{context.patientId}}",
    "questionnaireResponses": "QuestionnaireResponse?patient={{context.patientId}}",
}
KEY_TYPES = {key: re.split(r"[/?]", template)[0] for key, template in TEMPLATES.items()}


# --- a small FHIR R4 server ----------------------------------------------------------------------



def patient(pid: str = PATIENT_ID) -> dict[str, Any]:
    return {"resourceType": "Patient", "id": pid, "birthDate": "1980-04-02", "gender": "female"}


def about(resource_type: str, rid: str, pid: str = PATIENT_ID, field: str = "subject") -> dict[str, Any]:
    """A resource of ``resource_type`` naming patient ``pid`` in ``field``."""
    return {"resourceType": resource_type, "id": rid, "status": "active", field: {"reference": f"Patient/{pid}"}}


def condition(rid: str, pid: str = PATIENT_ID, code: str = "E10.9") -> dict[str, Any]:
    res = about("Condition", rid, pid)
    res["code"] = {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": code}]}
    return res


def searchset(resources: list[dict[str, Any]], next_url: str | None = None) -> dict[str, Any]:
    bundle: dict[str, Any] = {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": len(resources),
        "entry": [{"resource": r, "search": {"mode": "match"}} for r in resources],
    }
    if next_url:
        bundle["link"] = [{"relation": "next", "url": next_url}]
    return bundle


def outcome() -> dict[str, Any]:
    return {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": "exception", "diagnostics": "backend down"}],
    }


class FakeFhir:
    """Serves reads and searches from ``data`` (resource type -> resources), ``page_size`` per page.

    Records every request (path, query args, Authorization, Accept) and how many were in flight at once.
    ``routes`` maps a path to a handler that replaces the default answer (for faults and odd servers).
    """

    def __init__(self, server: HTTPServer, page_size: int = 50) -> None:
        self.server = server
        self.data: dict[str, list[dict[str, Any]]] = {}
        self.routes: dict[str, Callable[[Request], Response]] = {}
        self.page_size = page_size
        self.requests: list[dict[str, Any]] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        server.expect_request(re.compile(r"^/.*")).respond_with_handler(self.handle)

    @property
    def base(self) -> str:
        return self.server.url_for("/fhir")

    def add(self, *resources: dict[str, Any]) -> None:
        for res in resources:
            self.data.setdefault(res["resourceType"], []).append(res)

    def paths(self) -> list[str]:
        return [r["path"] for r in self.requests]

    def handle(self, request: Request) -> Response:
        with self._lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            self.requests.append(
                {
                    "path": request.path,
                    "args": request.args.to_dict(flat=False),
                    "authorization": request.headers.get("Authorization"),
                    "accept": request.headers.get("Accept"),
                    "cookie": request.headers.get("Cookie"),
                }
            )
        try:
            route = self.routes.get(request.path)
            return route(request) if route else self._answer(request)
        finally:
            with self._lock:
                self.in_flight -= 1

    def _answer(self, request: Request) -> Response:
        parts = request.path.removeprefix("/fhir/").split("/")
        stored = self.data.get(parts[0], [])
        if len(parts) == 2:
            found = [r for r in stored if r.get("id") == parts[1]]
            return fhir_json(found[0] if found else outcome(), 200 if found else 404)
        page = int(request.args.get("_page", "0"))
        chunk = stored[page * self.page_size : (page + 1) * self.page_size]
        more = (page + 1) * self.page_size < len(stored)
        next_url = self.server.url_for(f"{request.path}?_page={page + 1}") if more else None
        return fhir_json(searchset(chunk, next_url))


def fhir_json(body: Any, status: int = 200) -> Response:
    return Response(json.dumps(body), status=status, content_type="application/fhir+json")


@pytest.fixture
def fhir(httpserver: HTTPServer) -> FakeFhir:
    return FakeFhir(httpserver)



def hook_request(
    fhir_server: str | None,
    prefetch: dict[str, Any] | None = None,
    token: str | None = TOKEN,
    **context: Any,
) -> HookRequest:
    ctx: dict[str, Any] = {"patientId": PATIENT_ID, "userId": "Practitioner/doc-1"}
    ctx.update(context)
    auth = None
    if token is not None:
        auth = FhirAuthorization(
            access_token=token, token_type="Bearer", expires_in=300, scope="patient/*.read", subject="islet-cds"
        )
    return HookRequest(
        service_id="islet",
        hook="order-sign",
        hook_instance="d1577c69-dfbe-44ad-ba6d-3e05e953b2ea",
        fhir_server=fhir_server,
        fhir_authorization=auth,
        context=ctx,
        prefetch=prefetch,
        extension={},
        patient_id=ctx["patientId"],
        draft_orders=[],
        all_orders=[],
        configuration={},
    )


def ids(record: PatientRecord, key: str) -> list[str]:
    return [r["id"] for r in record.resources[key]]


def full_prefetch() -> dict[str, Any]:
    """Every key: the Patient, and one resource of each searched type."""
    prefetch: dict[str, Any] = {"patient": patient()}
    for key, resource_type in KEY_TYPES.items():
        if key != "patient":
            field = "beneficiary" if resource_type == "Coverage" else "subject"
            prefetch[key] = searchset([about(resource_type, f"{key}-1", field=field)])
    return prefetch


# --- the prefetch matrix ---------------------------------------------------------------------------


def test_full_prefetch_is_used_and_the_server_is_not_called(fhir: FakeFhir) -> None:
    record = gather(hook_request(fhir.base, full_prefetch()), TEMPLATES, settings_for(fhir.base))

    assert fhir.requests == []
    assert record.gaps == {}
    assert record.sources == {key: "prefetch" for key in TEMPLATES}
    assert ids(record, "patient") == [PATIENT_ID]
    for key in TEMPLATES:
        if key != "patient":
            assert ids(record, key) == [f"{key}-1"]


def test_partial_prefetch_queries_only_the_missing_keys(fhir: FakeFhir) -> None:
    fhir.add(condition("c-1"), condition("c-2"), about("Procedure", "proc-1"))
    prefetch = {k: v for k, v in full_prefetch().items() if k not in ("conditions", "procedures")}

    record = gather(hook_request(fhir.base, prefetch), TEMPLATES, settings_for(fhir.base))

    assert sorted(fhir.paths()) == ["/fhir/Condition", "/fhir/Procedure"]
    assert ids(record, "conditions") == ["c-1", "c-2"]
    assert ids(record, "procedures") == ["proc-1"]
    assert record.sources["conditions"] == record.sources["procedures"] == "fhir"
    assert record.sources["patient"] == "prefetch"
    assert record.gaps == {}


def test_null_prefetch_means_no_data_and_no_query(fhir: FakeFhir) -> None:
    fhir.add(patient(), condition("c-1"))
    prefetch = {key: None for key in TEMPLATES}

    record = gather(hook_request(fhir.base, prefetch), TEMPLATES, settings_for(fhir.base))

    assert fhir.requests == []
    assert record.resources == {key: [] for key in TEMPLATES}
    assert record.sources == {key: "null" for key in TEMPLATES}
    assert record.gaps == {}


def test_null_prefetch_without_any_fhir_server_is_not_a_412() -> None:
    prefetch = {key: None for key in TEMPLATES}
    record = gather(hook_request(None, prefetch, token=None), TEMPLATES, settings_for("https://ehr.example/fhir"))
    assert record.sources == {key: "null" for key in TEMPLATES}


def test_operation_outcome_in_prefetch_counts_as_absent(fhir: FakeFhir) -> None:
    fhir.add(condition("c-9"), about("Encounter", "enc-9"))
    prefetch = full_prefetch()
    prefetch["conditions"] = outcome()
    prefetch["encounters"] = {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": outcome()}]}

    record = gather(hook_request(fhir.base, prefetch), TEMPLATES, settings_for(fhir.base))

    assert sorted(fhir.paths()) == ["/fhir/Condition", "/fhir/Encounter"]
    assert ids(record, "conditions") == ["c-9"]
    assert ids(record, "encounters") == ["enc-9"]
    assert record.sources["conditions"] == "fhir"
    assert any(n.startswith("conditions:") and "OperationOutcome" in n for n in record.notes)


def test_unusable_prefetch_value_is_queried_instead(fhir: FakeFhir) -> None:
    fhir.add(patient(), condition("c-1"))
    prefetch = full_prefetch()
    prefetch["patient"] = condition("c-x")  # wrong type for a Patient read
    prefetch["conditions"] = "not a resource"

    record = gather(hook_request(fhir.base, prefetch), TEMPLATES, settings_for(fhir.base))

    assert sorted(fhir.paths()) == ["/fhir/Condition", f"/fhir/Patient/{PATIENT_ID}"]
    assert ids(record, "patient") == [PATIENT_ID]
    assert ids(record, "conditions") == ["c-1"]


def test_absent_prefetch_queries_every_key(fhir: FakeFhir) -> None:
    fhir.add(patient(), condition("c-1"), about("Coverage", "cov-1", field="beneficiary"))

    record = gather(hook_request(fhir.base, None), TEMPLATES, settings_for(fhir.base))

    assert len(fhir.requests) == len(TEMPLATES)
    assert record.sources == {key: "fhir" for key in TEMPLATES}
    assert record.gaps == {}
    assert ids(record, "patient") == [PATIENT_ID]
    assert ids(record, "coverage") == ["cov-1"]
    assert ids(record, "conditions") == ["c-1"]
    assert record.resources["devices"] == []


def test_prefetch_single_resource_for_a_search_key_becomes_a_list(fhir: FakeFhir) -> None:
    prefetch = full_prefetch()
    prefetch["coverage"] = about("Coverage", "cov-7", field="beneficiary")
    record = gather(hook_request(fhir.base, prefetch), TEMPLATES, settings_for(fhir.base))
    assert ids(record, "coverage") == ["cov-7"]
    assert fhir.requests == []


def test_no_prefetch_and_no_fhir_server_is_data_unavailable() -> None:
    with pytest.raises(DataUnavailable) as raised:
        gather(hook_request(None, None, token=None), TEMPLATES, settings_for("https://ehr.example/fhir"))
    assert "patient" in raised.value.diagnostics
    assert set(raised.value.gaps) == set(TEMPLATES)


def test_prefetch_patient_but_no_fhir_server_gives_gaps_not_412() -> None:
    prefetch = {"patient": patient()}
    record = gather(hook_request(None, prefetch, token=None), TEMPLATES, settings_for("https://ehr.example/fhir"))
    assert ids(record, "patient") == [PATIENT_ID]
    assert set(record.gaps) == set(TEMPLATES) - {"patient"}
    assert "no FHIR server" in record.gaps["conditions"]


# --- the query itself -------------------------------------------------------------------------------


def test_bearer_token_and_accept_header_reach_the_server(fhir: FakeFhir) -> None:
    fhir.page_size = 1
    fhir.add(patient(), condition("c-1"), condition("c-2"))

    gather(hook_request(fhir.base, None), TEMPLATES, settings_for(fhir.base))

    assert len(fhir.requests) == len(TEMPLATES) + 1  # conditions took two pages
    assert {r["authorization"] for r in fhir.requests} == {f"Bearer {TOKEN}"}
    assert {r["accept"] for r in fhir.requests} == {"application/fhir+json"}


def test_no_authorization_header_without_fhir_authorization(fhir: FakeFhir) -> None:
    fhir.add(patient())
    record = gather(hook_request(fhir.base, None, token=None), TEMPLATES, settings_for(fhir.base))
    assert record.gaps == {}
    assert {r["authorization"] for r in fhir.requests} == {None}


def test_cookies_set_by_one_server_answer_are_never_sent_back(fhir: FakeFhir) -> None:
    def set_cookie(request: Request) -> Response:
        answer = fhir_json(searchset([]))
        answer.set_cookie("session", "user-a", path="/")
        return answer

    fhir.routes["/fhir/Condition"] = set_cookie
    fhir.add(patient())
    templates = {"patient": TEMPLATES["patient"], "conditions": TEMPLATES["conditions"]}
    gather(hook_request(fhir.base, {"patient": patient()}), templates, settings_for(fhir.base))
    gather(hook_request(fhir.base, None), templates, settings_for(fhir.base))  # the shared session again
    assert len(fhir.requests) == 3
    assert {r["cookie"] for r in fhir.requests} == {None}


def test_template_tokens_are_url_encoded(fhir: FakeFhir) -> None:
    templates = {
        "patient": "Patient/{{context.patientId}}",
        "byUser": "Condition?asserter={{context.userId}}&patient={{context.patientId}}",
        "byRole": "Condition?recorder={{userPractitionerId}}",
    }
    fhir.add(patient())
    request = hook_request(fhir.base, None, userId="Practitioner/a b&c=1#x")

    record = gather(request, templates, settings_for(fhir.base))

    assert record.gaps == {}
    args = {tuple(sorted(r["args"])): r["args"] for r in fhir.requests}
    assert args[("asserter", "patient")] == {"asserter": ["Practitioner/a b&c=1#x"], "patient": [PATIENT_ID]}
    assert args[("recorder",)] == {"recorder": ["a b&c=1#x"]}


def test_search_template_sends_its_literal_parameters(fhir: FakeFhir) -> None:
    fhir.add(patient())
    gather(hook_request(fhir.base, {"patient": patient()}), TEMPLATES, settings_for(fhir.base))
    observation_query = next(r for r in fhir.requests if r["path"] == "/fhir/Observation")
    assert observation_query["args"] == {"patient": [PATIENT_ID], "code": ["4548-4,http://x.org/cs|a-b"]}


def test_missing_context_token_is_a_gap_for_that_key_only(fhir: FakeFhir) -> None:
    fhir.add(patient())
    templates = {"patient": "Patient/{{context.patientId}}", "encounter": "Encounter/{{context.encounterId}}"}

    record = gather(hook_request(fhir.base, None), templates, settings_for(fhir.base))

    assert fhir.paths() == [f"/fhir/Patient/{PATIENT_ID}"]
    assert "context.encounterId" in record.gaps["encounter"]
    assert "encounter" not in record.resources


def test_next_links_are_followed_across_pages(fhir: FakeFhir) -> None:
    fhir.page_size = 2
    fhir.add(patient(), *[condition(f"c-{i}") for i in range(5)])
    templates = {"patient": TEMPLATES["patient"], "conditions": TEMPLATES["conditions"]}

    record = gather(hook_request(fhir.base, None), templates, settings_for(fhir.base))

    assert ids(record, "conditions") == [f"c-{i}" for i in range(5)]
    condition_pages = [r for r in fhir.requests if r["path"] == "/fhir/Condition"]
    assert len(condition_pages) == 3
    assert all(r["authorization"] == f"Bearer {TOKEN}" for r in condition_pages)
    assert record.gaps == {}


def test_paginated_prefetch_bundle_is_completed_from_the_server(fhir: FakeFhir) -> None:
    fhir.page_size = 2
    fhir.add(*[condition(f"c-{i}") for i in range(4)])
    prefetch = full_prefetch()
    prefetch["conditions"] = searchset(
        [condition("c-0"), condition("c-1")], fhir.server.url_for("/fhir/Condition?_page=1")
    )

    record = gather(hook_request(fhir.base, prefetch), TEMPLATES, settings_for(fhir.base))

    assert fhir.paths() == ["/fhir/Condition"]
    assert ids(record, "conditions") == ["c-0", "c-1", "c-2", "c-3"]
    assert record.sources["conditions"] == "prefetch"
    assert record.gaps == {}


def test_relative_next_link_in_prefetch_is_resolved_against_the_fhir_server(fhir: FakeFhir) -> None:
    fhir.page_size = 1
    fhir.add(condition("c-0"), condition("c-1"))
    prefetch = full_prefetch()
    prefetch["conditions"] = searchset([condition("c-0")], "Condition?_page=1")

    record = gather(hook_request(fhir.base, prefetch), TEMPLATES, settings_for(fhir.base))

    assert fhir.paths() == ["/fhir/Condition"]
    assert ids(record, "conditions") == ["c-0", "c-1"]
    assert record.gaps == {}


def test_paginated_prefetch_without_a_fhir_server_is_kept_but_incomplete() -> None:
    prefetch = full_prefetch()
    prefetch["conditions"] = searchset([condition("c-0")], "https://ehr.example/fhir/Condition?_page=1")

    record = gather(hook_request(None, prefetch, token=None), TEMPLATES, settings_for("https://ehr.example/fhir"))

    assert ids(record, "conditions") == ["c-0"]
    assert record.gaps["conditions"].startswith("incomplete")


def test_missing_keys_are_queried_in_parallel(httpserver: HTTPServer) -> None:
    """Six queries must be at the server at the same time: the barrier opens only when all six wait."""
    fhir = FakeFhir(httpserver)
    missing = ["conditions", "observations", "procedures", "medicationRequests", "encounters", "devices"]
    barrier = threading.Barrier(len(missing), timeout=10)

    def meet_the_others(request: Request) -> Response:
        barrier.wait()  # raises BrokenBarrierError (-> 500) if the queries arrive one after another
        return fhir_json(searchset([]))

    for key in missing:
        fhir.routes[f"/fhir/{KEY_TYPES[key]}"] = meet_the_others
    prefetch = {k: v for k, v in full_prefetch().items() if k not in missing}

    record = gather(hook_request(fhir.base, prefetch), TEMPLATES, settings_for(fhir.base, fhir_deadline_seconds=15))

    assert record.gaps == {}
    assert fhir.max_in_flight == len(missing)
    assert {record.sources[k] for k in missing} == {"fhir"}


# --- whose data -----------------------------------------------------------------------------------


def test_entries_for_another_patient_are_dropped_and_noted(fhir: FakeFhir) -> None:
    fhir.add(
        patient(),
        condition("mine"),
        condition("theirs", pid="someone-else"),
        condition("absolute-mine-here", pid=PATIENT_ID),
        about("Condition", "grouped", field="subject") | {"subject": {"reference": "Group/g-1"}},
    )
    fhir.data["Condition"][2]["subject"] = {"reference": f"{fhir.base}/Patient/{PATIENT_ID}"}
    prefetch = full_prefetch()
    del prefetch["conditions"]
    prefetch["procedures"] = searchset(
        [
            about("Procedure", "p-mine"),
            about("Procedure", "p-other-server")
            | {"subject": {"reference": f"https://elsewhere.example/fhir/Patient/{PATIENT_ID}"}},
        ]
    )

    record = gather(hook_request(fhir.base, prefetch), TEMPLATES, settings_for(fhir.base))

    assert ids(record, "conditions") == ["mine", "absolute-mine-here"]
    assert ids(record, "procedures") == ["p-mine"]
    assert "conditions: dropped 2 entries for another patient" in record.notes
    assert "procedures: dropped 1 entries for another patient" in record.notes
    assert record.gaps == {}


def test_another_patients_patient_resource_is_a_412(fhir: FakeFhir) -> None:
    prefetch = full_prefetch()
    prefetch["patient"] = patient("someone-else")
    with pytest.raises(DataUnavailable) as raised:
        gather(hook_request(fhir.base, prefetch), TEMPLATES, settings_for(fhir.base))
    assert "another patient" in raised.value.gaps["patient"]
    assert "someone-else" not in raised.value.diagnostics


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_logs_carry_no_token_and_no_patient_id(fhir: FakeFhir) -> None:
    fhir.add(patient(), condition("c-1"))
    fhir.routes["/fhir/Device"] = lambda request: Response("oops", status=500)
    logger = logging.getLogger("islet_cds.fhirdata")
    collect, level = _Collect(), logger.level
    logger.addHandler(collect)  # directly: the app may have stopped "islet_cds" propagating to the root
    logger.setLevel(logging.DEBUG)
    try:
        record = gather(hook_request(fhir.base, None), TEMPLATES, settings_for(fhir.base))
    finally:
        logger.removeHandler(collect)
        logger.setLevel(level)
    assert collect.records, "gather logs key names and status codes"
    text = "\n".join(f"{r.getMessage()} {vars(r)}" for r in collect.records)
    assert "devices" in text and "500" in text and "durationMs" in text
    assert TOKEN not in text and PATIENT_ID not in text and fhir.base not in text
    assert TOKEN not in repr(record) and all(PATIENT_ID not in g for g in record.gaps.values())


# --- server allowlist -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("allowed", "server", "ok"),
    [
        ("https://ehr.example/fhir", "HTTPS://EHR.example:443/fhir/", True),
        ("https://ehr.example/fhir", "https://ehr.example/fhir/r4", True),
        ("https://ehr.example/fhir", "https://ehr.example/fhir2", False),
        ("https://ehr.example/fhir", "https://ehr.example", False),
        ("https://ehr.example/fhir", "https://ehr.example:8443/fhir", False),
        ("https://ehr.example/fhir", "http://ehr.example/fhir", False),
        ("https://ehr.example/fhir", "https://ehr.example.evil.org/fhir", False),
        ("https://ehr.example/", "https://ehr.example/anything", True),
        ("*", "https://anywhere.example/fhir", True),
        ("not a url", "https://ehr.example/fhir", False),
    ],
)
def test_allowlist_compares_normalised_bases(allowed: str, server: str, ok: bool) -> None:
    assert is_allowed(parse_base(server), [allowed]) is ok


@pytest.mark.parametrize(
    "bad",
    [
        "ftp://ehr.example/fhir",
        "https://user:pw@ehr.example/fhir",
        "https://ehr.example/fhir?x=1",
        "https:///fhir",
        "https://ehr.example/fhir/../admin",
        "https://ehr.example/fhir/%2e%2e/admin",
    ],
)
def test_unusable_base_urls_are_rejected(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_base(bad)


def test_next_link_must_stay_under_the_base() -> None:
    base = parse_base("https://ehr.example/fhir")
    assert within(base, "https://ehr.example/fhir/Condition?_page=2&patient=1")
    assert not within(base, "https://ehr.example/fhir-other/Condition?_page=2")
    assert not within(base, "https://ehr.example/fhir/../admin")
    assert not within(base, "http://ehr.example/fhir/Condition")


@given(value=st.text(min_size=1, max_size=40).filter(lambda v: v not in (".", "..")))
def test_any_context_value_stays_one_query_parameter(value: str) -> None:
    query = render(
        "Condition?asserter={{context.userId}}&patient={{context.patientId}}", {"userId": value, "patientId": "p"}
    )
    target = urlsplit(f"https://ehr.example/fhir/{query.relative_url}")
    assert parse_qsl(target.query, keep_blank_values=True) == [("asserter", value), ("patient", "p")]
    assert target.path == "/fhir/Condition" and not target.fragment
    assert within(parse_base("https://ehr.example/fhir"), f"https://ehr.example/fhir/{query.relative_url}")


@given(host=st.from_regex(r"[a-z]{1,10}(\.[a-z]{2,5}){0,2}", fullmatch=True))
def test_only_the_allowed_host_is_allowed(host: str) -> None:
    allowed = ["https://ehr.example/fhir"]
    assert is_allowed(parse_base(f"https://{host}/fhir"), allowed) is (host == "ehr.example")


# --- scenario files from fhir_fixtures/ -------------------------------------------------------------

SCENARIOS = sorted((ROOT / "fhir_fixtures" / "scenarios").glob("*.json"))


def _policy_templates() -> dict[str, str]:
    path = ROOT / "service" / "policies" / "pancreatic-islet-cell-transplantation" / "policy.yaml"
    if path.exists():
        prefetch = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("prefetch")
        if isinstance(prefetch, dict) and prefetch:
            return {str(k): str(v) for k, v in prefetch.items()}
    return TEMPLATES


@pytest.mark.skipif(not SCENARIOS, reason="no fhir_fixtures/scenarios/*.json yet")
@pytest.mark.parametrize("path", SCENARIOS, ids=[p.stem for p in SCENARIOS])
def test_scenario_from_the_server_equals_its_full_prefetch(path: Path, httpserver: HTTPServer) -> None:
    scenario = json.loads(path.read_text(encoding="utf-8"))
    body = scenario["request"]
    templates = {k: v for k, v in _policy_templates().items() if k in (body.get("prefetch") or {})}
    context = body["context"]
    base = serve_prefetch(httpserver, body["prefetch"], templates, context)

    def request_with(prefetch: dict[str, Any] | None, server: str | None) -> HookRequest:
        return HookRequest(
            service_id="islet",
            hook=body["hook"],
            hook_instance=body["hookInstance"],
            fhir_server=server,
            fhir_authorization=None,
            context=context,
            prefetch=prefetch,
            extension={},
            patient_id=context["patientId"],
            draft_orders=[],
            all_orders=[],
            configuration={},
        )

    settings = settings_for(base)
    prefetched = gather(request_with(body["prefetch"], None), templates, settings)
    fetched = gather(request_with(None, base), templates, settings)

    # Keys the EHR could not give (an OperationOutcome) are gaps both ways; the rest are the same resources.
    assert set(fetched.gaps) == set(prefetched.gaps)
    assert prefetched.resources  # the scenario really carried data
    for key in templates:
        assert fetched.resources.get(key) == prefetched.resources.get(key), key
