"""Developers, their tokens and identities, and who may see private projects.

Plain synchronous functions of a connection: the caller owns the transaction
(the hub runs them on its worker threads, the CLI inside ``engine.begin()``).

Tokens are stored only as hashes, so a copy of the database lets no one log
in; the plaintext is returned once, when it is issued.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import secrets
from collections.abc import Iterable
from typing import NamedTuple

from sqlalchemy import Connection, and_, delete, func, insert, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite

from buildnotify.events import utcnow
from buildnotify.store.schema import (
    NAME_LENGTH,
    access_changes,
    alerts,
    claims,
    developers,
    identities,
    members,
    projects,
    watches,
)
from buildnotify.store.stream import ACCESS, Stream

TOKEN_PREFIX = "bn_"
HASH_PREFIX = "sha256:"
IDENTITY_KINDS = ("email", "login")
MAX_NAME = NAME_LENGTH

#: Compared against when a developer has no token (or does not exist), so that
#: a failed login costs the same compare either way.
_DUMMY_HASH = HASH_PREFIX + "0" * 64


class AccountError(Exception):
    """A request about accounts that cannot be done; the message says why."""


class Developer(NamedTuple):
    name: str
    identities: list[tuple[str, str]]  # (kind, value), sorted
    has_token: bool


class Project(NamedTuple):
    name: str
    private: bool
    members: list[str]  # developer names, sorted


# -- tokens --------------------------------------------------------------------


def new_token() -> str:
    """A fresh bearer token: 256 random bits, URL-safe."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    """The stored form of a token: its SHA-256, hex.

    A fast hash is enough here (no salt, no key stretching): tokens are 256
    random bits made by :func:`new_token`, not passwords people choose, so
    there is no dictionary to attack and no brute force to slow down.
    """
    return HASH_PREFIX + hashlib.sha256(token.encode("utf-8")).hexdigest()


def issue_token(conn: Connection, name: str) -> str:
    """Give developer ``name`` a new token and return it (the only time the
    plaintext exists); the previous token stops working."""
    developer_id = _developer_id(conn, name)
    token = new_token()
    conn.execute(
        update(developers).where(developers.c.id == developer_id).values(token_hash=hash_token(token))
    )
    _changed(conn, "developer", name)  # sessions signed in with the old token end
    return token


def check_token(conn: Connection, name: str, token: str) -> int | None:
    """The developer's id if ``token`` is ``name``'s current token, else None.

    The hashes are compared in constant time, and a compare happens even when
    there is no such developer or no token, so the answer's timing does not
    tell which names exist.
    """
    row = conn.execute(
        select(developers.c.id, developers.c.token_hash).where(developers.c.name == name)
    ).first()
    offered = hash_token(token) if isinstance(token, str) else _DUMMY_HASH
    if row is None or not row.token_hash:
        hmac.compare_digest(offered, _DUMMY_HASH)
        return None
    return row.id if hmac.compare_digest(offered, row.token_hash) else None


# -- developers and identities ---------------------------------------------------


def add_developer(conn: Connection, name: str, emails: Iterable[str] = (), logins: Iterable[str] = ()) -> int:
    """Add a developer (without a token: see :func:`issue_token`) and return
    the id. Identities are lower-cased; each may belong to one developer only."""
    name = _check_name(name)
    if conn.execute(select(developers.c.id).where(developers.c.name == name)).first() is not None:
        raise AccountError(f"developer {name!r} exists already")
    wanted = [("email", e) for e in emails] + [("login", login) for login in logins]
    normalized = [(kind, _check_identity(kind, value)) for kind, value in wanted]
    for kind, value in normalized:
        _refuse_taken(conn, kind, value, None)
    developer_id = conn.execute(
        insert(developers).values(name=name, token_hash=None, created_at=utcnow())
    ).inserted_primary_key[0]
    for kind, value in dict.fromkeys(normalized):
        conn.execute(insert(identities).values(developer_id=developer_id, kind=kind, value=value))
    return developer_id


def add_identity(conn: Connection, name: str, kind: str, value: str) -> bool:
    """Recognise ``name`` as the author of commits with this email or login;
    False if it was recognised already."""
    developer_id = _developer_id(conn, name)
    value = _check_identity(kind, value)
    if _refuse_taken(conn, kind, value, developer_id):
        return False
    conn.execute(insert(identities).values(developer_id=developer_id, kind=kind, value=value))
    return True


def remove_developer(conn: Connection, name: str) -> None:
    """Remove a developer with their identities, memberships, settings,
    alerts and claims."""
    developer_id = _developer_id(conn, name)
    for table in (identities, members, watches, alerts):
        conn.execute(delete(table).where(table.c.developer_id == developer_id))
    conn.execute(delete(claims).where(claims.c.developer == name))
    conn.execute(delete(developers).where(developers.c.id == developer_id))
    _changed(conn, "developer", name)


def list_developers(conn: Connection) -> list[Developer]:
    """Every developer, by name: identities and whether a token is set (never
    the token or its hash)."""
    found: dict[int, Developer] = {}
    for row in conn.execute(
        select(developers.c.id, developers.c.name, developers.c.token_hash).order_by(developers.c.name)
    ):
        found[row.id] = Developer(row.name, [], row.token_hash is not None)
    for row in conn.execute(
        select(identities.c.developer_id, identities.c.kind, identities.c.value).order_by(
            identities.c.kind, identities.c.value
        )
    ):
        if row.developer_id in found:
            found[row.developer_id].identities.append((row.kind, row.value))
    return list(found.values())


def developers_for_author(conn: Connection, email: str | None, login: str | None) -> list[tuple[int, str]]:
    """The developers a commit author is: (id, name) of those with a matching
    email or login (compared lower-cased), each once, by name."""
    wanted = []
    if email and email.strip():
        wanted.append(and_(identities.c.kind == "email", identities.c.value == email.strip().lower()))
    if login and login.strip():
        wanted.append(and_(identities.c.kind == "login", identities.c.value == login.strip().lower()))
    if not wanted:
        return []
    query = (
        select(developers.c.id, developers.c.name)
        .join(identities, identities.c.developer_id == developers.c.id)
        .where(or_(*wanted))
        .distinct()
        .order_by(developers.c.name)
    )
    return [(row.id, row.name) for row in conn.execute(query)]


# -- projects and visibility ---------------------------------------------------------


def set_private(conn: Connection, project: str, private: bool) -> None:
    """Make ``project`` private (members only) or public (everyone). A project
    no build has mentioned yet is created, so it can be private from its first
    build on."""
    _ensure_project(conn, project)
    conn.execute(update(projects).where(projects.c.name == project).values(private=private))
    _changed(conn, "project", project)


def add_member(conn: Connection, project: str, name: str) -> bool:
    """Let developer ``name`` see ``project`` when it is private; False if
    they could already."""
    developer_id = _developer_id(conn, name)
    _ensure_project(conn, project)
    if _is_member(conn, project, developer_id):
        return False
    conn.execute(insert(members).values(project=project, developer_id=developer_id))
    _changed(conn, "project", project)
    return True


def remove_member(conn: Connection, project: str, name: str) -> bool:
    """Take ``name`` off ``project``'s members; False if they were not one."""
    developer_id = _developer_id(conn, name)
    result = conn.execute(
        delete(members).where(members.c.project == project, members.c.developer_id == developer_id)
    )
    if result.rowcount:
        _changed(conn, "project", project)
    return result.rowcount > 0


