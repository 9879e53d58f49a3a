"""Twisted endpoint strings that people type (``--http``, ``--pb``, ``--hub``
or their keys in a config file), checked before they are used, so that a
mistake is one line naming where it was made rather than a failure later
(a hub that does not start, a watch that retries for ever)."""

from __future__ import annotations


def mistake(description: str, where: str, example: str, *, server: bool) -> str | None:
    """None if Twisted can make a listening (``server``) or connecting
    endpoint of ``description``; else a line for the user that names
    ``where`` it came from (e.g. ``--http``) and shows an ``example``."""
    from twisted.internet import reactor
    from twisted.internet.endpoints import clientFromString, serverFromString

    parse = serverFromString if server else clientFromString
    try:
        parse(reactor, description)
    except Exception as e:  # whatever the endpoint's parser rejects, in its own words
        return f"{where}: not an endpoint: {description!r} ({str(e) or type(e).__name__}); e.g. {example}"
    return None


def proxied(description: str) -> bool:
    """Whether a listening endpoint reads the PROXY protocol (Twisted's
    ``haproxy:`` wrapper): its connections' peers are known only once the
    header is read."""
    return description.strip().lower().startswith("haproxy:")
