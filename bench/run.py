"""The performance benchmark, in one command: the service under gunicorn against its own floor.

    /work/venv/bin/python -m bench.run            # from the repository root; 3–4 minutes

What it does (see bench/README.md):

1. generates order-sign requests with complete prefetch for patients of 30, 300 and 3,000 resources
   (bench/patients.py);
2. starts ``islet-cds serve`` (gunicorn, 2 workers) on a free loopback port with a throw-away SQLite
   decision log and ISLET_CDS_BENCH_ENDPOINTS=true, which adds ``POST /bench/floor`` — the same app
   parsing the same body and answering ``{"cards": []}``: the cost of HTTP + Flask + JSON parsing;
3. drives both endpoints with wrk (installed with apt-get when missing and possible, else a Python
   load generator, said so in the report) at concurrency 1 and 8: p50/p90/p99 latency, throughput,
   and the service/floor ratio;
4. reads each gunicorn worker's peak resident memory (VmHWM) after the load;
5. runs bench/bench_evaluate.py (in-process decision time) and bench/bench_fallback.py (FHIR
   fallback against a loopback server answering in 100 ms) when they exist;
6. writes bench/results/latest.json and latest.md and the figures section of BENCHMARKS.md, with the
   machine, the command, and each target as pass or fail.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.patients import SERVICE_ID, order_sign_request, prefetch_resource_count

ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = ROOT / "bench"
RESULTS_DIR = BENCH_DIR / "results"
WRK_SCRIPT = BENCH_DIR / "wrk" / "post_json.lua"
BENCHMARKS_MD = ROOT / "BENCHMARKS.md"
RESULTS_START = "<!-- bench:results:start -->"
RESULTS_END = "<!-- bench:results:end -->"

HOOK_PATH = f"/cds-services/{SERVICE_ID}"
FLOOR_PATH = "/bench/floor"

# The targets of issue 8 (DESIGN.md §7).
FLOOR_RATIO_LIMIT = 3.0  # service p50 / floor p50 at 300 resources
DECISION_P50_LIMIT_MS = 5.0  # in-process evaluate p50 at 300 resources
GROWTH_LIMIT = 12.0  # p50 at 3,000 resources / p50 at 300
FALLBACK_RATIO_LIMIT = 1.5  # total time with 6 missing keys / with 1
WORKER_MEMORY_LIMIT_MB = 200.0  # peak resident memory per worker


class BenchError(RuntimeError):
    """The benchmark could not run (the service did not start, no load tool...)."""


# -- results ---------------------------------------------------------------------------------


@dataclass
class LoadResult:
    """One cell: an endpoint driven at one concurrency with the body of one patient size."""

    endpoint: str  # "service" or "floor"
    resources: int
    concurrency: int
    requests: int
    duration_s: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    max_ms: float
    errors: dict[str, int] = field(default_factory=dict)
    load_average_1m: float | None = None  # the machine's load when the cell started: other work skews it

    @property
    def throughput_rps(self) -> float:
        return self.requests / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["throughput_rps"] = round(self.throughput_rps, 1)
        return out


def load_result_from_wrk(endpoint: str, resources: int, concurrency: int, summary: dict[str, Any]) -> LoadResult:
    """A LoadResult from the JSON line that bench/wrk/post_json.lua prints (microseconds)."""
    latency = summary["latency_us"]
    return LoadResult(
        endpoint=endpoint,
        resources=resources,
        concurrency=concurrency,
        requests=int(summary["requests"]),
        duration_s=summary["duration_us"] / 1e6,
        p50_ms=latency["p50"] / 1000,
        p90_ms=latency["p90"] / 1000,
        p99_ms=latency["p99"] / 1000,
        mean_ms=latency["mean"] / 1000,
        max_ms=latency["max"] / 1000,
        errors={k: int(v) for k, v in summary["errors"].items()},
    )


def percentile(sorted_values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile of already sorted values (what wrk reports too)."""
    if not sorted_values:
        return 0.0
    rank = max(1, min(len(sorted_values), round(pct / 100 * len(sorted_values) + 0.5)))
    return sorted_values[rank - 1]


# -- machine and environment -----------------------------------------------------------------


