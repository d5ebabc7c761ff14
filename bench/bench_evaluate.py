"""In-process decision time: facts + scope + decide for generated patients of 30, 300 and 3,000 resources.

Measures what the engine adds to a hook call with complete prefetch: ``in_scope_orders`` then
``decide`` (reading the FHIR resources into facts, then evaluating every criterion), on the already
parsed request. For scale, it also times ``json.loads`` of the same request body (the cost every
request pays anyway). Prints a markdown table, then one JSON line (read by ``bench/run.py``).

    python -m bench.bench_evaluate                 # 30, 300, 3000 resources
    python -m bench.bench_evaluate --sizes 300 --repeat 500
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import statistics
import sys
import time
from datetime import date
from typing import Any

from bench.patients import order_sign_request, prefetch_resources
from service.policy import decide, load_policy
from service.policy.scope import in_scope_orders

DATE_OF_SERVICE = date(2026, 3, 2)


def _percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1))))
    return ordered[k]


def measure(size: int, repeat: int, warmup: int) -> dict[str, Any]:
    policy = load_policy()
    request = order_sign_request(size, date_of_service=DATE_OF_SERVICE)
    body = json.dumps(request)
    record = prefetch_resources(request)
    orders = [e["resource"] for e in request["context"]["draftOrders"]["entry"]]
    decision_ms: list[float] = []
    parse_ms: list[float] = []
    outcome = ""
    for i in range(warmup + repeat):
        start = time.perf_counter()
        in_scope = in_scope_orders(policy, orders)
        decisions = decide(policy, record, in_scope, orders, DATE_OF_SERVICE)
        elapsed = (time.perf_counter() - start) * 1000
        start = time.perf_counter()
        json.loads(body)
        parsed = (time.perf_counter() - start) * 1000
        if i >= warmup:
            decision_ms.append(elapsed)
            parse_ms.append(parsed)
        outcome = decisions[0].outcome if decisions else "no decision"
    return {
        "resources": sum(len(v) for v in record.values()),
        "p50_ms": round(statistics.median(decision_ms), 3),
        "p90_ms": round(_percentile(decision_ms, 90), 3),
        "json_loads_p50_ms": round(statistics.median(parse_ms), 3),
        "repeat": repeat,
        "outcome": outcome,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=lambda t: [int(x) for x in t.split(",")], default=[30, 300, 3000])
    parser.add_argument("--repeat", type=int, default=200, help="timed runs per size")
    parser.add_argument("--warmup", type=int, default=20)
    args = parser.parse_args(argv)
    rows = []
    for size in args.sizes:
        repeat = args.repeat if size <= 300 else max(20, args.repeat // 5)
        rows.append(measure(size, repeat, args.warmup))
    command = shlex.join(["python", "-m", "bench.bench_evaluate", *(argv if argv is not None else sys.argv[1:])])
    print(
        f"In-process decision time (in_scope_orders + decide), {platform.python_implementation()} "
        f"{platform.python_version()}, {platform.machine()}"
    )
    print(f"command: {command}\n")
    print("| resources | p50 ms | p90 ms | json.loads p50 ms | runs | outcome |")
    print("|---:|---:|---:|---:|---:|---|")
    for r in rows:
        print(
            f"| {r['resources']} | {r['p50_ms']} | {r['p90_ms']} | {r['json_loads_p50_ms']} | {r['repeat']} "
            f"| {r['outcome']} |"
        )
    print(json.dumps({"benchmark": "bench_evaluate", "command": command, "rows": rows}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
