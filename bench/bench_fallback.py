"""FHIR fallback latency: does querying 6 missing prefetch keys cost about as much as querying 1?

A loopback FHIR server (http.server, threaded, HTTP/1.1 keep-alive) answers every query after a fixed
delay (100 ms by default). ``gather`` is timed with 1 key missing from prefetch and with 6 missing;
because missing keys are queried in parallel, the ratio of the medians should stay below 1.5.

    python -m bench.bench_fallback --repetitions 40
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from service.config import Settings
from service.envelope import FhirAuthorization, HookRequest
from service.fhirdata import gather

PATIENT_ID = "bench-patient"
TEMPLATES: dict[str, str] = {
    "patient": "Patient/{{context.patientId}}",
    "coverage": "Coverage?patient={{context.patientId}}&status=active",
    "conditions": "Condition?patient={{context.patientId}}",
    "observations": "Observation?patient={{context.patientId}}",
    "procedures": "Procedure?patient={{context.patientId}}",
    "medicationRequests": "MedicationRequest?patient={{context.patientId}}",
    "medicationStatements": "MedicationStatement?patient={{context.patientId}}",
    "encounters": "Encounter?patient={{context.patientId}}",
    "devices": "Device?patient={{context.patientId}}",
    "questionnaireResponses": "QuestionnaireResponse?patient={{context.patientId}}",
}
MISSING_SIX = ("conditions", "observations", "procedures", "medicationRequests", "encounters", "devices")


def _resource(resource_type: str, rid: str) -> dict[str, Any]:
    if resource_type == "Patient":
        return {"resourceType": "Patient", "id": PATIENT_ID, "birthDate": "1980-01-01"}
    return {"resourceType": resource_type, "id": rid, "subject": {"reference": f"Patient/{PATIENT_ID}"}}


def _searchset(resource_type: str, count: int = 3) -> dict[str, Any]:
    entries = [{"resource": _resource(resource_type, f"{resource_type.lower()}-{i}")} for i in range(count)]
    return {"resourceType": "Bundle", "type": "searchset", "total": count, "entry": entries}


def start_server(delay_seconds: float) -> tuple[ThreadingHTTPServer, str]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as a real FHIR server behind TLS would offer
        # Headers and body go out in two writes: with Nagle on, a delayed ACK adds ~40 ms per answer.
        disable_nagle_algorithm = True

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            time.sleep(delay_seconds)
            path = self.path.split("?", 1)[0].removeprefix("/fhir/")
            parts = path.split("/")
            body = _resource("Patient", PATIENT_ID) if len(parts) == 2 else _searchset(parts[0])
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/fhir+json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/fhir"


def _request(base: str, missing: tuple[str, ...]) -> HookRequest:
    prefetch: dict[str, Any] = {}
    for key, template in TEMPLATES.items():
        if key in missing:
            continue
        resource_type = template.split("/")[0].split("?")[0]
        prefetch[key] = _resource("Patient", PATIENT_ID) if key == "patient" else _searchset(resource_type)
    auth = FhirAuthorization(
        access_token="bench-token", token_type="Bearer", expires_in=30, scope="patient/*.read", subject="bench"
    )
    return HookRequest(
        service_id="bench",
        hook="order-sign",
        hook_instance="bench",
        fhir_server=base,
        fhir_authorization=auth,
        context={"patientId": PATIENT_ID},
        prefetch=prefetch,
        extension={},
        patient_id=PATIENT_ID,
        draft_orders=[],
        all_orders=[],
        configuration={},
    )


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


def measure(base: str, settings: Settings, missing: tuple[str, ...], repetitions: int) -> dict[str, Any]:
    request = _request(base, missing)
    for _ in range(3):  # warm the connection pool and the worker threads
        gather(request, TEMPLATES, settings)
    samples: list[float] = []
    for _ in range(repetitions):
        started = time.perf_counter()
        record = gather(request, TEMPLATES, settings)
        samples.append((time.perf_counter() - started) * 1000)
        if record.gaps:
            raise SystemExit(f"unexpected gaps: {sorted(record.gaps)}")
    return {
        "missing_keys": len(missing),
        "repetitions": repetitions,
        "median_ms": round(statistics.median(samples), 2),
        "p90_ms": round(_percentile(samples, 0.9), 2),
        "min_ms": round(min(samples), 2),
        "max_ms": round(max(samples), 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--repetitions", type=int, default=40)
    parser.add_argument("--delay-ms", type=float, default=100.0, help="server delay per query")
    args = parser.parse_args(argv)

    server, base = start_server(args.delay_ms / 1000)
    try:
        settings = Settings(fhir_require_https=False, allowed_fhir_servers=(base,), fhir_deadline_seconds=3.0)
        one = measure(base, settings, ("conditions",), args.repetitions)
        six = measure(base, settings, MISSING_SIX, args.repetitions)
    finally:
        server.shutdown()
    ratio = six["median_ms"] / one["median_ms"]
    result = {
        "command": " ".join([sys.executable, "-m", "bench.bench_fallback", *(argv or sys.argv[1:])]),
        "server_delay_ms": args.delay_ms,
        "one_missing": one,
        "six_missing": six,
        "ratio_median_6_to_1": round(ratio, 3),
        "ratio_p90_6_to_1": round(six["p90_ms"] / one["p90_ms"], 3),
        "target_ratio": 1.5,
        "meets_target": ratio < 1.5,
    }
    print(result["command"])
    print(json.dumps(result, indent=2))
    return 0 if ratio < 1.5 else 1


if __name__ == "__main__":
    raise SystemExit(main())
