"""The signature of a ``webhook`` relay's POST (docs/relays.md shows a
receiver how to check it): HMAC-SHA256 of the exact body with the relay's
secret, and the message id, which stays the same across retries, so that a
receiver can drop a repeat."""

from __future__ import annotations

import hashlib
import hmac

SIGNATURE_HEADER = "X-Buildnotify-Signature"
DELIVERY_HEADER = "X-Buildnotify-Delivery"


def signature(secret: str, body: bytes) -> str:
    """``sha256=<hex>``, the value of :data:`SIGNATURE_HEADER`."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
