"""Smoke tests of the benchmark harness: valid generated requests, parsers and the report writer.

No timing is asserted here; the figures live in BENCHMARKS.md (``python -m bench.run``).
"""

from __future__ import annotations

import json
import shutil
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from fhir.resources.R4B import get_fhir_model_class
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from bench import patients, run
from service.envelope import parse_hook_request

DATE_OF_SERVICE = date(2026, 6, 15)


@pytest.mark.parametrize("size", [patients.minimum_resource_count(), 30, 300])
def test_generated_request_has_exactly_n_resources_under_the_ten_keys(size: int) -> None:
    request = patients.order_sign_request(size, date_of_service=DATE_OF_SERVICE)
    assert set(request["prefetch"]) == set(patients.PREFETCH_KEYS)
    assert patients.prefetch_resource_count(request) == size
    by_key = patients.prefetch_resources(request)
    assert len(by_key["patient"]) == 1 and len(by_key["coverage"]) == 1


def test_generated_resources_are_valid_fhir_r4_and_belong_to_the_patient() -> None:
    request = patients.order_sign_request(120, date_of_service=DATE_OF_SERVICE, patient_id="p-42")
    seen: set[tuple[str, str]] = set()
    for key, resources in patients.prefetch_resources(request).items():
        for resource in resources:
            get_fhir_model_class(resource["resourceType"]).model_validate(resource)
            ref = (resource["resourceType"], resource["id"])
            assert ref not in seen, f"duplicate {ref}"
            seen.add(ref)
            if key != "patient":
                owner = resource.get("subject") or resource.get("patient") or resource.get("beneficiary")
                assert owner == {"reference": "Patient/p-42"}, resource["resourceType"]
        if key != "patient":
            get_fhir_model_class("Bundle").model_validate(request["prefetch"][key])


def test_generated_request_passes_the_service_envelope_with_the_draft_order() -> None:
    request = patients.order_sign_request(30, date_of_service=DATE_OF_SERVICE)
    hook_request = parse_hook_request(patients.SERVICE_ID, "order-sign", request)
    assert hook_request.patient_id == "bench-patient-1"
    (order,) = hook_request.draft_orders
    assert order["resourceType"] == "ServiceRequest"
    assert (order["status"], order["intent"]) == ("draft", "order")
    assert order["code"]["coding"][0]["code"] == "0584T"
    assert order["occurrenceDateTime"] == DATE_OF_SERVICE.isoformat()
    for field in ("subject", "authoredOn", "requester"):
        assert order[field]


def test_generator_is_deterministic_per_seed_and_refuses_too_small_patients() -> None:
    first = patients.order_sign_request(60, date_of_service=DATE_OF_SERVICE, seed=1)
    assert first == patients.order_sign_request(60, date_of_service=DATE_OF_SERVICE, seed=1)
    assert first != patients.order_sign_request(60, date_of_service=DATE_OF_SERVICE, seed=2)
    with pytest.raises(ValueError):
        patients.order_sign_request(patients.minimum_resource_count() - 1, date_of_service=DATE_OF_SERVICE)


def test_generated_request_grows_linearly_with_resources() -> None:
    small = len(json.dumps(patients.order_sign_request(100, date_of_service=DATE_OF_SERVICE)))
    large = len(json.dumps(patients.order_sign_request(1000, date_of_service=DATE_OF_SERVICE)))
    assert 8 < large / small < 12


def _cell(endpoint: str, resources: int, p50: float, requests: int = 100, errors: int = 0) -> dict[str, Any]:
    return run.LoadResult(
        endpoint=endpoint, resources=resources, concurrency=1, requests=requests, duration_s=1.0,
        p50_ms=p50, p90_ms=p50 * 2, p99_ms=p50 * 3, mean_ms=p50, max_ms=p50 * 4,
        errors={"status": errors},
    ).as_dict()


def _synthetic_report() -> dict[str, Any]:
    report: dict[str, Any] = {
        "generated_at": "2026-01-01 00:00 UTC",
        "command": "python -m bench.run --duration 1",
        "machine": {"nproc": 2, "cpu_model": "Test CPU", "memory_mb": 1024, "python": "CPython 3.11"},
        "settings": {"concurrency": [1], "workers": 2, "threads": 4},
        "requests": {"300": {"resources": 300, "bytes": 300 * 1024}, "3000": {"resources": 3000, "bytes": 3 << 20}},
        "load": [_cell("floor", 300, 2.0), _cell("service", 300, 5.0), _cell("floor", 3000, 20.0),
                 _cell("service", 3000, 80.0)],
        "memory": {"workers": [{"pid": 1, "vm_hwm_mb": 150.0, "vm_rss_mb": 140.0},
                               {"pid": 2, "vm_hwm_mb": 250.0, "vm_rss_mb": 240.0}], "peak_worker_mb": 250.0},
        "evaluate": {"available": True, "command": "python -m bench.bench_evaluate",
                     "per_size": {"300": {"p50_ms": 2.5, "p90_ms": 3.0}, "3000": {"p50_ms": 40.0}}},
        "fallback": {"available": False, "reason": "bench/bench_fallback.py does not exist yet"},
    }
    report["ratios"] = run.floor_ratios(report)
    report["targets"] = run.evaluate_targets(report)
    return report


def test_targets_are_judged_from_the_figures() -> None:
    report = _synthetic_report()
    assert report["ratios"] == [
        {"resources": 300, "concurrency": 1, "p50_ratio": 2.5, "p90_ratio": 2.5, "throughput_ratio": 1.0},
        {"resources": 3000, "concurrency": 1, "p50_ratio": 4.0, "p90_ratio": 4.0, "throughput_ratio": 1.0},
    ]
    status = {t["target"]: (t["measured"], t["status"]) for t in report["targets"]}
    assert status["p50 service/floor at 300 resources, concurrency 1"] == (2.5, "pass")
    assert status["in-process decision p50 at 300 resources"] == (2.5, "pass")
    assert status["growth 300 -> 3,000 resources (service p50, concurrency 1)"] == (16.0, "fail")
    assert status["growth 300 -> 3,000 resources (in-process decision p50)"] == (16.0, "fail")
    assert status["FHIR fallback: 6 missing keys / 1 (server answers in 100 ms)"] == (None, "not measured")
    assert status["peak resident memory per worker (VmHWM after the load)"] == (250.0, "fail")


def test_cells_with_errors_are_not_used_for_targets() -> None:
    report = _synthetic_report()
    report["load"][1] = _cell("service", 300, 5.0, errors=3)
    assert all(r["resources"] != 300 for r in run.floor_ratios(report))
    report["ratios"] = run.floor_ratios(report)
    status = {t["target"]: t["status"] for t in run.evaluate_targets(report)}
    assert status["p50 service/floor at 300 resources, concurrency 1"] == "not measured"


def test_report_writer_writes_json_markdown_and_splices_benchmarks_md(tmp_path: Path) -> None:
    report = _synthetic_report()
    benchmarks = tmp_path / "BENCHMARKS.md"
    benchmarks.write_text(f"# Benchmarks\n\nintro\n\n{run.RESULTS_START}\nold figures\n{run.RESULTS_END}\n\nfooter\n")
    json_path, md_path = run.write_report(report, tmp_path / "results", benchmarks)

    assert json.loads(json_path.read_text()) == report
    markdown = md_path.read_text()
    assert "| 300 | 300 | 1 | service | 5.00 | 10.00 | 15.00 | 100.0 | 0 | — |" in markdown
    assert "| p50 service/floor at 300 resources, concurrency 1 | <= 3 | 2.50 | **pass** |" in markdown
    assert "| peak resident memory per worker (VmHWM after the load) | <= 200 MB | 250.00 | **FAIL** |" in markdown
    assert "python -m bench.run --duration 1" in markdown
    spliced = benchmarks.read_text()
    assert "old figures" not in spliced
    assert spliced.startswith("# Benchmarks\n\nintro\n\n") and spliced.endswith("\n\nfooter\n")
    assert run.render_markdown(report) in spliced


def test_wrk_summary_is_converted_from_microseconds() -> None:
    summary = {"requests": 50, "duration_us": 2_000_000, "bytes": 10,
               "errors": {"connect": 0, "read": 0, "write": 0, "status": 1, "timeout": 0},
               "latency_us": {"min": 900, "mean": 1500.5, "max": 9000, "p50": 1200, "p90": 2500, "p99": 8000}}
    cell = run.load_result_from_wrk("floor", 30, 8, summary)
    assert (cell.p50_ms, cell.p90_ms, cell.p99_ms, cell.max_ms) == (1.2, 2.5, 8.0, 9.0)
    assert cell.throughput_rps == 25.0 and cell.error_count == 1


