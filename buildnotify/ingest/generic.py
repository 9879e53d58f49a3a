"""The hub's own JSON shape, for any CI without a dialect here or a shell script.

Small on purpose: three required fields, everything else optional, statuses
are the hub's own. Documented in ``docs/webhooks/generic.md``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from buildnotify.delivery import Delivery
from buildnotify.events import Author, BuildEvent, Status, map_status
from buildnotify.ingest.base import (
    BadRequest,
    HookRequest,
    ProviderConfig,
    Unauthorized,
    content_hash,
    field,
    first,
    identifier,
    integer,
    load_json,
    match_token,
    optional,
    parse_time,
    require_json,
    text,
)

NAME = "generic"

#: The hub's statuses, plus the spellings scripts most often use.
STATUS_MAP: dict[str, Status] = {
    **{status.value: status for status in Status},
    "failed": Status.FAILURE,
    "passed": Status.SUCCESS,
    "errored": Status.ERROR,
    "canceled": Status.CANCELLED,
}

_BEARER = re.compile(r"bearer\s+(\S+)\s*$", re.IGNORECASE)


def parse(request: HookRequest, config: ProviderConfig) -> Delivery:
    """One POST → one BuildEvent; the delivery key is ``Idempotency-Key``, else
    the body's ``delivery``, else a hash of the body."""
    source = _authenticate(request, config)
    require_json(request)
    data = load_json(request.body)
    project = _required(data, "project")
    pipeline = _required(data, "pipeline")
    status = map_status(NAME, STATUS_MAP, field(data, "status", str))
    number = integer(data, "number")
    key = first([request.header("Idempotency-Key"), _str(data, "delivery")]) or content_hash(request.body)
    if source is not None:
        key = f"{source}:{key}"  # two scripts' "Idempotency-Key: 1" are different deliveries
    event = BuildEvent(
        provider=NAME,
        project=project,
        pipeline=pipeline,
        build_id=identifier(data, "build_id", number="number"),
        build_number=number,
        attempt=integer(data, "attempt") or 1,
        status=status,
        branch=_str(data, "branch"),
        sha=_str(data, "sha"),
        author=Author(
            name=_str(data, "author.name"),
            email=_str(data, "author.email"),
            login=_str(data, "author.login"),
        ),
        url=_str(data, "url"),
        started_at=parse_time(data.get("started_at")),
        finished_at=parse_time(data.get("finished_at")),
        received_at=request.received_at,
        delivery_key=key,
    )
    return Delivery(provider=NAME, key=key, events=(event,), source=source)


def _authenticate(request: HookRequest, config: ProviderConfig) -> str | None:
    """``Authorization: Bearer <token>`` against the per-source tokens; the
    matched source's name. ``config.secret``, if set, is a token named "default"."""
    if not config.authenticated:
        return None
    tokens = dict(config.tokens)
    if config.secret:
        tokens.setdefault("default", config.secret)
    match = _BEARER.match(request.header("Authorization") or "")
    if match is None:
        raise Unauthorized("missing bearer token (send Authorization: Bearer <token>)")
    source = match_token(match.group(1), tokens)
    if source is None:
        raise Unauthorized("invalid bearer token")
    return source


def _required(data: Mapping[str, Any], name: str) -> str:
    value = field(data, name, str).strip()
    if not value:
        raise BadRequest(f"missing field: {name}")
    return value


def _str(data: Mapping[str, Any], name: str) -> str | None:
    """An optional string field; numbers are accepted (shell scripts)."""
    value = optional(data, name)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return text(data, name)
