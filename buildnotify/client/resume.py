"""Where a client's event stream stands, kept on disk per hub, user and
project set so a restarted client resumes from the last event it saw.

Event ids are one stream for every node of a hub (they share one database),
so a hub named by several endpoints has one position: the file is found by
the set of endpoints, whatever their order.

A position belongs to one stream: two runs watching different projects must
not share it (one would skip what the other had not seen). One small JSON
file per (hub, user, projects) under the user's state directory
(``$XDG_STATE_HOME/buildnotify/`` on Linux), replaced atomically: a crash
leaves either the old or the new position, never half a file.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import platformdirs

from buildnotify.client.settings import hub_list

ANONYMOUS = "anonymous"


def default_state_dir() -> Path:
    return Path(platformdirs.user_state_dir("buildnotify"))


def state_file_name(hub: str | Sequence[str], user: str | None, projects: Iterable[str] | None = None) -> str:
    """``tcp:127.0.0.1:8787`` + ``ada`` -> ``tcp_127.0.0.1_8787-ada.json`` for
    a developer's saved projects (``projects`` None); a named set of projects
    adds a digest of the set: ``tcp_127.0.0.1_8787-ada-3f2a9c1b.json``.
    Several endpoints (a list, or comma separated) name the first in sort
    order, how many more, and a digest of the set:
    ``tcp_10.0.0.1_8787+1-5d41402abc4b-ada.json``."""

    def safe(text: str) -> str:
        return re.sub(r"[^A-Za-z0-9._@-]+", "_", text).strip("_") or "_"

    endpoints = sorted(hub_list(hub))
    where = safe(endpoints[0]) if endpoints else "_"
    if len(endpoints) > 1:
        where += f"+{len(endpoints) - 1}-{_digest(endpoints)}"
    name = f"{where}-{safe(user or ANONYMOUS)}"
    if projects is not None:
        name += "-" + _digest(sorted(set(projects)))
    return f"{name}.json"


def _digest(names: list[str]) -> str:
    return hashlib.sha256("\n".join(names).encode()).hexdigest()[:12]


class ResumeFile:
    """The last event id seen from one hub by one user (``None``: none yet)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def for_hub(
        cls,
        hub: str | Sequence[str],
        user: str | None,
        directory: Path | None = None,
        projects: Iterable[str] | None = None,
    ) -> ResumeFile:
        """The position of ``user``'s stream of ``projects`` (None: the
        developer's saved projects) from ``hub`` (one endpoint, or several:
        a list or comma separated, in any order)."""
        return cls((directory or default_state_dir()) / state_file_name(hub, user, projects))

    def load(self) -> int | None:
        """The saved position; ``None`` when there is none or the file is
        unreadable (a damaged file means starting live, not crashing)."""
        try:
            data: Any = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None
        last_id = data.get("last_id") if isinstance(data, dict) else None
        if isinstance(last_id, int) and not isinstance(last_id, bool) and last_id >= 0:
            return last_id
        return None

    def save(self, last_id: int, **extra: Any) -> None:
        """Write atomically: a temporary file in the same directory, fsynced,
        then renamed over the old one."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w") as f:
                json.dump({"last_id": last_id, **extra}, f)
                f.write("\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(temporary, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise
