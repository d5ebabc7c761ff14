"""service.fhirdata under faults: deadline, HTTP errors, garbage, retries, paging limits, refused servers.

Real HTTP against pytest-httpserver on loopback (threaded). The deadline test proves that gather did not
wait for a hung query by observing that the server's handler is still blocked when gather returns.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from service.envelope import FhirAuthorization, HookRequest
from service.fhirdata import DataUnavailable, FhirServerRefused, PatientRecord, client, gather
from tests.ehr_server import settings_for

PATIENT_ID = "pat-1"
TOKEN = "tok-secret-456"
TEMPLATES = {
    "patient": "Patient/{{context.patientId}}",
    "conditions": "Condition?patient={{context.patientId}}",
    "procedures": "Procedure?patient={{context.patientId}}",
}



class Server:
    """Routes by path to fixed answers or handlers; counts requests per path, thread-safely."""

    def __init__(self, httpserver: HTTPServer) -> None:
        self.httpserver = httpserver
        self.routes: dict[str, Any] = {}
        self.hits: dict[str, int] = {}
        self._lock = threading.Lock()
        httpserver.expect_request(re.compile(r"^/.*")).respond_with_handler(self.handle)

    @property
    def base(self) -> str:
        return self.httpserver.url_for("/fhir")

    def total(self) -> int:
        return sum(self.hits.values())

    def handle(self, request: Request) -> Response:
        with self._lock:
            self.hits[request.path] = self.hits.get(request.path, 0) + 1
        route = self.routes.get(request.path)
        if route is None:
            return fhir_json({"resourceType": "OperationOutcome", "issue": []}, 404)
        if callable(route):
            answer: Response = route(request)
            return answer
        return fhir_json(route)


def fhir_json(body: Any, status: int = 200, **headers: str) -> Response:
    return Response(json.dumps(body), status=status, content_type="application/fhir+json", headers=headers)


def patient(pid: str = PATIENT_ID) -> dict[str, Any]:
    return {"resourceType": "Patient", "id": pid, "birthDate": "1975-01-01"}


def condition(rid: str) -> dict[str, Any]:
    return {"resourceType": "Condition", "id": rid, "subject": {"reference": f"Patient/{PATIENT_ID}"}}


def searchset(resources: list[dict[str, Any]], next_url: str | None = None) -> dict[str, Any]:
    bundle: dict[str, Any] = {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [{"resource": r} for r in resources],
    }
    if next_url:
        bundle["link"] = [{"relation": "next", "url": next_url}]
    return bundle


@pytest.fixture
def fhir(httpserver: HTTPServer) -> Server:
    server = Server(httpserver)
    server.routes[f"/fhir/Patient/{PATIENT_ID}"] = patient()
    server.routes["/fhir/Condition"] = searchset([condition("c-1")])
    server.routes["/fhir/Procedure"] = searchset([])
    return server



def hook_request(fhir_server: str | None, prefetch: dict[str, Any] | None = None) -> HookRequest:
    auth = FhirAuthorization(
        access_token=TOKEN, token_type="Bearer", expires_in=300, scope="patient/*.read", subject="islet-cds"
    )
    return HookRequest(
        service_id="islet",
        hook="order-sign",
        hook_instance="0b5a3e3e-6d5c-4a39-9c0e-4a4c1c8f7f11",
        fhir_server=fhir_server,
        fhir_authorization=auth,
        context={"patientId": PATIENT_ID},
        prefetch=prefetch,
        extension={},
        patient_id=PATIENT_ID,
        draft_orders=[],
        all_orders=[],
        configuration={},
    )


def run(fhir: Server, prefetch: dict[str, Any] | None = None, **settings: Any) -> PatientRecord:
    return gather(hook_request(fhir.base, prefetch), TEMPLATES, settings_for(fhir.base, **settings))


# --- the deadline ---------------------------------------------------------------------------------


def test_a_hung_query_becomes_a_gap_and_is_not_waited_for(fhir: Server) -> None:
    entered, release = threading.Event(), threading.Event()

    def hang(request: Request) -> Response:
        entered.set()
        release.wait(30)
        return fhir_json(searchset([]))

    fhir.routes["/fhir/Procedure"] = hang
    deadline = 1.0
    try:
        started = time.monotonic()
        record = run(fhir, fhir_deadline_seconds=deadline)
        elapsed = time.monotonic() - started
        still_hanging = entered.is_set() and not release.is_set()
    finally:
        release.set()

    assert still_hanging  # gather returned while the server was still holding the query
    assert "deadline" in record.gaps["procedures"]
    assert [r["id"] for r in record.resources["conditions"]] == ["c-1"]
    assert "procedures" not in record.sources
    assert elapsed < deadline + 0.5  # the requirement itself (generous bound, not a benchmark)


def test_hung_patient_query_is_data_unavailable(fhir: Server) -> None:
    release = threading.Event()

    def hang(request: Request) -> Response:
        release.wait(30)
        return fhir_json(patient())

    fhir.routes[f"/fhir/Patient/{PATIENT_ID}"] = hang
    try:
        with pytest.raises(DataUnavailable) as raised:
            run(fhir, fhir_deadline_seconds=1.0)
    finally:
        release.set()
    assert not isinstance(raised.value, FhirServerRefused)
    assert "deadline" in raised.value.gaps["patient"]
    assert "conditions" not in raised.value.gaps


def test_slow_body_is_cut_at_the_deadline(fhir: Server) -> None:
    def drip(request: Request) -> Response:
        def chunks() -> Iterator[bytes]:
            yield b'{"resourceType": "Bundle", "type": "searchset", "entry": ['
            for _ in range(60):
                time.sleep(0.05)
                yield b" "
            yield b"]}"

        return Response(chunks(), content_type="application/fhir+json")

    fhir.routes["/fhir/Condition"] = drip
    record = run(fhir, fhir_deadline_seconds=1.0)
    assert "conditions" in record.gaps
    assert "conditions" not in record.resources


# --- HTTP errors and garbage -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "expected_gap"),
    [
        (lambda r: fhir_json({"resourceType": "OperationOutcome"}, 401), "HTTP 401"),
        (lambda r: fhir_json({"resourceType": "OperationOutcome"}, 403), "HTTP 403"),
        (lambda r: Response("Internal error", status=500), "HTTP 500"),
        (lambda r: Response("<html>login</html>", content_type="text/html"), "not JSON"),
        (lambda r: Response(b"\xff\xfe\x00garbage", content_type="application/fhir+json"), "not JSON"),
        (lambda r: fhir_json({"hello": "world"}), "not a FHIR resource"),
        (lambda r: fhir_json([1, 2, 3]), "not a FHIR resource"),
        (lambda r: fhir_json(patient()), "expected Bundle, the FHIR server answered Patient"),
        (lambda r: Response("", status=302, headers={"Location": "/fhir/Procedure"}), "redirect"),
    ],
)
def test_failures_of_one_key_are_gaps(fhir: Server, answer: Any, expected_gap: str) -> None:
    fhir.routes["/fhir/Condition"] = answer

    record = run(fhir)

    assert expected_gap in record.gaps["conditions"]
    assert "conditions" not in record.resources
    assert [r["id"] for r in record.resources["patient"]] == [PATIENT_ID]
    assert set(record.gaps) == {"conditions"}
    assert fhir.hits.get("/fhir/Procedure") == 1  # the redirect target was not followed


def test_read_answered_with_another_type_is_a_gap(fhir: Server) -> None:
    fhir.routes[f"/fhir/Patient/{PATIENT_ID}"] = condition("c-1")
    with pytest.raises(DataUnavailable) as raised:
        run(fhir)
    assert "expected Patient" in raised.value.gaps["patient"]


def test_unauthorized_everywhere_is_data_unavailable(fhir: Server) -> None:
    for path in list(fhir.routes):
        fhir.routes[path] = lambda r: fhir_json({"resourceType": "OperationOutcome"}, 401)
    with pytest.raises(DataUnavailable) as raised:
        run(fhir)
    assert set(raised.value.gaps) == set(TEMPLATES)
    assert "HTTP 401" in raised.value.diagnostics
    assert TOKEN not in raised.value.diagnostics and PATIENT_ID not in raised.value.diagnostics


def test_too_large_answer_is_a_gap(fhir: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(client, "MAX_ANSWER_BYTES", 1000)
    fhir.routes["/fhir/Condition"] = searchset([condition(f"c-{i}") for i in range(50)])
    record = run(fhir)
    assert "larger than 1000 bytes" in record.gaps["conditions"]


def test_unreachable_server_is_data_unavailable() -> None:
    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    base = f"http://127.0.0.1:{port}/fhir"
    with pytest.raises(DataUnavailable) as raised:
        gather(hook_request(base), TEMPLATES, settings_for(base))
    assert raised.value.gaps["patient"] == "could not connect to the FHIR server"


# --- retries --------------------------------------------------------------------------------------


def test_503_is_retried_within_the_deadline(fhir: Server) -> None:
    answers = iter(
        [fhir_json({}, 503, **{"Retry-After": "0"}), fhir_json({}, 503), fhir_json(searchset([condition("c-2")]))]
    )
    fhir.routes["/fhir/Condition"] = lambda r: next(answers)

    record = run(fhir)

    assert fhir.hits["/fhir/Condition"] == 3
    assert [r["id"] for r in record.resources["conditions"]] == ["c-2"]
    assert record.gaps == {}


def test_503_with_a_long_retry_after_is_not_waited_for(fhir: Server) -> None:
    fhir.routes["/fhir/Condition"] = lambda r: fhir_json({}, 503, **{"Retry-After": "120"})
    record = run(fhir)
    assert fhir.hits["/fhir/Condition"] == 1
    assert record.gaps["conditions"] == "the FHIR server answered HTTP 503"


def test_500_is_not_retried(fhir: Server) -> None:
    fhir.routes["/fhir/Condition"] = lambda r: Response("no", status=500)
    run(fhir)
    assert fhir.hits["/fhir/Condition"] == 1


# --- paging limits --------------------------------------------------------------------------------


def test_next_link_to_another_server_is_refused_and_first_page_kept(fhir: Server) -> None:
    fhir.routes["/fhir/Condition"] = searchset([condition("c-1")], fhir.httpserver.url_for("/elsewhere/Condition?p=2"))
    record = run(fhir)
    assert [r["id"] for r in record.resources["conditions"]] == ["c-1"]
    assert "leaves the FHIR server" in record.gaps["conditions"]
    assert record.gaps["conditions"].startswith("incomplete")
    assert "/elsewhere/Condition" not in fhir.hits


def test_next_link_to_plain_http_host_elsewhere_is_refused(fhir: Server) -> None:
    fhir.routes["/fhir/Condition"] = searchset([condition("c-1")], "http://198.51.100.7/fhir/Condition?p=2")
    record = run(fhir)
    assert "leaves the FHIR server" in record.gaps["conditions"]


def test_page_cap_stops_paging_and_says_so(fhir: Server) -> None:
    def endless(request: Request) -> Response:
        page = int(request.args.get("page", "1"))
        next_url = fhir.httpserver.url_for(f"/fhir/Condition?page={page + 1}")
        return fhir_json(searchset([condition(f"c-{page}")], next_url))

    fhir.routes["/fhir/Condition"] = endless
    record = run(fhir, fhir_page_cap=3)
    assert fhir.hits["/fhir/Condition"] == 3
    assert [r["id"] for r in record.resources["conditions"]] == ["c-1", "c-2", "c-3"]
    assert "more than 3 pages" in record.gaps["conditions"]


def test_failure_on_a_later_page_keeps_the_earlier_pages(fhir: Server) -> None:
    def second_page_fails(request: Request) -> Response:
        if request.args.get("page") == "2":
            return Response("boom", status=500)
        return fhir_json(searchset([condition("c-1")], fhir.httpserver.url_for("/fhir/Condition?page=2")))

    fhir.routes["/fhir/Condition"] = second_page_fails
    record = run(fhir)
    assert [r["id"] for r in record.resources["conditions"]] == ["c-1"]
    assert record.gaps["conditions"] == "incomplete: the FHIR server answered HTTP 500 (after 1 page(s))"
    assert record.sources["conditions"] == "fhir"


# --- refused servers: no connection is ever opened -----------------------------------------------


def test_server_not_in_the_allowlist_is_refused_without_a_request(fhir: Server, httpserver: HTTPServer) -> None:
    settings = settings_for("https://ehr.example/fhir")
    with pytest.raises(FhirServerRefused) as raised:
        gather(hook_request(fhir.base), TEMPLATES, settings)
    assert fhir.total() == 0 and httpserver.log == []
    assert "not allowed" in raised.value.diagnostics


def test_plain_http_is_refused_when_https_is_required(fhir: Server, httpserver: HTTPServer) -> None:
    settings = settings_for(fhir.base, fhir_require_https=True)
    with pytest.raises(FhirServerRefused) as raised:
        gather(hook_request(fhir.base), TEMPLATES, settings)
    assert fhir.total() == 0 and httpserver.log == []
    assert "https" in raised.value.diagnostics


def test_caller_allowlist_further_restricts_the_configured_one(fhir: Server, httpserver: HTTPServer) -> None:
    with pytest.raises(FhirServerRefused):
        gather(hook_request(fhir.base), TEMPLATES, settings_for(fhir.base), allowed_servers=["https://ehr.example"])
    assert fhir.total() == 0 and httpserver.log == []
    # The same server, allowed by both lists, is queried.
    record = gather(hook_request(fhir.base), TEMPLATES, settings_for("*"), allowed_servers=[fhir.base])
    assert record.gaps == {}


def test_refused_server_with_prefetched_patient_gives_gaps(fhir: Server, httpserver: HTTPServer) -> None:
    record = gather(hook_request(fhir.base, {"patient": patient()}), TEMPLATES, settings_for("https://ehr.example"))
    assert fhir.total() == 0 and httpserver.log == []
    assert set(record.gaps) == {"conditions", "procedures"}
    assert "not allowed" in record.gaps["conditions"]


def test_allowlist_prefix_is_matched_on_a_segment_boundary(fhir: Server, httpserver: HTTPServer) -> None:
    allowed = fhir.httpserver.url_for("/fh")  # "/fhir" must not pass as being under "/fh"
    with pytest.raises(FhirServerRefused):
        gather(hook_request(fhir.base), TEMPLATES, settings_for(allowed))
    assert httpserver.log == []
