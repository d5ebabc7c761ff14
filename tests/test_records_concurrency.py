"""Many threads writing through one DecisionLog: nothing lost, nothing doubled (SQLite and PostgreSQL)."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from service.records.models import CardRecord, DecisionRecord, InvocationRecord
from service.records.store import DecisionLog
from tests.records_support import fresh_postgres_database, make_decision, make_response

THREADS = 8
CALLS_PER_THREAD = 200


@pytest.fixture(params=["sqlite", "postgresql"])
def log(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[DecisionLog]:
    if request.param == "sqlite":
        decision_log = DecisionLog(f"sqlite:///{tmp_path / 'records.sqlite'}")
        decision_log.migrate()
        yield decision_log
        decision_log.dispose()
        return
    with fresh_postgres_database() as url:
        decision_log = DecisionLog(url)
        decision_log.migrate()
        yield decision_log
        decision_log.dispose()


def _count(log: DecisionLog, model: type) -> int:
    with log.engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(model)).scalar_one())


def _run_threads(work: list[list[str]], log: DecisionLog) -> list[BaseException]:
    errors: list[BaseException] = []
    start = threading.Barrier(len(work))

    def worker(hook_instances: list[str]) -> None:
        start.wait()  # all threads write at the same time
        try:
            for n, hook_instance in enumerate(hook_instances):
                order_id = f"order-{n % 3}"
                body, _ = make_response([order_id])
                log.record_call(hook_instance=hook_instance, hook="order-sign", service_id="islet-order-sign",
                                patient_id="pat-1", issuer="iss", decisions=[make_decision(order_id)],
                                response=body, timings={"total": 1.0})
        except BaseException as exc:  # surfaced to the test below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(hooks,)) for hooks in work]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


def test_eight_threads_times_200_calls_leave_1600_decisions(log: DecisionLog) -> None:
    work = [[str(uuid.uuid4()) for _ in range(CALLS_PER_THREAD)] for _ in range(THREADS)]
    errors = _run_threads(work, log)
    assert errors == []
    assert _count(log, DecisionRecord) == THREADS * CALLS_PER_THREAD
    assert _count(log, InvocationRecord) == THREADS * CALLS_PER_THREAD
    assert _count(log, CardRecord) == 2 * THREADS * CALLS_PER_THREAD
    # Every call is findable by its hookInstance.
    sample = [work[t][n] for t in range(THREADS) for n in (0, CALLS_PER_THREAD - 1)]
    assert all(len(log.get(h)) == 1 for h in sample)


def test_concurrent_retries_each_keep_their_own_rows(log: DecisionLog) -> None:
    # Every thread retries the same 25 calls at once. Append-only: N retries of a call are N
    # invocation rows and N decision rows per order (nothing replaced, nothing lost).
    shared = [str(uuid.uuid4()) for _ in range(25)]
    errors = _run_threads([list(shared) for _ in range(THREADS)], log)
    assert errors == []
    assert _count(log, InvocationRecord) == THREADS * len(shared)
    assert _count(log, DecisionRecord) == THREADS * len(shared)
    assert _count(log, CardRecord) == 2 * THREADS * len(shared)
    for hook_instance in (shared[0], shared[-1]):
        rows = log.get(hook_instance)
        assert len(rows) == THREADS
        # One decision per call that was made, each tied to its own invocation.
        assert sorted(r["invocation_id"] for r in rows) == sorted(c["id"] for c in log.invocations(hook_instance))
