"""The decision log: durable records of hook calls, decisions and feedback (SQLite or PostgreSQL).

One ``DecisionLog`` (one Engine, one connection pool) per process; every method takes its own
connection and transaction, so the object is safe to share between threads. ``record_call`` commits
before it returns: the HTTP layer calls it before sending the response, so a response the EHR
received is always on record.

SQLite is the embedded default: WAL journal (readers never block the writer), synchronous=NORMAL
(a commit survives the process being killed; only an OS crash or power loss can lose the last
transactions), and every writing transaction starts with BEGIN IMMEDIATE so concurrent writers queue
on the busy timeout instead of failing with "database is locked" when a read lock cannot be upgraded.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, create_engine, delete, event, func, or_, select, text
from sqlalchemy import insert as sa_insert
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool

from service.decision import Decision
from service.records import extract
from service.records.models import Base, CardRecord, DecisionRecord, FeedbackRecord, InvocationRecord

SQLITE_BUSY_TIMEOUT_MS = 30_000
PG_CONNECT_TIMEOUT_S = 5
MIGRATIONS_LOCATION = "service.records:migrations"
# Any fixed number: PostgreSQL advisory lock that serialises migrations run by many workers at once.
PG_MIGRATION_LOCK_KEY = 7_334_101
ERROR_TEXT_LIMIT = 1024
READ_ONLY_OPTION = "islet_cds_read_only"


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class OverrideReason:
    system: str
    code: str
    display: str | None = None


@dataclass(frozen=True, slots=True)
class FeedbackItem:
    """One validated CDS Hooks feedback entry."""

    card_uuid: str
    outcome: str  # accepted | overridden
    outcome_timestamp: datetime  # timezone-aware
    accepted_suggestions: tuple[str, ...] = ()
    override_reason: OverrideReason | None = None
    user_comment: str | None = None


def normalise_database_url(database_url: str) -> URL:
    """Parse the URL; plain ``postgresql://`` (and ``postgres://``) use the psycopg 3 driver."""
    url = make_url(database_url)
    if url.drivername in ("postgresql", "postgres"):
        url = url.set(drivername="postgresql+psycopg")
    if url.get_backend_name() not in ("sqlite", "postgresql"):
        raise ValueError(f"Unsupported database URL scheme {url.drivername!r}: use sqlite:/// or postgresql://")
    return url


def _is_memory_sqlite(url: URL) -> bool:
    return url.database in (None, "", ":memory:") or (url.database or "").startswith("file::memory:")


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        # The driver must not open transactions itself: "begin" below emits BEGIN IMMEDIATE.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def on_begin(connection: Connection) -> None:
        # Readers take a deferred (snapshot) transaction: under WAL they never block the writer.
        read_only = connection.get_execution_options().get(READ_ONLY_OPTION, False)
        connection.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


def create_records_engine(database_url: str) -> Engine:
    """An Engine for the records database (SQLite file created with its directory, or PostgreSQL)."""
    url = normalise_database_url(database_url)
    if url.get_backend_name() == "sqlite":
        if _is_memory_sqlite(url):
            # One shared connection, or every checkout would see a new empty database.
            engine = create_engine(url, poolclass=StaticPool, connect_args={"check_same_thread": False})
        else:
            Path(url.database or "").expanduser().resolve().parent.mkdir(parents=True, exist_ok=True)
            engine = create_engine(url, connect_args={"check_same_thread": False}, pool_size=8, max_overflow=16)
        _configure_sqlite(engine)
        return engine
    # A bounded connect timeout, so /readyz answers "unavailable" instead of hanging on a lost server.
    return create_engine(url, pool_pre_ping=True, pool_size=8, max_overflow=16,
                         connect_args={"connect_timeout": PG_CONNECT_TIMEOUT_S})


def _alembic_config() -> Config:
    # No alembic.ini: the migrations are located as package data, so this works from an installed wheel.
    config = Config()
    config.set_main_option("script_location", MIGRATIONS_LOCATION)
    return config