def _read(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def machine_info() -> dict[str, Any]:
    cpuinfo = _read("/proc/cpuinfo").splitlines()
    cpu_model = next(
        (line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")),
        platform.processor() or "unknown",
    )
    mem_kb = next(
        (int(line.split()[1]) for line in _read("/proc/meminfo").splitlines() if line.startswith("MemTotal:")), 0
    )
    return {
        "nproc": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "cpu_model": cpu_model,
        "memory_mb": round(mem_kb / 1024),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "kernel": platform.release(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def _tool_version(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    lines = (done.stdout + done.stderr).strip().splitlines()
    return lines[0].strip() if lines else "unknown"


def _git_revision() -> str:
    rev = _tool_version(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"])
    dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain"], capture_output=True, text=True,
                           check=False).stdout.strip()
    return f"{rev}{' + uncommitted changes' if dirty else ''}"


def ensure_wrk(install: bool) -> str | None:
    """Path of wrk; installs Debian's package when allowed and possible. None: use the Python client."""
    found = shutil.which("wrk")
    if found or not install:
        return found
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        print("bench: wrk is not installed and cannot be installed here (needs root and apt-get); "
              "falling back to the built-in Python load generator (less precise under load).", file=sys.stderr)
        return None
    print("bench: wrk is missing; installing it: apt-get update && apt-get install -y wrk", file=sys.stderr)
    for argv in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "wrk"]):
        if subprocess.run(argv, stdout=subprocess.DEVNULL, check=False).returncode != 0:
            print(f"bench: {' '.join(argv)} failed; falling back to the Python load generator.", file=sys.stderr)
            return None
    return shutil.which("wrk")


# -- the service under gunicorn ---------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def serve_command(port: int, workers: int, threads: int) -> list[str]:
    """``islet-cds serve`` (the production server), or ``python -m service serve`` if not installed."""
    script = Path(sys.executable).parent / "islet-cds"
    base = [str(script)] if script.exists() else [sys.executable, "-m", "service"]
    return base + ["serve", "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers),
                   "--threads", str(threads)]


@dataclass
class RunningService:
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def worker_pids(self) -> list[int]:
        """Gunicorn's workers: the master's children (the master is the process we started)."""
        children = _read(f"/proc/{self.process.pid}/task/{self.process.pid}/children").split()
        return sorted(int(pid) for pid in children)

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(_read(str(self.log_path)).splitlines()[-lines:])


def _http(port: int, method: str, path: str, body: bytes | None = None, timeout: float = 30.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


@contextmanager
def running_service(workdir: Path, workers: int, threads: int, start_timeout: float = 60.0) -> Iterator[RunningService]:
    port = free_port()
    env = dict(os.environ)
    env.update({
        "ISLET_CDS_AUTH": "disabled",
        "ISLET_CDS_BENCH_ENDPOINTS": "true",
        "ISLET_CDS_DATABASE_URL": f"sqlite:///{workdir / 'bench.sqlite'}",
        "ISLET_CDS_LOG_LEVEL": env.get("ISLET_CDS_LOG_LEVEL", "INFO"),
    })
    log_path = workdir / "service.log"
    command = serve_command(port, workers, threads)
    with log_path.open("wb") as log_file:
        # Own session: the whole gunicorn process group is stopped at the end, nothing else.
        process = subprocess.Popen(command, cwd=workdir, env=env, stdout=log_file, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    service = RunningService(process, port, log_path)
    try:
        deadline = time.monotonic() + start_timeout
        while True:
            if process.poll() is not None:
                raise BenchError(f"the service exited with code {process.returncode} while starting "
                                 f"({shlex.join(command)}):\n{service.log_tail()}")
            try:
                if _http(port, "GET", "/healthz", timeout=2.0)[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise BenchError(f"GET /healthz did not answer 200 within {start_timeout:.0f} s:\n{service.log_tail()}")
            time.sleep(0.2)
        yield service
    finally:
        _stop(process)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=5)


def worker_memory(pids: Sequence[int]) -> list[dict[str, Any]]:
    """Peak (VmHWM) and current (VmRSS) resident memory of each worker, in MB."""
    out = []
    for pid in pids:
        fields: dict[str, float] = {}
        for line in _read(f"/proc/{pid}/status").splitlines():
            name, _, value = line.partition(":")
            if name in ("VmHWM", "VmRSS"):
                fields[name] = int(value.split()[0]) / 1024
        if fields:
            out.append({"pid": pid, "vm_hwm_mb": round(fields.get("VmHWM", 0.0), 1),
                        "vm_rss_mb": round(fields.get("VmRSS", 0.0), 1)})
    return out


# -- load generation -------------------------------------------------------------------------


def run_wrk(
    wrk: str, url: str, body_file: Path, hook_instance: str, concurrency: int, duration_s: int
) -> dict[str, Any]:
    threads = max(1, min(concurrency, 2))  # wrk threads share this machine's cores with the server
    argv = [wrk, f"-t{threads}", f"-c{concurrency}", f"-d{duration_s}s", "--timeout", "10s",
            "-s", str(WRK_SCRIPT), url]
    env = dict(os.environ, BENCH_BODY_FILE=str(body_file), BENCH_HOOK_INSTANCE=hook_instance)
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=duration_s + 60, check=False)
    for line in done.stdout.splitlines():
        if line.startswith("BENCH_RESULT "):
            summary: dict[str, Any] = json.loads(line.removeprefix("BENCH_RESULT "))
            return summary
    raise BenchError(f"wrk printed no result (exit {done.returncode}): {done.stdout[-2000:]} {done.stderr[-2000:]}")


def run_python_load(port: int, path: str, body: bytes, hook_instance: str, concurrency: int,
                    duration_s: float) -> dict[str, Any]:
    """Closed-loop load like wrk's, from Python threads; same summary shape as post_json.lua prints."""
    latencies: list[float] = []
    errors = {"connect": 0, "read": 0, "write": 0, "status": 0, "timeout": 0}
    received = [0]
    lock = threading.Lock()
    stop_at = time.perf_counter() + duration_s
    head, _, tail = body.partition(hook_instance.encode())

    def client(tag: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        counter = 0
        while time.perf_counter() < stop_at:
            counter += 1
            payload = head + f"{tag:08x}-0000-4000-8000-{counter:012x}".encode() + tail if tail else body
            started = time.perf_counter()
            try:
                conn.request("POST", path, body=payload, headers={"Content-Type": "application/json"})
                response = conn.getresponse()
                data = response.read()
            except TimeoutError:
                with lock:
                    errors["timeout"] += 1
                conn.close()
                continue
            except OSError:
                with lock:
                    errors["read"] += 1
                conn.close()
                continue
            elapsed = time.perf_counter() - started
            with lock:
                latencies.append(elapsed)
                received[0] += len(data)
                if response.status >= 400:
                    errors["status"] += 1
        conn.close()

    started = time.perf_counter()
    workers = [threading.Thread(target=client, args=(i + 1,)) for i in range(concurrency)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    duration = time.perf_counter() - started
    ordered = sorted(latencies)
    us = [x * 1e6 for x in ordered]
    return {
        "requests": len(ordered),
        "duration_us": int(duration * 1e6),
        "bytes": received[0],
        "errors": errors,
        "latency_us": {
            "min": int(us[0]) if us else 0,
            "mean": sum(us) / len(us) if us else 0.0,
            "max": int(us[-1]) if us else 0,
            "p50": int(percentile(us, 50)),
            "p90": int(percentile(us, 90)),
            "p99": int(percentile(us, 99)),
        },
    }


@dataclass
class LoadDriver:
    port: int
    wrk: str | None
    bodies: dict[int, Path]
    hook_instances: dict[int, str]

    @property
    def tool(self) -> str:
        if self.wrk is None:
            return "python (http.client threads; wrk unavailable)"
        return _tool_version([self.wrk, "--version"]).split(" Copyright")[0]

    def drive(self, endpoint: str, resources: int, concurrency: int, duration_s: int) -> LoadResult:
        path = HOOK_PATH if endpoint == "service" else FLOOR_PATH
        body_file = self.bodies[resources]
        if self.wrk:
            summary = run_wrk(self.wrk, f"http://127.0.0.1:{self.port}{path}", body_file,
                              self.hook_instances[resources], concurrency, duration_s)
        else:
            summary = run_python_load(self.port, path, body_file.read_bytes(), self.hook_instances[resources],
                                      concurrency, duration_s)
        return load_result_from_wrk(endpoint, resources, concurrency, summary)


# -- the companion benchmarks (bench_evaluate.py, bench_fallback.py) ----------------------------


def last_json_object(text: str) -> dict[str, Any] | None:
    """The last JSON object in a program's output: a whole-output document or the last JSON line."""
    stripped = text.strip()
    candidates = [stripped] if stripped.startswith("{") else []
    candidates += [line.strip() for line in reversed(stripped.splitlines()) if line.strip().startswith("{")]
    start = stripped.rfind("\n{")
    if start >= 0:
        candidates.append(stripped[start + 1:])
    for candidate in candidates:
        try:
            parsed = json.loads(candidate)
        except ValueError:
            continue
        if isinstance(parsed, dict):
            return parsed
    return None


def run_companion(module: str, args: Sequence[str], timeout_s: float) -> dict[str, Any]:
    """Run ``python -m bench.<module>`` and keep the JSON it prints, or say why there is none."""
    if not (BENCH_DIR / f"{module}.py").exists():
        return {"available": False, "reason": f"bench/{module}.py does not exist yet"}
    argv = [sys.executable, "-m", f"bench.{module}", *args]
    command = shlex.join(["python", "-m", f"bench.{module}", *args])
    try:
        done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        return {"available": False, "command": command, "reason": f"did not finish within {timeout_s:.0f} s"}
    document = last_json_object(done.stdout)
    if done.returncode != 0 or document is None:
        tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
        return {"available": False, "command": command,
                "reason": f"exit {done.returncode}, no JSON result: {' | '.join(tail)}"}
    return {"available": True, "command": command, "result": document}


def _walk(node: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    yield path, node
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _walk(value, (*path, str(key)))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _walk(value, (*path, str(index)))


_P50_KEYS = ("p50_ms", "median_ms", "p50", "median")
_P90_KEYS = ("p90_ms", "p90")
_SIZE_KEYS = ("resources", "resource_count", "size", "n")


def _ms(mapping: dict[str, Any], keys: Sequence[str]) -> float | None:
    for key in keys:
        value = mapping.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            # Keys without a unit are read as milliseconds, as both companions print them.
            return float(value)
    return None


def evaluate_figures(document: dict[str, Any], sizes: Sequence[int]) -> dict[int, dict[str, float]]:
    """Per patient size, p50 (and p90) in ms, from bench_evaluate's JSON.

    Accepts the shapes a small JSON result takes: a mapping keyed by size (``{"300": {"p50_ms": …}}``)
    or a list of rows carrying their size (``[{"resources": 300, "median_ms": …}]``), at any depth.
    """
    found: dict[int, dict[str, float]] = {}
    for path, node in _walk(document):
        if not isinstance(node, dict):
            continue
        p50 = _ms(node, _P50_KEYS)
        if p50 is None:
            continue
        size: int | None = None
        for key in _SIZE_KEYS:
            if isinstance(node.get(key), int):
                size = int(node[key])
                break
        if size is None and path and path[-1].isdigit() and int(path[-1]) in sizes:
            size = int(path[-1])
        if size is not None and size in sizes and size not in found:
            figures = {"p50_ms": p50}
            p90 = _ms(node, _P90_KEYS)
            if p90 is not None:
                figures["p90_ms"] = p90
            found[size] = figures
    return found


def fallback_figures(document: dict[str, Any]) -> dict[str, float]:
    """Median total latency (ms) for 1 and 6 missing keys, and their ratio, from bench_fallback's JSON."""
    out: dict[str, float] = {}
    for path, node in _walk(document):
        if isinstance(node, dict):
            p50 = _ms(node, _P50_KEYS)
            missing = node.get("missing_keys", node.get("missing"))
            if isinstance(missing, list):
                missing = len(missing)
            if not (isinstance(missing, int) and missing in (1, 6)):
                missing = int(path[-1]) if path and path[-1] in ("1", "6") else None
            if p50 is not None and missing is not None:
                out.setdefault(f"missing_{missing}_p50_ms", p50)
                p90 = _ms(node, _P90_KEYS)
                if p90 is not None:
                    out.setdefault(f"missing_{missing}_p90_ms", p90)
    if "missing_1_p50_ms" in out and "missing_6_p50_ms" in out and out["missing_1_p50_ms"] > 0:
        out["ratio_6_to_1"] = out["missing_6_p50_ms"] / out["missing_1_p50_ms"]
    else:
        ratio = document.get("ratio_6_to_1", document.get("ratio"))
        if isinstance(ratio, int | float):
            out["ratio_6_to_1"] = float(ratio)
    return out


# -- profiling (py-spy) ---------------------------------------------------------------------------


REQUEST_FRAME = "Flask.wsgi_app"  # frames below it are one request's work


def _function_of(frame: str) -> str:
    """``name (file.py:123)`` -> ``name (file.py)``: lines of one function are added up."""
    name, _, where = frame.rpartition(" (")
    if not name:
        return frame
    return f"{name} ({where.rsplit(':', 1)[0].rstrip(')')})"


def profile_summary(collapsed: str, top: int = 25) -> dict[str, Any]:
    """Share of request time per function from py-spy's raw (collapsed) stacks.

    Only samples inside a request (under Flask.wsgi_app) count, so idle threads and gunicorn's
    own loop do not dilute the shares. Inclusive: the function is on the stack; self: it is the leaf.
    """
    inclusive: dict[str, int] = {}
    own: dict[str, int] = {}
    total = 0
    for line in collapsed.splitlines():
        stack, _, count_text = line.rstrip().rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        frames = [_function_of(f) for f in stack.split(";")]
        if not any(f.startswith(REQUEST_FRAME + " ") for f in frames):
            continue
        count = int(count_text)
        total += count
        start = next(i for i, f in enumerate(frames) if f.startswith(REQUEST_FRAME + " "))
        for function in set(frames[start:]):
            inclusive[function] = inclusive.get(function, 0) + count
        own[frames[-1]] = own.get(frames[-1], 0) + count

    def shares(counts: dict[str, int]) -> list[dict[str, Any]]:
        ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:top]
        return [{"function": f, "percent": round(100 * n / total, 1)} for f, n in ranked]

    return {"request_samples": total, "inclusive": shares(inclusive) if total else [],
            "self": shares(own) if total else []}


def find_py_spy() -> str | None:
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


def profile_service(driver: LoadDriver, worker_pids: Sequence[int], resources: int, duration_s: int,
                    workdir: Path) -> dict[str, Any]:
    """Sample every worker with py-spy while wrk drives the hook at concurrency 1."""
    py_spy = find_py_spy()
    if py_spy is None:
        return {"available": False, "reason": "py-spy is not installed (pip install py-spy)"}
    load = threading.Thread(target=driver.drive, args=("service", resources, 1, duration_s + 2))
    load.start()
    time.sleep(1)
    outputs = []
    for pid in worker_pids:
        out = workdir / f"py-spy-{pid}.txt"
        argv = [py_spy, "record", "--pid", str(pid), "--duration", str(duration_s), "--rate", "250",
                "--format", "raw", "--nonblocking", "-o", str(out)]
        outputs.append((out, subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)))
    errors = []
    for _out, process in outputs:
        _, stderr = process.communicate(timeout=duration_s + 30)
        if process.returncode != 0:
            errors.append(stderr.decode(errors="replace").strip()[-300:])
    load.join()
    collapsed = "\n".join(_read(str(out)) for out, _ in outputs)
    summary = profile_summary(collapsed)
    if not summary["request_samples"]:
        return {"available": False, "reason": f"py-spy recorded no request samples: {' | '.join(errors)}"}
    return {"available": True, "resources": resources, "concurrency": 1, "duration_s": duration_s,
            "tool": _tool_version([py_spy, "--version"]), **summary}


# -- targets and reports -----------------------------------------------------------------------


def _target(name: str, limit: str, measured: float | None, ok: bool | None, detail: str) -> dict[str, Any]:
    status = "not measured" if ok is None else ("pass" if ok else "fail")
    return {"target": name, "limit": limit, "measured": None if measured is None else round(measured, 2),
            "status": status, "detail": detail}


def _cell(report: dict[str, Any], endpoint: str, resources: int, concurrency: int) -> dict[str, Any] | None:
    for cell in report.get("load", []):
        same = (cell["endpoint"], cell["resources"], cell["concurrency"]) == (endpoint, resources, concurrency)
        if same and sum(cell.get("errors", {}).values()) == 0 and cell["requests"] > 0:
            return dict(cell)
    return None


def floor_ratios(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Service / floor at each size and concurrency: p50, p90 and throughput."""
    rows = []
    for cell in report.get("load", []):
        if cell["endpoint"] != "service":
            continue
        service = _cell(report, "service", cell["resources"], cell["concurrency"])
        floor = _cell(report, "floor", cell["resources"], cell["concurrency"])
        if service is None or floor is None or floor["p50_ms"] <= 0:
            continue
        rows.append({
            "resources": cell["resources"],
            "concurrency": cell["concurrency"],
            "p50_ratio": round(service["p50_ms"] / floor["p50_ms"], 2),
            "p90_ratio": round(service["p90_ms"] / floor["p90_ms"], 2) if floor["p90_ms"] > 0 else None,
            "throughput_ratio": round(service["throughput_rps"] / floor["throughput_rps"], 2)
            if floor["throughput_rps"] > 0 else None,
        })
    return rows


def evaluate_targets(report: dict[str, Any]) -> list[dict[str, Any]]:
    targets = []
    ratios = {(r["resources"], r["concurrency"]): r for r in report.get("ratios", [])}
    for concurrency in report.get("settings", {}).get("concurrency", [1, 8]):
        row = ratios.get((300, concurrency))
        targets.append(_target(
            f"p50 service/floor at 300 resources, concurrency {concurrency}", f"<= {FLOOR_RATIO_LIMIT:g}",
            row["p50_ratio"] if row else None, row["p50_ratio"] <= FLOOR_RATIO_LIMIT if row else None,
            "same app, same body, same run" if row else "no error-free service and floor cells at 300 resources"))

    evaluate = report.get("evaluate", {}).get("per_size", {})
    at_300 = evaluate.get("300") or evaluate.get(300)
    targets.append(_target(
        "in-process decision p50 at 300 resources", f"<= {DECISION_P50_LIMIT_MS:g} ms",
        at_300["p50_ms"] if at_300 else None, at_300["p50_ms"] <= DECISION_P50_LIMIT_MS if at_300 else None,
        "bench/bench_evaluate.py" if at_300 else report.get("evaluate", {}).get("reason", "not measured")))

    service_300 = _cell(report, "service", 300, 1)
    service_3000 = _cell(report, "service", 3000, 1)
    growth = service_3000["p50_ms"] / service_300["p50_ms"] if service_300 and service_3000 else None
    targets.append(_target(
        "growth 300 -> 3,000 resources (service p50, concurrency 1)", f"<= {GROWTH_LIMIT:g}x", growth,
        growth <= GROWTH_LIMIT if growth is not None else None,
        "10x the resources" if growth is not None else "no error-free service cells at 300 and 3,000"))
    at_3000 = evaluate.get("3000") or evaluate.get(3000)
    in_process_growth = at_3000["p50_ms"] / at_300["p50_ms"] if at_300 and at_3000 and at_300["p50_ms"] > 0 else None
    targets.append(_target(
        "growth 300 -> 3,000 resources (in-process decision p50)", f"<= {GROWTH_LIMIT:g}x", in_process_growth,
        in_process_growth <= GROWTH_LIMIT if in_process_growth is not None else None,
        "bench/bench_evaluate.py" if in_process_growth is not None else "not measured"))

    fallback = report.get("fallback", {}).get("figures", {})
    ratio = fallback.get("ratio_6_to_1")
    targets.append(_target(
        "FHIR fallback: 6 missing keys / 1 (server answers in 100 ms)", f"<= {FALLBACK_RATIO_LIMIT:g}x", ratio,
        ratio <= FALLBACK_RATIO_LIMIT if ratio is not None else None,
        "bench/bench_fallback.py" if ratio is not None else report.get("fallback", {}).get("reason", "not measured")))

    peak = report.get("memory", {}).get("peak_worker_mb")
    targets.append(_target(
        "peak resident memory per worker (VmHWM after the load)", f"<= {WORKER_MEMORY_LIMIT_MB:g} MB", peak,
        peak <= WORKER_MEMORY_LIMIT_MB if peak is not None else None,
        f"{len(report.get('memory', {}).get('workers', []))} workers" if peak is not None else "not measured"))
    return targets


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def render_markdown(report: dict[str, Any]) -> str:
    machine = report.get("machine", {})
    settings = report.get("settings", {})
    lines = [
        f"### Results of {report.get('generated_at', '?')}",
        "",
        f"Command: `{report.get('command', '?')}` (revision {report.get('revision', '?')})",
        "",
        f"Machine: {machine.get('nproc', '?')} CPUs ({machine.get('cpu_model', '?')}), "
        f"{_fmt(machine.get('memory_mb'))} MB memory, {machine.get('python', '?')}, "
        f"Linux {machine.get('kernel', '?')}; load average at start {machine.get('load_average_at_start', '?')}.",
        f"Server: `islet-cds serve` (gunicorn gthread), {settings.get('workers', '?')} workers × "
        f"{settings.get('threads', '?')} threads, SQLite decision log, authentication off. "
        f"Load: {settings.get('load_tool', '?')}, {settings.get('duration_s', '?')} s per cell "
        f"after a {settings.get('warmup_s', '?')} s warm-up, on the same machine.",
        "",
        "#### Targets",
        "",
        "| target | limit | measured | result |",
        "|---|---|---|---|",
    ]
    for t in report.get("targets", []):
        result = {"pass": "**pass**", "fail": "**FAIL**"}.get(t["status"], t["status"])
        detail = f" ({t['detail']})" if t["status"] == "not measured" else ""
        lines.append(f"| {t['target']} | {t['limit']} | {_fmt(t['measured'], 2)} | {result}{detail} |")

    lines += ["", "#### order-sign with complete prefetch, and the floor (same app, same body)", "",
              "| resources | body KB | concurrency | endpoint | p50 ms | p90 ms | p99 ms | req/s | errors | load 1m |",
              "|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|"]
    bodies = report.get("requests", {})
    for cell in report.get("load", []):
        body_kb = bodies.get(str(cell["resources"]), {}).get("bytes", 0) / 1024
        lines.append(
            f"| {cell['resources']:,} | {body_kb:,.0f} | {cell['concurrency']} | {cell['endpoint']} | "
            f"{cell['p50_ms']:.2f} | {cell['p90_ms']:.2f} | {cell['p99_ms']:.2f} | "
            f"{cell.get('throughput_rps', 0):,.1f} | {sum(cell.get('errors', {}).values())} | "
            f"{_fmt(cell.get('load_average_1m'), 2)} |")
    if report.get("ratios"):
        lines += ["", "| resources | concurrency | p50 service/floor | p90 service/floor | throughput service/floor |",
                  "|---:|---:|---:|---:|---:|"]
        for r in report["ratios"]:
            lines.append(f"| {r['resources']:,} | {r['concurrency']} | {_fmt(r['p50_ratio'], 2)} | "
                         f"{_fmt(r['p90_ratio'], 2)} | {_fmt(r['throughput_ratio'], 2)} |")
    preflight = report.get("preflight", {})
    if preflight:
        lines += ["", "Pre-flight answers (one call per size before the load): " + "; ".join(
            f"{size} resources: HTTP {p.get('status')}, {p.get('cards', '?')} cards, "
            f"{p.get('system_actions', '?')} system actions" for size, p in preflight.items()) + "."]

    evaluate = report.get("evaluate", {})
    lines += ["", "#### In-process decision time (`evaluate`)", ""]
    if evaluate.get("per_size"):
        lines += ["| resources | p50 ms | p90 ms |", "|---:|---:|---:|"]
        for size, figures in sorted(evaluate["per_size"].items(), key=lambda kv: int(kv[0])):
            lines.append(f"| {int(size):,} | {_fmt(figures.get('p50_ms'), 3)} | {_fmt(figures.get('p90_ms'), 3)} |")
        lines += ["", f"From `{evaluate.get('command')}`."]
    else:
        lines.append(f"Not measured: {evaluate.get('reason', 'unknown')}.")

    fallback = report.get("fallback", {})
    lines += ["", "#### FHIR fallback (loopback FHIR server answering each query in 100 ms)", ""]
    figures = fallback.get("figures") or {}
    if figures:
        lines += [f"- 1 missing key: p50 {_fmt(figures.get('missing_1_p50_ms'))} ms, "
                  f"p90 {_fmt(figures.get('missing_1_p90_ms'))} ms",
                  f"- 6 missing keys: p50 {_fmt(figures.get('missing_6_p50_ms'))} ms, "
                  f"p90 {_fmt(figures.get('missing_6_p90_ms'))} ms",
                  f"- ratio 6/1: {_fmt(figures.get('ratio_6_to_1'), 2)}",
                  "", f"From `{fallback.get('command')}`."]
    else:
        lines.append(f"Not measured: {fallback.get('reason', 'unknown')}.")

    memory = report.get("memory", {})
    lines += ["", "#### Memory per worker after the load", ""]
    if memory.get("workers"):
        lines += ["| worker | peak resident (VmHWM) MB | resident now (VmRSS) MB |", "|---|---:|---:|"]
        for i, w in enumerate(memory["workers"], start=1):
            lines.append(f"| {i} | {w['vm_hwm_mb']:.1f} | {w['vm_rss_mb']:.1f} |")
    else:
        lines.append("Not measured.")
    profile = report.get("profile")
    if profile:
        lines += ["", f"#### Profile of the hook at {profile.get('resources', '?')} resources, concurrency 1", ""]
        if profile.get("available"):
            lines += [f"{profile['tool']}, {profile['duration_s']} s on every worker; "
                      f"{profile['request_samples']:,} samples inside requests. Share of request time:", "",
                      "| function (inclusive) | % | function (self) | % |", "|---|---:|---|---:|"]
            inclusive, own = profile["inclusive"], profile["self"]
            def cells(rows: list[dict[str, Any]], i: int) -> str:
                return f"`{rows[i]['function']}` | {rows[i]['percent']}" if i < len(rows) else " | "

            for i in range(max(len(inclusive), len(own))):
                lines.append(f"| {cells(inclusive, i)} | {cells(own, i)} |")
        else:
            lines.append(f"Not profiled: {profile.get('reason')}.")
    for note in report.get("notes", []):
        lines += ["", f"Note: {note}"]
    return "\n".join(lines) + "\n"


def write_report(report: dict[str, Any], out_dir: Path, benchmarks_md: Path | None = None) -> tuple[Path, Path]:
    """Write latest.json and latest.md; splice the Markdown into BENCHMARKS.md between its markers."""
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / "latest.json"
    md_path = out_dir / "latest.md"
    json_path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    markdown = render_markdown(report)
    md_path.write_text("# islet-cds benchmark report\n\n" + markdown, encoding="utf-8")
    if benchmarks_md is not None and benchmarks_md.exists():
        text = benchmarks_md.read_text(encoding="utf-8")
        if RESULTS_START in text and RESULTS_END in text:
            head, rest = text.split(RESULTS_START, 1)
            _, tail = rest.split(RESULTS_END, 1)
            benchmarks_md.write_text(f"{head}{RESULTS_START}\n{markdown}{RESULTS_END}{tail}", encoding="utf-8")
    return json_path, md_path


# -- the run -----------------------------------------------------------------------------------


def _preflight(port: int, body: bytes) -> dict[str, Any]:
    status, data = _http(port, "POST", HOOK_PATH, body, timeout=60.0)
    result: dict[str, Any] = {"status": status}
    try:
        answer = json.loads(data)
    except ValueError:
        return result
    if status == 200 and isinstance(answer, dict):
        result["cards"] = len(answer.get("cards", []))
        result["system_actions"] = len(answer.get("systemActions", []))
    elif isinstance(answer, dict):
        result["diagnostics"] = "; ".join(str(i.get("diagnostics", "")) for i in answer.get("issue", []))[:300]
    return result


def run(args: argparse.Namespace) -> dict[str, Any]:
    sizes: list[int] = args.sizes
    concurrencies: list[int] = args.concurrency
    wrk = ensure_wrk(install=not args.no_install)
    report: dict[str, Any] = {
        "generated_at": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": shlex.join(["python", "-m", "bench.run", *args.argv]),
        "revision": _git_revision(),
        "machine": machine_info(),
        "settings": {"sizes": sizes, "concurrency": concurrencies, "duration_s": args.duration,
                     "warmup_s": args.warmup, "workers": args.workers, "threads": args.threads},
        "requests": {},
        "preflight": {},
        "load": [],
        "notes": [],
    }
    date_of_service = date.today() + timedelta(days=14)
    with tempfile.TemporaryDirectory(prefix="islet-bench-") as tmp:
        workdir = Path(tmp)
        bodies: dict[int, Path] = {}
        hook_instances: dict[int, str] = {}
        for size in sizes:
            request = order_sign_request(size, date_of_service=date_of_service, seed=args.seed)
            path = workdir / f"order-sign-{size}.json"
            path.write_text(json.dumps(request), encoding="utf-8")
            bodies[size] = path
            hook_instances[size] = request["hookInstance"]
            report["requests"][str(size)] = {"resources": prefetch_resource_count(request),
                                             "bytes": path.stat().st_size}
        with running_service(workdir, args.workers, args.threads) as service:
            driver = LoadDriver(service.port, wrk, bodies, hook_instances)
            report["settings"]["load_tool"] = driver.tool
            report["settings"]["server"] = _tool_version([sys.executable, "-m", "gunicorn", "--version"])
            hook_ok = True
            for size in sizes:
                report["preflight"][str(size)] = _preflight(service.port, bodies[size].read_bytes())
                hook_ok = hook_ok and report["preflight"][str(size)]["status"] == 200
            if not hook_ok:
                report["notes"].append("The hook did not answer 200 before the load (see the pre-flight answers); "
                                       "its cells measure the error path, not a decision.")
            for size in sizes:
                for concurrency in concurrencies:
                    for endpoint in ("floor", "service"):
                        if args.warmup > 0:
                            driver.drive(endpoint, size, concurrency, args.warmup)
                        load_before = round(os.getloadavg()[0], 2)
                        cell = driver.drive(endpoint, size, concurrency, args.duration)
                        cell.load_average_1m = load_before
                        report["load"].append(cell.as_dict())
                        print(f"bench: {endpoint:7} {size:5} resources c={concurrency}: p50 {cell.p50_ms:8.2f} ms "
                              f"p90 {cell.p90_ms:8.2f} ms p99 {cell.p99_ms:8.2f} ms {cell.throughput_rps:8.1f} req/s "
                              f"errors {cell.error_count}", file=sys.stderr)
            workers = worker_memory(service.worker_pids())
            report["memory"] = {"workers": workers,
                                "peak_worker_mb": max((w["vm_hwm_mb"] for w in workers), default=None)}
            if args.profile:
                report["profile"] = profile_service(driver, service.worker_pids(), args.profile,
                                                    args.profile_duration, workdir)
    report["machine"]["load_average_at_end_of_load"] = [round(x, 2) for x in os.getloadavg()]
    report["ratios"] = floor_ratios(report)

    # The in-process benchmarks run after the server stopped, so they have the CPUs to themselves.
    evaluate = run_companion("bench_evaluate", args.evaluate_args, timeout_s=600)
    if evaluate.get("available"):
        evaluate["per_size"] = {str(k): v for k, v in evaluate_figures(evaluate["result"], sizes).items()}
        if not evaluate["per_size"]:
            evaluate["reason"] = "bench_evaluate printed JSON without per-size p50 figures"
    report["evaluate"] = evaluate
    fallback = run_companion("bench_fallback", args.fallback_args, timeout_s=600)
    if fallback.get("available"):
        fallback["figures"] = fallback_figures(fallback["result"])
        if not fallback["figures"]:
            fallback["reason"] = "bench_fallback printed JSON without the 1- and 6-key figures"
    report["fallback"] = fallback
    report["targets"] = evaluate_targets(report)
    return report


def _int_list(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=_int_list, default=[30, 300, 3000], help="patient sizes (resources)")
    parser.add_argument("--concurrency", type=_int_list, default=[1, 8], help="open connections per cell")
    parser.add_argument("--duration", type=int, default=10, help="seconds of load per cell (whole seconds: wrk)")
    parser.add_argument("--warmup", type=int, default=2, help="seconds of load before each cell, not counted")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers")
    parser.add_argument("--threads", type=int, default=4, help="threads per worker (islet-cds serve's default)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the generated patients")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="directory of latest.json and latest.md")
    parser.add_argument("--no-benchmarks-md", action="store_true", help="do not update BENCHMARKS.md")
    parser.add_argument("--no-install", action="store_true", help="never apt-get install wrk")
    parser.add_argument("--profile", type=int, default=0, metavar="RESOURCES",
                        help="after the load, sample the workers with py-spy while the hook runs at this size")
    parser.add_argument("--profile-duration", type=int, default=10, help="seconds of py-spy sampling")
    parser.add_argument("--evaluate-args", type=shlex.split, default=[], help="arguments for bench_evaluate")
    parser.add_argument("--fallback-args", type=shlex.split, default=[], help="arguments for bench_fallback")
    return parser


def main(argv: list[str] | None = None) -> int:
    raw = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(raw)
    args.argv = raw
    try:
        report = run(args)
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    json_path, md_path = write_report(report, args.out, None if args.no_benchmarks_md else BENCHMARKS_MD)
    print(render_markdown(report))
    print(f"bench: wrote {json_path.relative_to(ROOT) if json_path.is_relative_to(ROOT) else json_path} and "
          f"{md_path.name}" + ("" if args.no_benchmarks_md else "; updated BENCHMARKS.md"), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
