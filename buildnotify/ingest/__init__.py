"""Webhook ingest: one module per CI dialect, all following :mod:`.base`."""

from __future__ import annotations

from buildnotify.ingest import buildkite, circleci, generic, github, gitlab, jenkins
from buildnotify.ingest.base import Provider

#: provider name (the ``<provider>`` of ``POST /hooks/<provider>``) → parser
PROVIDERS: dict[str, Provider] = {
    module.NAME: module.parse for module in (github, gitlab, jenkins, buildkite, circleci, generic)
}
