"""Initial records schema: invocation, decision, card, feedback.

Revision ID: 0001
Revises:
Create Date: 2026-11-24
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copies of the model's types: a migration must not change when the models do.
ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
UTC_DATETIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "invocation",
        sa.Column("id", ID, nullable=False),
        sa.Column("hook_instance", sa.String(128), nullable=True),
        sa.Column("hook", sa.String(64), nullable=True),
        sa.Column("service_id", sa.String(128), nullable=False),
        sa.Column("issuer", sa.String(512), nullable=True),
        sa.Column("tenant", sa.String(256), nullable=True),
        sa.Column("patient_id", sa.String(128), nullable=True),
        sa.Column("status_code", sa.Integer(), nullable=False),
        sa.Column("outcome_summary", sa.String(256), nullable=False),
        sa.Column("order_count", sa.Integer(), nullable=False),
        sa.Column("card_uuids", sa.JSON(), nullable=False),
        sa.Column("timings", sa.JSON(), nullable=False),
        sa.Column("error", sa.String(1024), nullable=True),
        sa.Column("created_at", UTC_DATETIME, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_invocation"),
    )
    op.create_index("ix_invocation_hook_instance", "invocation", ["hook_instance"])
    op.create_index("ix_invocation_created_at", "invocation", ["created_at"])

    op.create_table(
        "decision",
        sa.Column("id", ID, nullable=False),
        sa.Column("invocation_id", ID, nullable=True),
        sa.Column("coverage_assertion_id", sa.String(128), nullable=True),
        sa.Column("hook_instance", sa.String(128), nullable=False),
        sa.Column("hook", sa.String(64), nullable=False),
        sa.Column("service_id", sa.String(128), nullable=False),
        sa.Column("issuer", sa.String(512), nullable=True),
        sa.Column("tenant", sa.String(256), nullable=True),
        sa.Column("patient_id", sa.String(128), nullable=False),
        sa.Column("order_reference", sa.String(256), nullable=False),
        sa.Column("order_codes", sa.JSON(), nullable=False),
        sa.Column("policy_id", sa.String(128), nullable=False),
        sa.Column("policy_version", sa.String(64), nullable=False),
        sa.Column("outcome", sa.String(32), nullable=False),
        sa.Column("pathway", sa.String(32), nullable=True),
        sa.Column("criteria", sa.JSON(), nullable=False),
        sa.Column("card_uuids", sa.JSON(), nullable=False),
        sa.Column("timings", sa.JSON(), nullable=False),
        sa.Column("data_gaps", sa.JSON(), nullable=False),
        sa.Column("created_at", UTC_DATETIME, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_decision"),
        sa.ForeignKeyConstraint(
            ["invocation_id"], ["invocation.id"], name="fk_decision_invocation_id_invocation", ondelete="SET NULL"
        ),
        # Append-only: one row per call and order, so a retried call never overwrites what was sent.
        sa.UniqueConstraint("invocation_id", "order_reference", name="uq_decision_invocation_id_order_reference"),
    )
    op.create_index("ix_decision_invocation_id", "decision", ["invocation_id"])
    op.create_index("ix_decision_coverage_assertion_id", "decision", ["coverage_assertion_id"])
    op.create_index("ix_decision_hook_instance", "decision", ["hook_instance"])
    op.create_index("ix_decision_created_at", "decision", ["created_at"])

    op.create_table(
        "card",
        sa.Column("id", ID, nullable=False),
        sa.Column("card_uuid", sa.String(128), nullable=False),
        sa.Column("invocation_id", ID, nullable=True),
        sa.Column("hook_instance", sa.String(128), nullable=False),
        sa.Column("service_id", sa.String(128), nullable=False),
        sa.Column("order_references", sa.JSON(), nullable=False),
        sa.Column("created_at", UTC_DATETIME, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_card"),
        sa.ForeignKeyConstraint(
            ["invocation_id"], ["invocation.id"], name="fk_card_invocation_id_invocation", ondelete="SET NULL"
        ),
        # Card uuids are deterministic: a retried call sends the same uuid again, kept as a row of its own.
        sa.UniqueConstraint("invocation_id", "card_uuid", name="uq_card_invocation_id_card_uuid"),
    )
    op.create_index("ix_card_card_uuid", "card", ["card_uuid"])
    op.create_index("ix_card_invocation_id", "card", ["invocation_id"])
    op.create_index("ix_card_hook_instance", "card", ["hook_instance"])
    op.create_index("ix_card_created_at", "card", ["created_at"])

    op.create_table(
        "feedback",
        sa.Column("id", ID, nullable=False),
        sa.Column("card_uuid", sa.String(128), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("accepted_suggestions", sa.JSON(), nullable=False),
        sa.Column("override_reason_system", sa.String(512), nullable=True),
        sa.Column("override_reason_code", sa.String(256), nullable=True),
        sa.Column("override_reason_display", sa.String(512), nullable=True),
        sa.Column("override_user_comment", sa.Text(), nullable=True),
        sa.Column("outcome_timestamp", UTC_DATETIME, nullable=False),
        sa.Column("invocation_id", ID, nullable=True),
        sa.Column("hook_instance", sa.String(128), nullable=True),
        sa.Column("linked", sa.Boolean(), nullable=False),
        sa.Column("service_id", sa.String(128), nullable=False),
        sa.Column("issuer", sa.String(512), nullable=False),
        sa.Column("received_at", UTC_DATETIME, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_feedback"),
        sa.ForeignKeyConstraint(
            ["invocation_id"], ["invocation.id"], name="fk_feedback_invocation_id_invocation", ondelete="SET NULL"
        ),
        sa.UniqueConstraint(
            "card_uuid", "outcome", "outcome_timestamp", name="uq_feedback_card_uuid_outcome_outcome_timestamp"
        ),
    )
    op.create_index("ix_feedback_card_uuid", "feedback", ["card_uuid"])
    op.create_index("ix_feedback_invocation_id", "feedback", ["invocation_id"])
    op.create_index("ix_feedback_hook_instance", "feedback", ["hook_instance"])
    op.create_index("ix_feedback_received_at", "feedback", ["received_at"])


def downgrade() -> None:
    op.drop_table("feedback")
    op.drop_table("card")
    op.drop_table("decision")
    op.drop_table("invocation")
