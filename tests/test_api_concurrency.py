"""8 threads x 200 hook calls through the app leave exactly 1,600 decision records (SQLite and PostgreSQL)."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from flask import Flask
from sqlalchemy import func, select

from service.records.models import DecisionRecord, InvocationRecord
from tests.conftest import islet_order, order_sign_request
from tests.records_support import fresh_postgres_database
from tests.test_api_hooks import full_prefetch

THREADS = 8
CALLS_PER_THREAD = 200


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'records.sqlite'}"
        return
    with fresh_postgres_database() as url:  # skips, with the reason, when PostgreSQL is unreachable
        yield url


def test_every_concurrent_call_is_recorded_once(make_app: Callable[..., Flask], database_url: str) -> None:
    app = make_app({"database_url": database_url})
    prefetch = full_prefetch()
    statuses: list[int] = []
    lock = threading.Lock()
    start = threading.Barrier(THREADS)

    def worker() -> None:
        client = app.test_client()
        start.wait()
        for _ in range(CALLS_PER_THREAD):
            body = order_sign_request(islet_order(), prefetch=prefetch)
            response = client.post("/cds-services/islet-transplant-order-sign", data=json.dumps(body),
                                   content_type="application/json")
            with lock:
                statuses.append(response.status_code)

    threads = [threading.Thread(target=worker) for _ in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert statuses == [200] * (THREADS * CALLS_PER_THREAD)
    engine = app.extensions["islet_cds"]["records"].engine
    with engine.connect() as connection:
        decisions = connection.execute(select(func.count()).select_from(DecisionRecord)).scalar_one()
        invocations = connection.execute(select(func.count()).select_from(InvocationRecord)).scalar_one()
        distinct_calls = connection.execute(
            select(func.count(func.distinct(DecisionRecord.hook_instance)))
        ).scalar_one()
    assert decisions == invocations == distinct_calls == THREADS * CALLS_PER_THREAD
    app.extensions["islet_cds"]["records"].dispose()
