"""Tables, as SQLAlchemy Core metadata. Alembic migrations (``migrations/``)
create them; a test checks the two agree."""

from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.types import TypeDecorator


class UTCDateTime(TypeDecorator):
    """Aware UTC datetimes in, aware UTC datetimes out, on every backend
    (SQLite has no time zones; storing naive UTC keeps ordering right)."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: object) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(timezone.utc).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: object) -> datetime | None:
        return value.replace(tzinfo=timezone.utc) if value is not None else None


metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

#: the width of every name column (projects, pipelines, branches, developers,
#: identities): ingest cuts names to it, PB arguments longer are refused
NAME_LENGTH = 255
#: the largest value a BigInteger column holds
BIGINT_MAX = 2**63 - 1

# BigInteger ids, but SQLite only autoincrements INTEGER PRIMARY KEY.
Id = BigInteger().with_variant(Integer(), "sqlite")

projects = Table(
    "projects",
    metadata,
    Column("id", Id, primary_key=True),
    Column("name", String(NAME_LENGTH), nullable=False, unique=True),
    Column("private", Boolean, nullable=False, default=False),
    Column("created_at", UTCDateTime, nullable=False),
)

#: Every accepted update of a build, in commit order; ``id`` is the monotonic
#: event id clients resume from.
events = Table(
    "events",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("provider", String(32), nullable=False),
    Column("project", String(NAME_LENGTH), nullable=False),
    Column("pipeline", String(NAME_LENGTH), nullable=False),
    Column("branch", String(NAME_LENGTH)),
    Column("sha", String(64)),
    Column("author_name", String(NAME_LENGTH)),
    Column("author_email", String(NAME_LENGTH)),
    Column("author_login", String(NAME_LENGTH)),
    Column("build_id", String(NAME_LENGTH), nullable=False),
    Column("build_number", BigInteger),
    Column("attempt", Integer, nullable=False, default=1),
    Column("status", String(16), nullable=False),
    Column("transition", String(16)),
    Column("url", Text),
    Column("started_at", UTCDateTime),
    Column("finished_at", UTCDateTime),
    Column("received_at", UTCDateTime, nullable=False),
    Column("delivery_key", String(NAME_LENGTH), nullable=False),
    Index("ix_events_project_id", "project", "id"),
)

#: One row per webhook delivery ever accepted: the dedupe record.
deliveries = Table(
    "deliveries",
    metadata,
    Column("id", Id, primary_key=True),
    Column("provider", String(32), nullable=False),
    Column("key", String(NAME_LENGTH), nullable=False),
    Column("source", String(NAME_LENGTH)),
    Column("received_at", UTCDateTime, nullable=False),
    Column("event_count", Integer, nullable=False),
    UniqueConstraint("provider", "key", name="uq_deliveries_provider_key"),
)

#: The newest known state of each build run, so that an older update never
#: overwrites a newer one and transitions compare against the right build.
builds = Table(
    "builds",
    metadata,
    Column("id", Id, primary_key=True),
    Column("provider", String(32), nullable=False),
    Column("project", String(NAME_LENGTH), nullable=False),
    Column("pipeline", String(NAME_LENGTH), nullable=False),
    Column("build_id", String(NAME_LENGTH), nullable=False),
    Column("branch", String(NAME_LENGTH)),
    Column("seq", BigInteger, nullable=False),  # orders runs of one branch
    Column("attempt", Integer, nullable=False),
    Column("phase", Integer, nullable=False),  # 0 queued, 1 running, 2 finished
    Column("moment", UTCDateTime),  # the CI's timestamp of the newest update
    Column("status", String(16), nullable=False),
    Column("result", String(16)),  # newest red/green outcome, for transitions
    Column("event_id", BigInteger),
    UniqueConstraint("provider", "project", "pipeline", "build_id", name="uq_builds_run"),
    Index("ix_builds_branch_seq", "project", "pipeline", "branch", "seq"),
)

developers = Table(
    "developers",
    metadata,
    Column("id", Id, primary_key=True),
    Column("name", String(NAME_LENGTH), nullable=False, unique=True),
    Column("token_hash", String(NAME_LENGTH)),
    Column("created_at", UTCDateTime, nullable=False),
    # the relay an unreceived personal alert escalates through (None: never)
    Column("escalate_relay", String(NAME_LENGTH)),
)

#: How a commit author is recognised as a developer: lower-cased email or login.
identities = Table(
    "identities",
    metadata,
    Column("id", Id, primary_key=True),
    Column("developer_id", Id, ForeignKey("developers.id", ondelete="CASCADE"), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("value", String(NAME_LENGTH), nullable=False),
    UniqueConstraint("kind", "value", name="uq_identities_kind_value"),
)

#: Who may see a private project (public projects need no rows here).
members = Table(
    "members",
    metadata,
    Column("id", Id, primary_key=True),
    Column("project", String(NAME_LENGTH), nullable=False),
    Column("developer_id", Id, ForeignKey("developers.id", ondelete="CASCADE"), nullable=False),
    UniqueConstraint("project", "developer_id", name="uq_members_project_developer"),
)

#: A personal alert for a developer whose commit broke or fixed a build; kept
#: until the developer's client acknowledges it.
alerts = Table(
    "alerts",
    metadata,
    Column("id", Id, primary_key=True),
    Column("developer_id", Id, ForeignKey("developers.id", ondelete="CASCADE"), nullable=False),
    Column("event_id", BigInteger, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("acked_at", UTCDateTime),
    Column("delivered_at", UTCDateTime),  # first pushed to an attached client of the developer
    Column("escalated_at", UTCDateTime),  # sent through the developer's relay instead (once)
    UniqueConstraint("developer_id", "event_id", name="uq_alerts_developer_event"),
    Index("ix_alerts_pending", "developer_id", "acked_at"),
)

#: A developer's persistent settings per project: watched, and muted until.
watches = Table(
    "watches",
    metadata,
    Column("id", Id, primary_key=True),
    Column("developer_id", Id, ForeignKey("developers.id", ondelete="CASCADE"), nullable=False),
    Column("project", String(NAME_LENGTH), nullable=False),
    Column("watching", Boolean, nullable=False, default=True),
    Column("muted_until", UTCDateTime),
    UniqueConstraint("developer_id", "project", name="uq_watches_developer_project"),
)

#: "I'm on it": a developer's claim on a failing (project, pipeline, branch),
#: cleared when the build is fixed.
claims = Table(
    "claims",
    metadata,
    Column("id", Id, primary_key=True),
    Column("project", String(NAME_LENGTH), nullable=False),
    Column("pipeline", String(NAME_LENGTH), nullable=False),
    Column("branch", String(NAME_LENGTH), nullable=False, default=""),
    Column("developer", String(NAME_LENGTH), nullable=False),
    Column("note", Text),
    Column("claimed_at", UTCDateTime, nullable=False),
    UniqueConstraint("project", "pipeline", "branch", name="uq_claims_target"),
)

#: Every change of who may see what, appended by the account commands (which
#: may run in another process) and read by every hub, which applies it to the
#: sessions it holds: a project's visibility or members changed ("project"),
#: a developer's token was replaced or the developer removed ("developer").
access_changes = Table(
    "access_changes",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("kind", String(16), nullable=False),
    Column("subject", String(NAME_LENGTH), nullable=False),
    Column("changed_at", UTCDateTime, nullable=False),
)


#: What one hub node tells every node (claims, mutes, kicks): the body as
#: JSON, read after a NOTIFY that names only the kind. Ids are in commit
#: order (see store/stream.py); pruned after a day.
bus_messages = Table(
    "bus_messages",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("kind", String(16), nullable=False),
    Column("node", String(NAME_LENGTH), nullable=False),
    Column("body", Text, nullable=False),
    Column("sent_at", UTCDateTime, nullable=False),
)

#: The attached client of each developer when several nodes share the
#: database: which node holds it, so a login elsewhere knows whom to ask.
developer_clients = Table(
    "developer_clients",
    metadata,
    Column("developer", String(NAME_LENGTH), primary_key=True),
    Column("node", String(NAME_LENGTH), nullable=False),
    Column("nonce", String(64), nullable=False),
    Column("attached_at", UTCDateTime, nullable=False),
)


#: The durable outbox of the relays (buildnotify/relays/): one row per message
#: to send to a chat webhook, a signed JSON receiver or a mail server, written
#: in the transaction that stored its event (or escalated its alert). ``body``
#: is the rendered payload, sent as it is; ``leased_by``/``leased_until`` keep
#: two nodes from sending one message at once.
relay_messages = Table(
    "relay_messages",
    metadata,
    Column("id", Id, primary_key=True),
    Column("relay", String(NAME_LENGTH), nullable=False),
    Column("event_id", BigInteger),
    Column("alert_id", BigInteger),  # set for an escalated alert
    Column("body", Text, nullable=False),
    Column("state", String(16), nullable=False),  # pending, sent, dead
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", UTCDateTime, nullable=False),
    Column("last_error", Text),
    Column("created_at", UTCDateTime, nullable=False),
    Column("sent_at", UTCDateTime),
    Column("leased_by", String(NAME_LENGTH)),
    Column("leased_until", UTCDateTime),
    Index("ix_relay_messages_due", "state", "next_attempt_at"),
)
