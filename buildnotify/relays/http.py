"""Sending one message to a chat webhook or a JSON receiver with treq.

2xx: sent. 429 and 5xx, and any network error or timeout: try again
(``Retry-After`` honoured). Any other answer (a 4xx: a wrong URL, a revoked
webhook, a body the receiver refuses) will not get better: dead at once.
The URL is never in an error (a chat webhook's URL is its secret)."""

from __future__ import annotations

import contextlib
from datetime import datetime
from typing import Any

import treq
from twisted.internet.defer import CancelledError, TimeoutError
from twisted.internet.error import ConnectError, ConnectionLost, DNSLookupError

from buildnotify.logtext import printable
from buildnotify.relays.outbox import Claimed
from buildnotify.relays.outcome import DEAD, RETRY, SENT, Outcome, retry_after
from buildnotify.relays.settings import RelaySettings
from buildnotify.relays.signing import DELIVERY_HEADER, SIGNATURE_HEADER, signature

#: bytes of a receiver's answer kept as the error
ANSWER_KEPT = 300


async def post(client: Any, relay: RelaySettings, message: Claimed, now: datetime, reactor: Any) -> Outcome:
    """POST ``message``'s body to ``relay`` with ``client`` (a treq HTTPClient)."""
    body = message.body.encode()
    headers = {
        "Content-Type": ["application/json"],
        "User-Agent": ["buildnotify-relay"],
        DELIVERY_HEADER: [str(message.id)],
    }
    if relay.kind == "webhook" and relay.secret:
        headers[SIGNATURE_HEADER] = [signature(relay.secret, str(message.id), body)]
    try:
        response = await client.post(relay.url, data=body, headers=headers, timeout=relay.timeout)
        answer = await _some_of(response, relay.timeout, reactor)
    except Exception as e:  # the network, a timeout, a TLS failure: all worth another try
        return Outcome(RETRY, f"could not reach the receiver: {_without(relay, _describe(e))}")
    code = response.code
    error = f"HTTP {code}" + (f": {printable(answer, ANSWER_KEPT)}" if answer else "")
    if 200 <= code < 300:
        return Outcome(SENT)
    if code == 429 or code >= 500:
        wait = retry_after((response.headers.getRawHeaders("Retry-After") or [None])[0], now)
        return Outcome(RETRY, error, wait)
    return Outcome(DEAD, error)


async def _some_of(response: Any, timeout: float, reactor: Any) -> str:
    """The start of the answer's body (the rest is read and dropped)."""
    kept = bytearray()

    def keep(data: bytes) -> None:
        if len(kept) < ANSWER_KEPT:
            kept.extend(data[: ANSWER_KEPT - len(kept)])

    reading = treq.collect(response, keep)
    reading.addTimeout(timeout, reactor)
    with contextlib.suppress(Exception):  # the status is what counts; a body cut short does not change it
        await reading
    return kept.decode("utf-8", "replace").strip()


def _without(relay: RelaySettings, text: str) -> str:
    """``text`` with the relay's URL (or its path, where a webhook's token is)
    blotted out: a URL parser's error quotes what it could not parse."""
    url = relay.url or ""
    rest = url.partition("://")[2]
    path = rest[rest.find("/") :] if "/" in rest else ""  # not urlsplit: it refuses what treq does
    for secret in (url, path if len(path) > 1 else ""):
        if secret:
            text = text.replace(secret, "<url>").replace(printable(secret), "<url>")
    return text


def _describe(error: Exception) -> str:
    if isinstance(error, CancelledError | TimeoutError):
        return "timed out or cancelled"
    if isinstance(error, DNSLookupError):
        return "name lookup failed"
    if isinstance(error, ConnectError | ConnectionLost):
        return printable(f"{type(error).__name__}: {error}")
    reasons = getattr(error, "reasons", None)  # treq's ResponseFailed and friends
    if reasons:
        return printable("; ".join(r.getErrorMessage() for r in reasons))
    return printable(f"{type(error).__name__}: {error}")
