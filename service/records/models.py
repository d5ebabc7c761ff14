"""The durable records: every hook call, every decision per order, every card, every feedback item.

Portable between SQLite and PostgreSQL (no dialect-only column types). What is stored is what an
audit or a dispute needs (CRD found-37) and nothing more: the patient's FHIR logical id, order codes,
per-criterion results with evidence references, codes and dates; never names, birth dates, free-text
notes from the record, or FHIR access tokens.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Dialect,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# Constraint names fixed by convention so migrations and models agree on every database.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# INTEGER PRIMARY KEY is SQLite's rowid alias (autoincrement); PostgreSQL gets 64-bit ids.
IdType = BigInteger().with_variant(Integer(), "sqlite")


class UtcDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite keeps no offset, so store UTC there)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column; attach a timezone")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {
        datetime: UtcDateTime(),
        dict[str, Any]: JSON(),
        list[Any]: JSON(),
    }


class InvocationRecord(Base):
    """One row per hook call received, whatever its result (CRD found-37: log every invocation).

    Append-only: a retried call (same hookInstance) gets a row of its own, so the log shows each
    response the service sent.
    """

    __tablename__ = "invocation"

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    hook_instance: Mapped[str | None] = mapped_column(String(128), index=True)  # None: unparseable body
    hook: Mapped[str | None] = mapped_column(String(64))
    service_id: Mapped[str] = mapped_column(String(128))
    issuer: Mapped[str | None] = mapped_column(String(512))
    tenant: Mapped[str | None] = mapped_column(String(256))
    patient_id: Mapped[str | None] = mapped_column(String(128))  # FHIR logical id only
    status_code: Mapped[int] = mapped_column(Integer)
    # "covered", "covered,documentation_needed", "no_orders_in_scope", "error"
    outcome_summary: Mapped[str] = mapped_column(String(256))
    order_count: Mapped[int] = mapped_column(Integer)
    card_uuids: Mapped[list[Any]] = mapped_column()
    timings: Mapped[dict[str, Any]] = mapped_column()  # milliseconds per stage
    error: Mapped[str | None] = mapped_column(String(1024))  # issue code + field, never request data
    created_at: Mapped[datetime] = mapped_column(index=True)


class DecisionRecord(Base):
    """One row per hook call and in-scope order: what was decided, on which policy version, and why.

    Append-only (only retention purges rows): a retried call (same hookInstance) adds rows of its own,
    so every answer that was sent stays on record for audit and disputes (CRD found-11, found-37).
    """

    __tablename__ = "decision"
    __table_args__ = (UniqueConstraint("invocation_id", "order_reference"),)

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    invocation_id: Mapped[int | None] = mapped_column(
        ForeignKey("invocation.id", ondelete="SET NULL"), index=True
    )
    coverage_assertion_id: Mapped[str | None] = mapped_column(String(128), index=True)
    hook_instance: Mapped[str] = mapped_column(String(128), index=True)
    hook: Mapped[str] = mapped_column(String(64))
    service_id: Mapped[str] = mapped_column(String(128))
    issuer: Mapped[str | None] = mapped_column(String(512))
    tenant: Mapped[str | None] = mapped_column(String(256))
    patient_id: Mapped[str] = mapped_column(String(128))  # FHIR logical id only
    order_reference: Mapped[str] = mapped_column(String(256))
    order_codes: Mapped[list[Any]] = mapped_column()  # [[system, code], ...]
    policy_id: Mapped[str] = mapped_column(String(128))
    policy_version: Mapped[str] = mapped_column(String(64))
    outcome: Mapped[str] = mapped_column(String(32))
    pathway: Mapped[str | None] = mapped_column(String(32))
    criteria: Mapped[list[Any]] = mapped_column()  # see extract.criteria_rows
    card_uuids: Mapped[list[Any]] = mapped_column()
    timings: Mapped[dict[str, Any]] = mapped_column()
    data_gaps: Mapped[list[Any]] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(index=True)


class CardRecord(Base):
    """Which hook call (and orders) sent a card uuid: feedback names only the card.

    Append-only, one row per (call, card): card uuids are deterministic, so a retried call sends the
    same uuid again and each sending is kept.
    """

    __tablename__ = "card"
    __table_args__ = (UniqueConstraint("invocation_id", "card_uuid"),)

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    card_uuid: Mapped[str] = mapped_column(String(128), index=True)
    invocation_id: Mapped[int | None] = mapped_column(
        ForeignKey("invocation.id", ondelete="SET NULL"), index=True
    )
    hook_instance: Mapped[str] = mapped_column(String(128), index=True)
    service_id: Mapped[str] = mapped_column(String(128))
    order_references: Mapped[list[Any]] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(index=True)


class FeedbackRecord(Base):
    """One CDS Hooks feedback item. Repeats (same card, outcome and timestamp) are stored once."""

    __tablename__ = "feedback"
    __table_args__ = (UniqueConstraint("card_uuid", "outcome", "outcome_timestamp"),)

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    card_uuid: Mapped[str] = mapped_column(String(128), index=True)
    outcome: Mapped[str] = mapped_column(String(16))  # accepted | overridden
    accepted_suggestions: Mapped[list[Any]] = mapped_column()  # suggestion uuids
    override_reason_system: Mapped[str | None] = mapped_column(String(512))
    override_reason_code: Mapped[str | None] = mapped_column(String(256))
    override_reason_display: Mapped[str | None] = mapped_column(String(512))
    override_user_comment: Mapped[str | None] = mapped_column(Text)
    outcome_timestamp: Mapped[datetime] = mapped_column()
    # Found through the card uuid when the card is on record: the newest call that sent the card at or
    # before outcomeTimestamp, else (EHR clock behind ours) the first call that sent it. Unlinked
    # feedback is kept (the card may predate a purge, or come from another deployment).
    invocation_id: Mapped[int | None] = mapped_column(
        ForeignKey("invocation.id", ondelete="SET NULL"), index=True
    )
    hook_instance: Mapped[str | None] = mapped_column(String(128), index=True)
    linked: Mapped[bool] = mapped_column(Boolean)
    service_id: Mapped[str] = mapped_column(String(128))
    issuer: Mapped[str] = mapped_column(String(512))
    received_at: Mapped[datetime] = mapped_column(index=True)