def members_of(conn: Connection, project: str) -> list[str]:
    """The names of ``project``'s members, sorted."""
    query = (
        select(developers.c.name)
        .join(members, members.c.developer_id == developers.c.id)
        .where(members.c.project == project)
        .order_by(developers.c.name)
    )
    return list(conn.scalars(query))


def list_projects(conn: Connection) -> list[Project]:
    """Every known project (from builds, or made private or given members
    beforehand), by name, with its members."""
    found = {
        row.name: Project(row.name, bool(row.private), [])
        for row in conn.execute(select(projects.c.name, projects.c.private))
    }
    query = (
        select(members.c.project, developers.c.name)
        .join(developers, developers.c.id == members.c.developer_id)
        .order_by(developers.c.name)
    )
    for row in conn.execute(query):
        found.setdefault(row.project, Project(row.project, False, [])).members.append(row.name)
    return [found[name] for name in sorted(found)]


def visible(conn: Connection, project: str, developer_id: int | None) -> bool:
    """Whether ``project`` may be shown to a developer (None: anonymous).
    Public and unknown projects are visible to everyone; private ones to
    their members only."""
    private = conn.scalar(select(projects.c.private).where(projects.c.name == project))
    if not private:
        return True
    return developer_id is not None and _is_member(conn, project, developer_id)


def private_projects(conn: Connection) -> set[str]:
    """The names of all private projects (for a cache of :func:`visible`)."""
    return set(conn.scalars(select(projects.c.name).where(projects.c.private.is_(True))))


def visible_projects(conn: Connection, developer_id: int | None) -> list[tuple[str, bool]]:
    """(name, private) of every known project a developer (None: anonymous)
    may see, by name."""
    mine = memberships(conn, developer_id) if developer_id is not None else set()
    rows = conn.execute(select(projects.c.name, projects.c.private).order_by(projects.c.name))
    return [(row.name, bool(row.private)) for row in rows if not row.private or row.name in mine]


