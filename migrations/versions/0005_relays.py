"""relays: the relay outbox, alert delivery and escalation times, a developer's escalation relay

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "relay_messages",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("relay", sa.String(length=255), nullable=False),
        sa.Column("event_id", sa.BigInteger(), nullable=True),
        sa.Column("alert_id", sa.BigInteger(), nullable=True),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("sent_at", sa.DateTime(), nullable=True),
        sa.Column("leased_by", sa.String(length=255), nullable=True),
        sa.Column("leased_until", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_relay_messages")),
    )
    op.create_index("ix_relay_messages_due", "relay_messages", ["state", "next_attempt_at"], unique=False)
    with op.batch_alter_table("alerts") as batch:
        batch.add_column(sa.Column("delivered_at", sa.DateTime(), nullable=True))
        batch.add_column(sa.Column("escalated_at", sa.DateTime(), nullable=True))
    with op.batch_alter_table("developers") as batch:
        batch.add_column(sa.Column("escalate_relay", sa.String(length=255), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("developers") as batch:
        batch.drop_column("escalate_relay")
    with op.batch_alter_table("alerts") as batch:
        batch.drop_column("escalated_at")
        batch.drop_column("delivered_at")
    op.drop_index("ix_relay_messages_due", table_name="relay_messages")
    op.drop_table("relay_messages")
