"""Which parts of buildnotify may import which. Data flows one way (ingest
→ store → hub → clients); what several parts share sits below them all
(events, delivery, protocol) and imports nothing above it.

Every import of a module counts: those made only for type checking and
those inside functions too, since each is a dependency all the same.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "buildnotify"

#: the modules below every part: they import only each other
FOUNDATION = {"events", "delivery", "alerts", "protocol", "logtext", "metrics"}

#: part -> the parts it must not import
FORBIDDEN = {
    "store": {"ingest", "feeds", "hub", "bus"},
    "bus": {"ingest", "feeds", "hub", "client"},
    "ingest": {"store", "feeds", "hub"},
    "client": {"hub", "store", "ingest"},
    "hub": {"config", "ingest"},
}

#: part -> the only parts it may import (besides itself)
ONLY = {"relays": {"store", "events", "delivery", "protocol", "logtext", "metrics"}}
#: part -> the only parts that may import it
IMPORTED_ONLY_BY = {"relays": {"server", "cli"}}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def part_of(module: str) -> str | None:
    """``store`` for ``buildnotify.store.batch``; None outside buildnotify."""
    names = module.split(".")
    return names[1] if len(names) > 1 and names[0] == "buildnotify" else None


def imports_in(source: str, module: str, is_package: bool = False) -> Iterator[tuple[int, str]]:
    """(line, imported module) for every import in ``source``, relative ones
    resolved; ``from buildnotify import config`` imports ``buildnotify.config``."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module.split(".") if is_package else module.split(".")[:-1]
                package = package[: len(package) - (node.level - 1)]
                base = ".".join([*package, base] if base else package)
            if base == "buildnotify":
                for alias in node.names:
                    yield node.lineno, f"buildnotify.{alias.name}"
            else:
                yield node.lineno, base


def violation(importer: str, imported: str) -> str | None:
    """Why ``importer`` may not import ``imported``; None if it may."""
    source, target = part_of(importer), part_of(imported)
    if source is None or target is None or source == target:
        return None
    if source in FOUNDATION and target not in FOUNDATION:
        return f"{source} may import only {', '.join(sorted(FOUNDATION - {source}))} of buildnotify"
    if target in FORBIDDEN.get(source, ()):
        return f"{source} must not import {', '.join(sorted(FORBIDDEN[source]))}"
    if source in ONLY and target not in ONLY[source]:
        return f"{source} may import only {', '.join(sorted(ONLY[source]))} of buildnotify"
    if target in IMPORTED_ONLY_BY and source not in IMPORTED_ONLY_BY[target]:
        return f"only {' and '.join(sorted(IMPORTED_ONLY_BY[target]))} may import {target}"
    return None


def test_every_part_imports_only_what_lies_below_it() -> None:
    modules = sorted(PACKAGE.rglob("*.py"))
    assert len(modules) > 40, "buildnotify's modules were not found"
    problems = []
    for path in modules:
        importer = module_name(path)
        for line, imported in imports_in(path.read_text(), importer, path.name == "__init__.py"):
            why = violation(importer, imported)
            if why:
                problems.append(f"{path.relative_to(ROOT)}:{line} imports {imported}: {why}")
    assert not problems, "layering broken:\n" + "\n".join(problems)


def test_imports_for_type_checking_and_from_the_package_count() -> None:
    source = (
        "from typing import TYPE_CHECKING\n"
        "from buildnotify import config\n"
        "from . import wire\n"
        "if TYPE_CHECKING:\n"
        "    from buildnotify.ingest.base import ProviderConfig\n"
        "def later():\n"
        "    import buildnotify.store.schema\n"
    )
    found = sorted(imports_in(source, "buildnotify.hub.service"))
    assert found == [
        (1, "typing"),
        (2, "buildnotify.config"),
        (3, "buildnotify.hub"),
        (5, "buildnotify.ingest.base"),
        (7, "buildnotify.store.schema"),
    ]
    refused = [imported for _, imported in found if violation("buildnotify.hub.service", imported)]
    assert refused == ["buildnotify.config", "buildnotify.ingest.base"]
    assert violation("buildnotify.events", "buildnotify.logtext") is None
    assert violation("buildnotify.protocol", "buildnotify.hub.errors") is not None
    assert violation("buildnotify.relays.sender", "buildnotify.store.schema") is None
    assert violation("buildnotify.relays.sender", "buildnotify.config") is not None
    assert violation("buildnotify.hub.service", "buildnotify.relays") is not None
    assert violation("buildnotify.cli", "buildnotify.relays.outbox") is None


def cycle_in(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` (module -> modules it imports), or None."""
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> list[str] | None:
        if module in path:
            return [*path[path.index(module) :], module]
        if module in done:
            return None
        for imported in sorted(graph.get(module, ())):
            found = visit(imported, [*path, module])
            if found:
                return found
        done.add(module)
        return None

    return next(filter(None, (visit(module, []) for module in sorted(graph))), None)


def test_the_hub_and_the_bus_import_one_way() -> None:
    """No circle inside the hub or the bus (type-checking imports included):
    the service sits on top; sessions, rooms, logins and connections know it
    only through the small protocols they declare (SessionHost, Observer,
    LoginHost, ConnectionHost)."""
    for part in ("hub", "bus", "relays"):
        graph: dict[str, set[str]] = {}
        for path in sorted((PACKAGE / part).glob("*.py")):
            importer = module_name(path)
            graph[importer] = {
                imported
                for _, imported in imports_in(path.read_text(), importer, path.name == "__init__.py")
                if imported.startswith(f"buildnotify.{part}.") and imported != importer
            }
        assert len(graph) > 3, f"the {part}'s modules were not found"
        cycle = cycle_in(graph)
        assert cycle is None, f"import cycle in the {part}: {' -> '.join(cycle)}"


def test_a_cycle_is_found() -> None:
    assert cycle_in({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert cycle_in({"a": {"b"}, "b": set()}) is None
