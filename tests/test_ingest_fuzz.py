"""Fuzzing the webhook endpoints: every node of every real payload in
``tests/fixtures/`` is mutated (type swaps, huge numbers, NUL, lone
surrogates, control characters, very long strings), signed as its CI system
would sign it, and POSTed over loopback to a real hub with a real store. No
mutant may get a 5xx or crash a parser, a 400 for a type swap must name the
field, whatever is stored must be clean, and nothing unprintable is logged.

The mutations come from ``random.Random(SEED)``; set ``BUILDNOTIFY_FUZZ_SEED``
to try others. A failure names the seed, provider, fixture, path and value.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import re
import time
from collections.abc import Callable, Iterator
from typing import Any

import treq
from twisted.internet import reactor
from twisted.web.client import HTTPConnectionPool

from buildnotify.store.schema import events as events_table
from tests.ingest_support import FIXTURES, capture_logs, signed, signing_configs
from tests.support import RunningHub, per_backend

SEED = int(os.environ.get("BUILDNOTIFY_FUZZ_SEED", "20261129"))
ROUNDS = 2  # mutants per node: about 1,300 each, a few seconds per backend

#: The event each fixture is, for providers that name it in a header.
EVENTS = {
    "github": {
        "check_suite_completed": "check_suite",
        "ping": "ping",
        "status_failure": "status",
        "workflow_job_completed": "workflow_job",
        "workflow_run_completed_failure": "workflow_run",
        "workflow_run_in_progress": "workflow_run",
    },
    "gitlab": {"job": "Job Hook", "pipeline": "Pipeline Hook"},
}

#: Where a payload names its run and its delivery: each mutant gets fresh
#: values there, so that it is a new run and a new delivery, and reaches the
#: store instead of being answered as a duplicate or a stale update.
IDENTITIES = (
    "id",
    "build_id",
    "number",
    "pipeline_id",
    "build.id",
    "build.number",
    "check_suite.id",
    "job.id",
    "object_attributes.id",
    "workflow.id",
    "workflow_job.run_id",
    "workflow_run.id",
)

Path = tuple[str | int, ...]
Mutation = Callable[[random.Random, Any], Any]

HUGE = (2**63, 2**64, 10**30, -(2**63) - 1, -(10**30), -1, 0)
CONTROLS = ("\x00", "\x01", "\x1b[31m", "\n", "\r\n", "\t", "\x7f", "\x85", "\u2028")


def _insert(rng: random.Random, value: Any, text: str) -> str:
    base = value if isinstance(value, str) else "value"
    at = rng.randrange(len(base) + 1)
    return base[:at] + text + base[at:]


MUTATIONS: dict[str, Mutation] = {
    "object": lambda rng, v: {"name": "x", "id": 1},
    "list": lambda rng, v: [v, "x"],
    "empty list": lambda rng, v: [],
    "number": lambda rng, v: rng.choice([7, -7, 1.5]),
    "bool": lambda rng, v: rng.choice([True, False]),
    "null": lambda rng, v: None,
    "empty string": lambda rng, v: "",
    "digits": lambda rng, v: rng.choice(["12345", "0012", " 12", "1e3", "-4", "٣"]),
    "word": lambda rng, v: "twelve",
    "huge number": lambda rng, v: rng.choice(HUGE),
    "huge digits": lambda rng, v: str(rng.choice(HUGE)),
    "odd float": lambda rng, v: rng.choice([1e308, -1e308, float("nan"), float("inf")]),
    "NUL": lambda rng, v: _insert(rng, v, "\x00"),
    "lone surrogate": lambda rng, v: _insert(rng, v, rng.choice(["\ud800", "\udfff", "\udc80x"])),
    "control": lambda rng, v: _insert(rng, v, rng.choice(CONTROLS)),
    "long string": lambda rng, v: ((v if isinstance(v, str) and v else "x") * 10_000)[:10_000],
}


#: Mutations that change a value's type: a 400 for one must name the field.
TYPE_SWAPS = {
    "object",
    "list",
    "empty list",
    "number",
    "bool",
    "null",
    "empty string",
    "huge number",
    "odd float",
}


def paths(data: Any, prefix: Path = ()) -> Iterator[Path]:
    """Every node below ``data``, parents before children."""
    items = data.items() if isinstance(data, dict) else enumerate(data) if isinstance(data, list) else ()
    for key, value in items:
        yield (*prefix, key)
        yield from paths(value, (*prefix, key))


def get(data: Any, path: Path) -> Any:
    for key in path:
        data = data[key]
    return data


def put(data: Any, path: Path, value: Any) -> None:
    get(data, path[:-1])[path[-1]] = value


def freshen(data: dict[str, Any], serial: int) -> None:
    """New run and delivery ids, of the type the payload uses there."""
    for dotted in IDENTITIES:
        path = tuple(dotted.split("."))
        try:
            old = get(data, path)
        except (KeyError, TypeError):
            continue
        put(data, path, 10_000_000 + serial if isinstance(old, int) else f"fuzz-{serial}")


def event_of(provider: str, fixture: str) -> str | None:
    names = EVENTS.get(provider, {})
    return next((event for prefix, event in names.items() if fixture.startswith(prefix)), None)


@dataclasses.dataclass
class Mutant:
    provider: str
    fixture: str
    path: Path
    kind: str
    value: Any
    body: bytes

    def named_in(self, answer: bytes) -> bool:
        """Whether an error names the mutated field or an object holding it."""
        error = json.loads(answer)["error"]
        return any(".".join(map(str, self.path[:depth])) in error for depth in range(1, len(self.path) + 1))

    def __str__(self) -> str:
        shown = repr(self.value)
        shown = shown if len(shown) <= 60 else f"{shown[:57]}... ({len(shown)} chars)"
        where = ".".join(map(str, self.path))
        return f"{self.provider}/{self.fixture} {where} <- {self.kind}: {shown}"


def mutants(seed: int) -> list[Mutant]:
    """ROUNDS mutants, of different kinds, per node of every fixture; each a
    new run and a new delivery."""
    rng = random.Random(seed)
    out = []
    for file in sorted(FIXTURES.glob("*/*.json")):
        provider, fixture = file.parent.name, file.stem
        for path in list(paths(json.loads(file.read_bytes()))):
            for kind in rng.sample(sorted(MUTATIONS), ROUNDS):
                data = json.loads(file.read_bytes())
                freshen(data, len(out))
                value = MUTATIONS[kind](rng, get(data, path))
                put(data, path, value)
                out.append(Mutant(provider, fixture, path, kind, value, json.dumps(data).encode()))
    return out


#: What the schema lets each stored text column hold.
LIMITS = {c.name: c.type.length for c in events_table.columns if getattr(c.type, "length", None)}
ODD = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")


class FuzzTests:
    backend = "sqlite"

    async def test_no_mutant_of_a_real_payload_gets_a_5xx(self) -> None:
        logged = capture_logs(self)
        hub = await RunningHub.start(self, self.backend, providers=signing_configs())
        pool = HTTPConnectionPool(reactor, persistent=True)
        self.addCleanup(pool.closeCachedConnections)
        started = time.monotonic()
        problems, answered = [], {}
        cases = mutants(SEED)
        for serial, mutant in enumerate(cases):
            event = event_of(mutant.provider, mutant.fixture)
            headers, path = signed(mutant.provider, mutant.body, event, delivery=f"fuzz-{serial}")
            url = f"{hub.url}/hooks/{mutant.provider}" + (f"/{path}" if path else "")
            response = await treq.post(url, data=mutant.body, headers=headers, pool=pool)
            raw = await response.content()
            answered[response.code] = answered.get(response.code, 0) + 1
            if response.code >= 500 or b"could not read this" in raw:
                problems.append(f"{response.code} {raw[:200]!r} for {mutant}")
            elif response.code == 400 and mutant.kind in TYPE_SWAPS and not mutant.named_in(raw):
                problems.append(f"400 not naming the field: {raw[:200]!r} for {mutant}")
        stored = await hub.events()
        for event in stored:
            for name, value in event.to_dict().items():
                values = value.values() if isinstance(value, dict) else [value]
                for text in (v for v in values if isinstance(v, str)):
                    column = f"author_{name}" if isinstance(value, dict) else name
                    if ODD.search(text) or len(text) > LIMITS.get(column, len(text)):
                        problems.append(f"stored {column} {text[:80]!r} ({len(text)} chars)")
        for record in logged:
            if not record.getMessage().isprintable() or record.exc_info:
                problems.append(
                    f"logged {record.getMessage()[:200]!r}" + (" with a traceback" if record.exc_info else "")
                )
        elapsed = time.monotonic() - started
        summary = (
            f"seed {SEED}: {len(cases)} mutants on {self.backend} in {elapsed:.1f}s, "
            f"answers {dict(sorted(answered.items()))}, {len(stored)} events stored"
        )
        print(summary)
        self.assertEqual(problems, [], f"{summary}; {len(problems)} problems:\n" + "\n".join(problems[:30]))
        self.assertGreater(len(stored), len(cases) // 4, summary)  # most mutants reach the store


per_backend(FuzzTests, globals())