@cache
def head_revision() -> str:
    head = ScriptDirectory.from_config(_alembic_config()).get_current_head()
    if head is None:  # pragma: no cover - the package always ships migrations
        raise RuntimeError("no Alembic migrations found")
    return head


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _as_dict(record: Base, record_type: str | None = None) -> dict[str, Any]:
    """Columns in table order (stable keys for JSON lines); datetimes as RFC 3339 UTC strings."""
    out: dict[str, Any] = {"record_type": record_type} if record_type else {}
    for column in record.__table__.columns:
        value = getattr(record, column.key)
        out[column.key] = _iso(value) if isinstance(value, datetime) else value
    return out


def _dedupe_last(rows: list[dict[str, Any]], key: str) -> list[dict[str, Any]]:
    # One row per call and key (the unique constraints): a malformed response naming an order or a
    # card uuid twice keeps its last occurrence.
    return list({row[key]: row for row in rows}.values())


def _sqlite_lock_path(url: URL) -> Path | None:
    """The lock file next to a SQLite database file (None for in-memory databases)."""
    if _is_memory_sqlite(url):
        return None
    database = Path(url.database or "").expanduser().resolve()
    return database.with_name(database.name + ".migrate.lock")


@contextmanager
def _exclusive_file_lock(path: Path | None) -> Iterator[None]:
    """Hold an exclusive flock on ``path`` (created if missing); no-op for None.

    flock locks belong to the open file, so this serialises threads of one process as well as
    separate processes; the kernel drops the lock if the holder dies.
    """
    if path is None:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+b") as lock_file:
        fcntl.flock(lock_file.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock_file.fileno(), fcntl.LOCK_UN)


@dataclass(frozen=True, slots=True)
class _CardSending:
    """One call that sent a card uuid."""

    invocation_id: int | None
    hook_instance: str
    created_at: datetime


def _choose_sending(sendings: Sequence[_CardSending], outcome_timestamp: datetime) -> _CardSending:
    """The call a feedback item answers, among the calls that sent its card (oldest first).

    The newest call that sent the card at or before outcomeTimestamp: the clinician acted on the
    card shown last. If every sending is later (the EHR's clock behind ours), the first sending.
    """
    earlier = [s for s in sendings if s.created_at <= outcome_timestamp]
    return earlier[-1] if earlier else sendings[0]


@dataclass(frozen=True)
class _WriteStatements:
    """The INSERT statements of the write path, for one dialect."""

    invocation: Any
    decision: Any
    card: Any
    feedback: Any

    @classmethod
    def for_dialect(cls, name: str) -> _WriteStatements:
        dialect_insert = postgresql.insert if name == "postgresql" else sqlite.insert
        tables = Base.metadata.tables
        invocation = tables[InvocationRecord.__tablename__]
        decision_table = tables[DecisionRecord.__tablename__]
        card_table = tables[CardRecord.__tablename__]
        feedback_table = tables[FeedbackRecord.__tablename__]

        return cls(
            invocation=sa_insert(invocation).returning(invocation.c.id),
            # Append-only: plain INSERTs, so nothing that was sent is ever overwritten (a conflict
            # would be a bug and must fail loudly, not be merged).
            decision=sa_insert(decision_table),
            card=sa_insert(card_table),
            feedback=dialect_insert(feedback_table)
            .on_conflict_do_nothing(index_elements=["card_uuid", "outcome", "outcome_timestamp"])
            .returning(feedback_table.c.id),
        )


