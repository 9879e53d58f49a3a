"""Sending one message as mail with Twisted's ESMTP client.

The mail server took it: sent. A 5xx answer (no such recipient, refused
sender, failed authentication) will not get better: dead. Anything else (a
4xx, no connection, a timeout): try again."""

from __future__ import annotations

import json
from datetime import datetime
from email.message import EmailMessage
from email.utils import format_datetime
from io import BytesIO
from typing import Any

from twisted.internet.defer import Deferred
from twisted.mail.smtp import ESMTPSenderFactory, SMTPClientError

from buildnotify.logtext import printable
from buildnotify.relays.outbox import Claimed
from buildnotify.relays.outcome import DEAD, RETRY, SENT, Outcome
from buildnotify.relays.settings import RelaySettings
from buildnotify.relays.signing import DELIVERY_HEADER


def compose(relay: RelaySettings, message: Claimed, now: datetime) -> tuple[list[str], bytes]:
    """(recipients, the message as bytes). The Message-ID is the same on
    every attempt, so a repeat can be recognised."""
    stored = json.loads(message.body)
    mail = EmailMessage()
    mail["From"] = relay.sender
    mail["To"] = ", ".join(stored["to"])
    mail["Subject"] = stored["subject"]
    mail["Date"] = format_datetime(now)
    mail["Message-ID"] = f"<relay-{message.id}.{relay.name}@buildnotify>"
    mail[DELIVERY_HEADER] = str(message.id)
    mail.set_content(stored["text"])
    return list(stored["to"]), mail.as_bytes()


async def send(relay: RelaySettings, message: Claimed, now: datetime, reactor: Any) -> Outcome:
    recipients, data = compose(relay, message, now)
    done: Deferred[Any] = Deferred()
    factory = ESMTPSenderFactory(
        relay.username.encode() if relay.username is not None else None,  # Twisted's AUTH wants bytes
        (relay.password or "").encode() if relay.username is not None else None,
        relay.sender,
        recipients,
        BytesIO(data),
        done,
        retries=0,  # retrying is the outbox's job, with backoff
        timeout=relay.timeout,
        heloFallback=True,
        requireAuthentication=relay.username is not None,
        requireTransportSecurity=relay.starttls,
        hostname=relay.host,
    )
    connector = reactor.connectTCP(relay.host, relay.port, factory, timeout=relay.timeout)
    # the client's timeout is per answer: a server that dribbles must still not outlast the lease
    done.addTimeout(2 * relay.timeout, reactor)
    try:
        await done
    except SMTPClientError as e:
        permanent = e.code is not None and 500 <= e.code < 600
        return Outcome(DEAD if permanent else RETRY, f"mail server: {_answer(e)}")
    except Exception as e:
        return Outcome(RETRY, f"could not reach the mail server: {printable(f'{type(e).__name__}: {e}')}")
    finally:
        connector.disconnect()
    return Outcome(SENT)


def _answer(error: SMTPClientError) -> str:
    """The server's answer only: ``str(error)`` appends Twisted's transcript
    of the session, whose ``AUTH PLAIN`` line carries the password."""
    resp = error.resp.decode("utf-8", "replace") if isinstance(error.resp, bytes) else str(error.resp)
    code = f"{error.code:03d} " if error.code is not None and error.code > 0 else ""
    return printable(code + resp)