def hidden_from(conn: Connection, developer_id: int | None) -> set[str]:
    """The private projects a developer (None: anonymous) may not see."""
    private = private_projects(conn)
    if not private or developer_id is None:
        return private
    return private - memberships(conn, developer_id)


def memberships(conn: Connection, developer_id: int) -> set[str]:
    """The projects ``developer_id`` is a member of (for a cache of :func:`visible`)."""
    return set(conn.scalars(select(members.c.project).where(members.c.developer_id == developer_id)))


# -- helpers -----------------------------------------------------------------------------


def _developer_id(conn: Connection, name: str) -> int:
    developer_id = conn.scalar(select(developers.c.id).where(developers.c.name == name))
    if developer_id is None:
        raise AccountError(f"no developer named {name!r}")
    return developer_id


def _check_name(name: str) -> str:
    if not name or any(c.isspace() for c in name):
        raise AccountError(f"a developer name must be non-empty without spaces: {name!r}")
    if len(name) > MAX_NAME:
        raise AccountError(f"a developer name may have at most {MAX_NAME} characters")
    return name


def _check_identity(kind: str, value: str) -> str:
    if kind not in IDENTITY_KINDS:
        raise AccountError(f"an identity is an email or a login, not {kind!r}")
    value = (value or "").strip().lower()
    if not value or any(c.isspace() for c in value) or len(value) > MAX_NAME:
        raise AccountError(f"not a usable {kind}: {value!r}")
    if kind == "email" and "@" not in value:
        raise AccountError(f"not an email address: {value!r}")
    return value


def _refuse_taken(conn: Connection, kind: str, value: str, developer_id: int | None) -> bool:
    """True if the identity belongs to ``developer_id`` already; AccountError
    if it belongs to someone else."""
    row = conn.execute(
        select(developers.c.id, developers.c.name)
        .join(identities, identities.c.developer_id == developers.c.id)
        .where(identities.c.kind == kind, identities.c.value == value)
    ).first()
    if row is None:
        return False
    if row.id != developer_id:
        raise AccountError(f"{kind} {value!r} belongs to developer {row.name!r} already")
    return True


def _is_member(conn: Connection, project: str, developer_id: int) -> bool:
    query = select(members.c.id).where(members.c.project == project, members.c.developer_id == developer_id)
    return conn.execute(query).first() is not None


def _ensure_project(conn: Connection, project: str) -> None:
    if not project or len(project) > MAX_NAME:
        raise AccountError(f"not a project name: {project!r}")
    # Insert-or-ignore: a hub recording the project's first build at the same
    # moment (in another process) must not make this fail.
    dialect = {"postgresql": postgresql, "sqlite": sqlite}[conn.dialect.name]
    conn.execute(
        dialect.insert(projects)
        .values(name=project, private=False, created_at=utcnow())
        .on_conflict_do_nothing(index_elements=[projects.c.name])
    )


# -- what hubs learn of changes ------------------------------------------------


@dataclasses.dataclass(frozen=True)
class AccessChange:
    id: int
    kind: str  # "project" or "developer"
    subject: str  # the project's or the developer's name


def _changed(conn: Connection, kind: str, subject: str) -> None:
    """Record, in the caller's transaction, that who may see ``subject``
    changed: every hub applies it to the sessions it holds (on PostgreSQL,
    told at once through the bus's channel, ids in commit order)."""
    if conn.dialect.name == "postgresql":
        Stream.of(conn).append(conn, ACCESS)
    conn.execute(insert(access_changes).values(kind=kind, subject=subject, changed_at=utcnow()))


def signed_in_as(conn: Connection, names: Iterable[str]) -> dict[str, tuple[int, str | None]]:
    """``{name: (developer id, token hash)}`` of the developers that exist."""
    query = select(developers.c.name, developers.c.id, developers.c.token_hash).where(
        developers.c.name.in_(list(names))
    )
    return {row.name: (row.id, row.token_hash) for row in conn.execute(query)}


def changes_after(conn: Connection, after_id: int, limit: int = 1000) -> list[AccessChange]:
    """Access changes with an id over ``after_id``, oldest first."""
    query = select(access_changes).where(access_changes.c.id > after_id).order_by(access_changes.c.id)
    return [AccessChange(row.id, row.kind, row.subject) for row in conn.execute(query.limit(limit))]


def last_change_id(conn: Connection) -> int:
    return conn.execute(select(func.max(access_changes.c.id))).scalar() or 0
