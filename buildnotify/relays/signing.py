"""The signature of a ``webhook`` relay's POST (docs/relays.md shows a
receiver how to check it): HMAC-SHA256, keyed with the relay's secret, of
the message id, a dot and the exact body. The id stays the same across
retries, so that a receiver can drop a repeat; signing it too means a
captured request cannot be replayed under another id."""

from __future__ import annotations

import hashlib
import hmac

SIGNATURE_HEADER = "X-Buildnotify-Signature"
DELIVERY_HEADER = "X-Buildnotify-Delivery"


def signature(secret: str, delivery: str, body: bytes) -> str:
    """``sha256=<hex>``, the value of :data:`SIGNATURE_HEADER` for the
    request whose :data:`DELIVERY_HEADER` is ``delivery``."""
    signed = delivery.encode() + b"." + body
    return "sha256=" + hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