class DecisionLog:
    """Durable records of every hook call, decision and feedback item."""

    def __init__(self, database_url: str, *, clock: Callable[[], datetime] = utc_now) -> None:
        self.engine = create_records_engine(database_url)
        self.backend = self.engine.dialect.name  # "sqlite" | "postgresql"
        # SQLite allows one writer at a time; threads of one worker that collide on BEGIN IMMEDIATE wait in
        # SQLite's sleeping busy handler (up to ~1 s tails under load). Queueing them on a lock first
        # keeps the wait short and fair; other processes still meet busy_timeout. PostgreSQL needs none.
        self._write_lock: AbstractContextManager[Any] = (
            threading.Lock() if self.backend == "sqlite" else contextlib.nullcontext()
        )
        self._statements = _WriteStatements.for_dialect(self.backend)
        self._read_engine = self.engine.execution_options(**{READ_ONLY_OPTION: True})
        self._read_sessions = sessionmaker(self._read_engine, expire_on_commit=False)
        self._clock = clock
        # A forked worker (gunicorn --preload) must not reuse the parent's pooled connections.
        engine_ref = weakref.ref(self.engine)

        def _forget_parent_pool() -> None:
            engine = engine_ref()
            if engine is not None:
                engine.dispose(close=False)

        os.register_at_fork(after_in_child=_forget_parent_pool)

    def __repr__(self) -> str:
        return f"DecisionLog({self.engine.url.render_as_string(hide_password=True)!r})"

    def dispose(self) -> None:
        self.engine.dispose()

    @contextmanager
    def _read_session(self) -> Iterator[Session]:
        with self._read_sessions() as session:
            yield session

    # -- schema -------------------------------------------------------------------------------

    def migrate(self) -> None:
        """Upgrade the schema to the newest migration; safe when several workers start at once."""
        config = _alembic_config()
        # SQLite: an exclusive file lock next to the database, taken before any connection is opened.
        # BEGIN IMMEDIATE alone is not enough on a fresh file: each new connection first switches
        # the file to WAL (which needs an exclusive lock), and those switches race the other
        # worker's migration transaction. PostgreSQL: an advisory lock inside the transaction.
        lock_path = _sqlite_lock_path(self.engine.url) if self.backend == "sqlite" else None
        with _exclusive_file_lock(lock_path), self.engine.begin() as connection:
            if self.backend == "postgresql":
                connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": PG_MIGRATION_LOCK_KEY})
            config.attributes["connection"] = connection
            command.upgrade(config, "head")

    def health(self) -> bool:
        """The database answers and its schema is at the newest migration (for /readyz)."""
        try:
            with self._read_engine.connect() as connection:
                version = connection.execute(text("SELECT version_num FROM alembic_version")).scalar()
        except SQLAlchemyError:
            return False
        return version == head_revision()

    # -- writing ------------------------------------------------------------------------------

    def record_call(
        self,
        *,
        service_id: str,
        hook: str | None,
        hook_instance: str | None,
        patient_id: str | None,
        issuer: str | None = None,
        tenant: str | None = None,
        decisions: Sequence[Decision] = (),
        response: Mapping[str, Any] | None = None,
        status_code: int = 200,
        timings: Mapping[str, float] | None = None,
        error: str | None = None,
    ) -> int:
        """Record one hook call and its decisions in one committed transaction; returns the invocation id.

        Call it before sending the response. ``response`` is the CDS Hooks response body (cards and
        systemActions) the service is about to send; ``timings`` are milliseconds per stage; ``error``
        is a short machine-readable description (issue code and field), never request content.
        Append-only: a retried call (same hookInstance) adds an invocation row, decision rows and card
        rows of its own; earlier rows are never changed.
        """
        if decisions and (hook_instance is None or hook is None or patient_id is None):
            raise ValueError("decisions need the call's hook, hook_instance and patient_id")
        now = self._clock()
        timing_map = {k: round(float(v), 3) for k, v in (timings or {}).items()}
        order_refs = [d.order.reference for d in decisions]
        uuids = extract.card_uuids(response)
        uuids_by_order = extract.card_uuids_by_order(response, order_refs)
        assertion_ids = extract.coverage_assertion_ids_by_order(response)

        invocation_row: dict[str, Any] = {
            "hook_instance": hook_instance,
            "hook": hook,
            "service_id": service_id,
            "issuer": issuer,
            "tenant": tenant,
            "patient_id": patient_id,
            "status_code": status_code,
            "outcome_summary": extract.outcome_summary(status_code, decisions),
            "order_count": len(decisions),
            "card_uuids": uuids,
            "timings": timing_map,
            "error": error[:ERROR_TEXT_LIMIT] if error else None,
            "created_at": now,
        }
        decision_rows: list[dict[str, Any]] = [
            {
                "coverage_assertion_id": next(iter(assertion_ids.get(d.order.reference, [])), None),
                "hook_instance": hook_instance,
                "hook": hook,
                "service_id": service_id,
                "issuer": issuer,
                "tenant": tenant,
                "patient_id": patient_id,
                "order_reference": d.order.reference,
                "order_codes": [list(c) for c in d.order.codes],
                "policy_id": d.policy_id,
                "policy_version": d.policy_version,
                "outcome": d.outcome,
                "pathway": d.pathway,
                "criteria": extract.criteria_rows(d),
                "card_uuids": uuids_by_order.get(d.order.reference, []),
                "timings": timing_map,
                "data_gaps": list(d.data_gaps),
                "created_at": now,
            }
            for d in decisions
        ]
        card_rows: list[dict[str, Any]] = [
            {
                "card_uuid": uuid,
                "hook_instance": hook_instance,
                "service_id": service_id,
                "order_references": refs,
                "created_at": now,
            }
            for uuid, refs in extract.card_orders(response, order_refs).items()
        ] if hook_instance is not None else []

        # Core statements built once (compiled once, cached); one transaction, committed on exit.
        with self._write_lock, self.engine.begin() as connection:
            invocation_id: int = connection.execute(self._statements.invocation, invocation_row).scalar_one()
            if decision_rows:
                for row in decision_rows:
                    row["invocation_id"] = invocation_id
                connection.execute(self._statements.decision, _dedupe_last(decision_rows, "order_reference"))
            if card_rows:
                for row in card_rows:
                    row["invocation_id"] = invocation_id
                connection.execute(self._statements.card, _dedupe_last(card_rows, "card_uuid"))
        return invocation_id

    def record_feedback(self, service_id: str, issuer: str, items: Sequence[FeedbackItem]) -> int:
        """Store feedback items; repeats are ignored. Returns how many were new."""
        if not items:
            return 0
        now = self._clock()
        stored = 0
        with self._write_lock, self.engine.begin() as connection:
            found = connection.execute(
                select(CardRecord.card_uuid, CardRecord.invocation_id, CardRecord.hook_instance,
                       CardRecord.created_at)
                .where(CardRecord.card_uuid.in_({i.card_uuid for i in items}), CardRecord.service_id == service_id)
                .order_by(CardRecord.created_at, CardRecord.id)
            )
            sendings: dict[str, list[_CardSending]] = {}
            for found_row in found:
                sendings.setdefault(found_row.card_uuid, []).append(
                    _CardSending(found_row.invocation_id, found_row.hook_instance, found_row.created_at)
                )
            for item in items:
                card_sendings = sendings.get(item.card_uuid)
                linked_to = _choose_sending(card_sendings, item.outcome_timestamp) if card_sendings else None
                reason = item.override_reason
                row = {
                    "card_uuid": item.card_uuid,
                    "outcome": item.outcome,
                    "accepted_suggestions": list(item.accepted_suggestions),
                    "override_reason_system": reason.system if reason else None,
                    "override_reason_code": reason.code if reason else None,
                    "override_reason_display": reason.display if reason else None,
                    "override_user_comment": item.user_comment,
                    "outcome_timestamp": item.outcome_timestamp,
                    "invocation_id": linked_to.invocation_id if linked_to else None,
                    "hook_instance": linked_to.hook_instance if linked_to else None,
                    "linked": linked_to is not None,
                    "service_id": service_id,
                    "issuer": issuer,
                    "received_at": now,
                }
                # RETURNING gives a row only when the item was new (rowcount is not reliable for this).
                stored += connection.execute(self._statements.feedback, row).first() is not None
        return stored

    # -- reading ------------------------------------------------------------------------------

    def get(self, key: str | int) -> list[dict[str, Any]]:
        """Every decision record matching a row id, coverage-assertion-id or hookInstance.

        Newest call first (a retried call's decisions come before the earlier ones; within one call,
        orders in request order). Each record has ``invocation`` (id, created_at, status_code,
        outcome_summary of the call that sent it; None if that call was purged) and ``feedback``
        (the feedback items linked to this call and naming one of its cards).
        """
        text_key = str(key)
        conditions = [DecisionRecord.coverage_assertion_id == text_key, DecisionRecord.hook_instance == text_key]
        if text_key.isdigit():
            conditions.append(DecisionRecord.id == int(text_key))
        with self._read_session() as session:
            query = (
                select(DecisionRecord, InvocationRecord)
                .outerjoin(InvocationRecord, DecisionRecord.invocation_id == InvocationRecord.id)
                .where(or_(*conditions))
                .order_by(DecisionRecord.created_at.desc(), DecisionRecord.invocation_id.desc(), DecisionRecord.id)
            )
            found: list[tuple[DecisionRecord, InvocationRecord | None]] = [
                (decision, invocation) for decision, invocation in session.execute(query)
            ]
            uuids = {u for d, _ in found for u in d.card_uuids}
            feedback = list(
                session.scalars(
                    select(FeedbackRecord).where(FeedbackRecord.card_uuid.in_(uuids)).order_by(FeedbackRecord.id)
                )
            ) if uuids else []
        out = []
        for decision, invocation in found:
            row = _as_dict(decision, "decision")
            row["invocation"] = {
                "id": invocation.id,
                "created_at": _iso(invocation.created_at),
                "status_code": invocation.status_code,
                "outcome_summary": invocation.outcome_summary,
            } if invocation is not None else None
            # A card uuid can be sent by several calls: only feedback linked to this call counts here.
            row["feedback"] = [
                _as_dict(f, "feedback") for f in feedback
                if f.card_uuid in decision.card_uuids and f.invocation_id == decision.invocation_id
                and f.invocation_id is not None
            ]
            out.append(row)
        return out

    def invocations(self, hook_instance: str) -> list[dict[str, Any]]:
        """Every recorded call with this hookInstance (retries included), oldest first."""
        with self._read_session() as session:
            rows = session.scalars(
                select(InvocationRecord)
                .where(InvocationRecord.hook_instance == hook_instance)
                .order_by(InvocationRecord.id)
            )
            return [_as_dict(r, "invocation") for r in rows]

    def export(self, since: datetime | None = None) -> Iterator[dict[str, Any]]:
        """Invocations, then decisions, then feedback recorded at or after ``since`` (naive = UTC;
        None = everything).

        Each item is a flat dict with ``record_type`` first and columns in table order, ready for
        ``json.dumps`` as one JSON line. Streams: rows are read in batches, not all at once.
        """
        if since is None:
            since = datetime.min.replace(tzinfo=UTC)
        elif since.tzinfo is None:
            since = since.replace(tzinfo=UTC)
        queries: list[tuple[str, Any]] = [
            ("invocation", select(InvocationRecord).where(InvocationRecord.created_at >= since)
             .order_by(InvocationRecord.created_at, InvocationRecord.id)),
            ("decision", select(DecisionRecord).where(DecisionRecord.created_at >= since)
             .order_by(DecisionRecord.created_at, DecisionRecord.id)),
            ("feedback", select(FeedbackRecord).where(FeedbackRecord.received_at >= since)
             .order_by(FeedbackRecord.received_at, FeedbackRecord.id)),
        ]
        for record_type, query in queries:
            with self._read_session() as session:
                for record in session.scalars(query.execution_options(yield_per=500)):
                    yield _as_dict(record, record_type)

    # -- retention ----------------------------------------------------------------------------

    def _cutoff(self, older_than_days: int) -> datetime:
        if older_than_days < 0:
            raise ValueError("older_than_days must be zero or more")
        return self._clock() - timedelta(days=older_than_days)

    def _retention_targets(self, cutoff: datetime) -> list[tuple[Any, Any]]:
        # Children first, so nothing dangles even without ON DELETE support.
        return [
            (FeedbackRecord, FeedbackRecord.received_at < cutoff),
            (DecisionRecord, DecisionRecord.created_at < cutoff),
            (CardRecord, CardRecord.created_at < cutoff),
            (InvocationRecord, InvocationRecord.created_at < cutoff),
        ]

    def count_older_than(self, older_than_days: int) -> int:
        """How many rows ``purge(older_than_days)`` would delete now."""
        cutoff = self._cutoff(older_than_days)
        with self._read_session() as session:
            return sum(
                session.scalar(select(func.count()).select_from(model).where(condition)) or 0
                for model, condition in self._retention_targets(cutoff)
            )

    def purge(self, older_than_days: int) -> int:
        """Delete every record older than the given number of days; returns the number of rows deleted."""
        cutoff = self._cutoff(older_than_days)
        deleted = 0
        with self._write_lock, self.engine.begin() as connection:
            for model, condition in self._retention_targets(cutoff):
                deleted += connection.execute(delete(model).where(condition)).rowcount
        return deleted


__all__ = [
    "DecisionLog",
    "FeedbackItem",
    "OverrideReason",
    "create_records_engine",
    "head_revision",
    "normalise_database_url",
    "utc_now",
]
