"""The bus: every state change the hub pushes to clients goes through it.

- ``events``: committed build events (with their personal alerts), in stream
  order, each once;
- messages of a kind: ``claim`` (claimed, released), ``mute``, ``access``
  (account and visibility changes), ``attached`` and ``probe``/``present``
  (one client per developer across nodes).

:class:`~buildnotify.bus.local.LocalBus` serves one hub process (the SQLite
default); :class:`~buildnotify.bus.postgres.PostgresBus` lets several hub
nodes on one PostgreSQL database behave as one hub (LISTEN/NOTIFY carrying
only kinds; what changed is read from the database). Both pass the same test
suite (tests/test_bus.py). Modelled on Buildbot's ``master/buildbot/mq/``.
"""

from buildnotify.bus.base import Bus, EventListener, Message, MessageConsumer

__all__ = ["Bus", "EventListener", "Message", "MessageConsumer"]
