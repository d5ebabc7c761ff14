"""Alembic migrations: upgrade an empty database to head, and the models match the migrated schema."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Column, Integer, MetaData, String, Table, inspect

from service.records.models import Base
from service.records.store import DecisionLog, _alembic_config, head_revision
from tests.conftest import ROOT
from tests.records_support import fresh_postgres_database

TABLES = {"invocation", "decision", "card", "feedback", "alembic_version"}


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.sqlite'}"
    else:
        with fresh_postgres_database() as url:
            yield url


def _differences(log: DecisionLog, metadata: MetaData) -> list[object]:
    with log.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return list(compare_metadata(context, metadata))


def test_upgrade_empty_database_to_head_matches_the_models(empty_database: str) -> None:
    log = DecisionLog(empty_database)
    try:
        with log.engine.connect() as connection:
            assert inspect(connection).get_table_names() == []
        log.migrate()
        with log.engine.connect() as connection:
            assert set(inspect(connection).get_table_names()) == TABLES
        assert log.health()
        assert _differences(log, Base.metadata) == []
        log.migrate()  # already at head: nothing to do, no error
        assert log.health()
    finally:
        log.dispose()


def test_comparison_would_notice_a_model_the_migration_lacks(empty_database: str) -> None:
    log = DecisionLog(empty_database)
    try:
        log.migrate()
        extended = MetaData()
        for table in Base.metadata.tables.values():
            table.to_metadata(extended)
        Table("decision_extra", extended, Column("id", Integer, primary_key=True), Column("note", String(10)))
        assert [d[0] for d in _differences(log, extended)] == ["add_table"]  # type: ignore[index]
    finally:
        log.dispose()


def test_downgrade_to_base_and_up_again(tmp_path: Path) -> None:
    log = DecisionLog(f"sqlite:///{tmp_path / 'r.sqlite'}")
    config = _alembic_config()
    with log.engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
        command.downgrade(config, "base")
        assert set(inspect(connection).get_table_names()) == {"alembic_version"}
    log.migrate()
    assert log.health()
    log.dispose()


def test_workers_migrating_at_once_do_not_collide(empty_database: str) -> None:
    errors: list[BaseException] = []
    logs = [DecisionLog(empty_database) for _ in range(4)]
    start = threading.Barrier(len(logs))

    def migrate(log: DecisionLog) -> None:
        start.wait()
        try:
            log.migrate()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=migrate, args=(log,)) for log in logs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert all(log.health() for log in logs)
    for log in logs:
        log.dispose()


def test_migrations_need_no_alembic_ini_or_working_directory(tmp_path: Path) -> None:
    database = tmp_path / "elsewhere.sqlite"
    code = (
        "import sys; from service.records.store import DecisionLog, head_revision; "
        "log = DecisionLog(sys.argv[1]); log.migrate(); print(head_revision(), log.health())"
    )
    result = subprocess.run([sys.executable, "-c", code, f"sqlite:///{database}"], cwd=tmp_path,
                            env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [head_revision(), "True"]