def test_companion_outputs_are_read() -> None:
    # The shapes bench_evaluate.py (markdown, then one JSON line) and bench_fallback.py (indented JSON) print.
    evaluate_out = "| resources | p50 ms |\n|---:|---:|\n" + json.dumps(
        {"benchmark": "bench_evaluate", "rows": [{"resources": 30, "p50_ms": 0.4, "p90_ms": 0.5},
                                                 {"resources": 300, "p50_ms": 2.8, "p90_ms": 3.0}]})
    document = run.last_json_object(evaluate_out)
    assert document is not None
    assert run.evaluate_figures(document, [30, 300, 3000]) == {30: {"p50_ms": 0.4, "p90_ms": 0.5},
                                                                 300: {"p50_ms": 2.8, "p90_ms": 3.0}}
    fallback_out = "python -m bench.bench_fallback\n" + json.dumps(
        {"one_missing": {"missing_keys": 1, "median_ms": 100.0, "p90_ms": 101.0},
         "six_missing": {"missing_keys": 6, "median_ms": 120.0, "p90_ms": 130.0}}, indent=2)
    document = run.last_json_object(fallback_out)
    assert document is not None
    figures = run.fallback_figures(document)
    assert figures["missing_1_p50_ms"] == 100.0 and figures["missing_6_p50_ms"] == 120.0
    assert figures["missing_6_p90_ms"] == 130.0
    assert figures["ratio_6_to_1"] == pytest.approx(1.2)
    assert run.last_json_object("no json here") is None


def _echo_hook_instances(httpserver: HTTPServer) -> list[str]:
    seen: list[str] = []

    def handler(request: Request) -> Response:
        seen.append(json.loads(request.get_data())["hookInstance"])
        return Response('{"cards": []}', content_type="application/json")

    httpserver.expect_request("/bench/floor", method="POST").respond_with_handler(handler)
    return seen


def _write_body(tmp_path: Path) -> tuple[Path, str]:
    request = patients.order_sign_request(30, date_of_service=DATE_OF_SERVICE)
    body_file = tmp_path / "body.json"
    body_file.write_text(json.dumps(request))
    return body_file, request["hookInstance"]


def test_python_load_generator_sends_a_fresh_hook_instance_per_request(httpserver: HTTPServer,
                                                                      tmp_path: Path) -> None:
    seen = _echo_hook_instances(httpserver)
    body_file, hook_instance = _write_body(tmp_path)
    summary = run.run_python_load(httpserver.port, "/bench/floor", body_file.read_bytes(), hook_instance,
                                  concurrency=2, duration_s=0.3)
    assert summary["requests"] == len(seen) > 0
    assert sum(summary["errors"].values()) == 0
    assert len(set(seen)) == len(seen) and hook_instance not in seen
    assert summary["latency_us"]["p50"] <= summary["latency_us"]["p99"] <= summary["latency_us"]["max"]


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed (python -m bench.run installs it)")
def test_wrk_script_reports_json_and_sends_a_fresh_hook_instance(httpserver: HTTPServer, tmp_path: Path) -> None:
    seen = _echo_hook_instances(httpserver)
    body_file, hook_instance = _write_body(tmp_path)
    wrk = shutil.which("wrk")
    assert wrk is not None
    summary = run.run_wrk(wrk, httpserver.url_for("/bench/floor"), body_file, hook_instance, 2, 1)
    assert summary["requests"] > 0 and summary["errors"]["status"] == 0
    assert len(seen) >= summary["requests"]
    assert len(set(seen)) == len(seen) and hook_instance not in seen


def test_profile_summary_counts_only_samples_inside_requests() -> None:
    collapsed = "\n".join([
        "_worker (thread.py:1);Flask.wsgi_app (flask/app.py:10);loads (json/__init__.py:3) 6",
        "_worker (thread.py:1);Flask.wsgi_app (flask/app.py:10);invoke (hooks.py:5);decide (policy.py:7) 3",
        "_worker (thread.py:1);Flask.wsgi_app (flask/app.py:12);invoke (hooks.py:9) 1",
        "_worker (thread.py:1);select (selectors.py:4) 90",  # idle loop: not request time
        "garbage line",
    ])
    summary = run.profile_summary(collapsed, top=3)
    assert summary["request_samples"] == 10
    assert summary["inclusive"] == [{"function": "Flask.wsgi_app (flask/app.py)", "percent": 100.0},
                                    {"function": "loads (json/__init__.py)", "percent": 60.0},
                                    {"function": "invoke (hooks.py)", "percent": 40.0}]
    assert summary["self"][:2] == [{"function": "loads (json/__init__.py)", "percent": 60.0},
                                   {"function": "decide (policy.py)", "percent": 30.0}]
    assert run.profile_summary("")["request_samples"] == 0
