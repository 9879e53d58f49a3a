"""The registry of CI dialects: the ``<provider>`` of ``POST /hooks/<provider>``."""

from __future__ import annotations

from buildnotify.ingest import buildkite, circleci, generic, github, gitlab, jenkins
from buildnotify.ingest.base import Provider

PROVIDERS: dict[str, Provider] = {
    module.NAME: module.parse for module in (github, gitlab, jenkins, buildkite, circleci, generic)
}
