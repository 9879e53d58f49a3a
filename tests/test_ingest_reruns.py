"""Retries, re-runs and rebuilds, per CI system, over real HTTP into a real
store: a red build whose re-run passes ends ``fixed``, whichever way the CI
names the re-run (a higher attempt, a later timestamp under the same run, or
a new build number), also when two deliveries carry the same CI timestamp."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from tests.ingest_support import Fixtures, signed, signing_configs
from tests.support import RunningHub, per_backend

Payload = dict[str, Any]


def payload(provider: str, fixture: str, edit: Callable[[Payload], object] = lambda d: None) -> Payload:
    data = json.loads(Fixtures(provider)(fixture))
    edit(data)
    return data


LATER = "2024-05-14T12:58:02.411Z"


def circleci(fixture: str, part: str, **changes: object) -> Payload:
    """A CircleCI event with ``changes`` to its workflow or job, and an event id of its own."""

    def edit(d: Payload) -> None:
        d["id"] = f"event-{part}-{changes['id']}"
        d[part].update(changes)

    return payload("circleci", fixture, edit)


class RerunTests:
    backend = "sqlite"

    async def send(self, provider: str, *payloads: Payload, event: str | None = None) -> list[str]:
        """POST each payload as a new delivery; what became of each."""
        outcomes = []
        for data in payloads:
            body = json.dumps(data).encode()
            self.deliveries += 1
            headers, path = signed(provider, body, event, delivery=f"delivery-{self.deliveries}")
            code, answer = await self.hub.post(provider, body, headers, path)
            self.assertEqual(code, 200, answer)
            outcomes.append("duplicate" if answer["duplicate"] else "stored" if answer["stored"] else "stale")
        return outcomes

    async def history(self, pipeline: str) -> list[tuple[str, str | None]]:
        """(status, transition) of every stored event of ``pipeline``, oldest first."""
        events = await self.hub.events()
        return [
            (e.status.value, e.transition and e.transition.value) for e in events if e.pipeline == pipeline
        ]

    async def start(self) -> None:
        self.hub = await RunningHub.start(self, self.backend, providers=signing_configs())
        self.deliveries = 0

    # -- GitLab ---------------------------------------------------------------------------

    async def test_gitlab_retried_job_that_passes_is_fixed(self) -> None:
        await self.start()

        def job(build_id: int, retries: int, status: str, started: str, finished: str | None) -> Payload:
            def edit(d: Payload) -> None:
                d.update(build_id=build_id, retries_count=retries, build_status=status)
                d.update(build_started_at_iso=started, build_finished_at_iso=finished)
                d.update(build_started_at=started, build_finished_at=finished)

            return payload("gitlab", "job_failed", edit)

        outcomes = await self.send(
            "gitlab",
            job(5521977, 0, "failed", "2024-05-14T11:51:05Z", "2024-05-14T11:57:40Z"),
            job(5521990, 1, "running", "2024-05-14T12:01:00Z", None),  # a new job id, same pipeline
            job(5521990, 1, "success", "2024-05-14T12:01:00Z", "2024-05-14T12:07:31Z"),
        )
        self.assertEqual(outcomes, ["stored"] * 3)
        self.assertEqual(
            await self.history("test / rspec"),
            [("failure", "failed"), ("running", "started"), ("success", "fixed")],
        )

    async def test_gitlab_deliveries_within_one_second_are_told_apart(self) -> None:
        """Older GitLab versions time jobs to the second: a job that fails
        at once sends "running" and "failed" with the same timestamp, and its
        retry may too. The phase orders the first two, the retry count the rest."""
        await self.start()
        second = "2022-11-03 08:15:44 UTC"

        def job(retries: int, status: str) -> Payload:
            finished = second if status != "running" else None
            return payload(
                "gitlab",
                "job_running",
                lambda d: d.update(
                    retries_count=retries,
                    build_status=status,
                    build_started_at=second,
                    build_finished_at=finished,
                ),
            )

        outcomes = await self.send(
            "gitlab",
            job(0, "failed"),
            job(0, "running"),  # arrives after the result it precedes
            job(1, "success"),
            job(1, "running"),
        )
        self.assertEqual(outcomes, ["stored", "stale", "stored", "stale"])
        self.assertEqual(await self.history("build / compile"), [("failure", "failed"), ("success", "fixed")])

    async def test_gitlab_retried_pipeline_that_passes_is_fixed(self) -> None:
        """A retried pipeline keeps its id: its later finish makes it newer."""
        await self.start()

        def pipeline(status: str, finished: str | None) -> Payload:
            return payload(
                "gitlab",
                "pipeline_failed",
                lambda d: d["object_attributes"].update(status=status, finished_at=finished),
            )

        outcomes = await self.send(
            "gitlab",
            pipeline("running", None),
            pipeline("failed", "2024-05-14 12:07:45 UTC"),
            pipeline("running", None),  # the retry starts: nothing newer than the failure to show
            pipeline("success", "2024-05-14 12:21:09 UTC"),
            pipeline("failed", "2024-05-14 12:07:45 UTC"),  # a late copy of the first result
        )
        self.assertEqual(outcomes, ["stored", "stored", "stale", "stored", "stale"])
        self.assertEqual(
            await self.history("MR pipeline"),
            [("running", "started"), ("failure", "failed"), ("success", "fixed")],
        )

    # -- Buildkite ------------------------------------------------------------------------

    async def test_buildkite_rebuild_that_passes_is_fixed_even_with_the_same_timestamps(self) -> None:
        """A rebuild is a new build with the next number; the number orders
        it, even when the CI's timestamps are the same as the original's."""
        await self.start()
        failed = payload("buildkite", "build_finished_failed")

        def rebuild(state: str, event: str) -> Payload:
            def edit(d: Payload) -> None:
                d["event"] = event
                d["build"].update(id="018f7a70-0000-4000-8000-000000001410", number=1410, state=state)
                d["build"]["rebuilt_from"] = {"id": failed["build"]["id"], "number": 1409}
                if state == "running":
                    d["build"]["finished_at"] = None

            return payload("buildkite", "build_finished_failed", edit)

        outcomes = await self.send(
            "buildkite", failed, rebuild("running", "build.running"), rebuild("passed", "build.finished")
        )
        self.assertEqual(outcomes, ["stored"] * 3)
        self.assertEqual(
            await self.history("widget"),
            [("failure", "failed"), ("running", "started"), ("success", "fixed")],
        )

    async def test_buildkite_retried_job_that_passes_is_fixed(self) -> None:
        await self.start()

        def job(job_id: str, retries: int, state: str, finished: str) -> Payload:
            return payload(
                "buildkite",
                "job_finished",
                lambda d: d["job"].update(
                    id=job_id,
                    retries_count=retries,
                    state=state,
                    exit_status=int(state != "passed"),
                    finished_at=finished,
                ),
            )

        outcomes = await self.send(
            "buildkite",
            job("018f7a66-0c1d-4b5e-9f2a-3b4c5d6e7f80", 0, "failed", "2024-05-14T12:09:01.644Z"),
            job("018f7a6f-1111-4b5e-9f2a-3b4c5d6e7f81", 1, "passed", "2024-05-14T12:14:20.002Z"),
        )
        self.assertEqual(outcomes, ["stored"] * 2)
        self.assertEqual(
            await self.history("widget / :rspec: Specs"), [("failure", "failed"), ("success", "fixed")]
        )

    # -- Jenkins --------------------------------------------------------------------------

    async def test_jenkins_rebuild_that_passes_is_fixed_even_with_the_same_timestamp(self) -> None:
        await self.start()

        def build(number: int, phase: str, status: str | None = None) -> Payload:
            def edit(d: Payload) -> None:
                d["build"].update(number=number, phase=phase, status=status)
                d["build"]["full_url"] = (
                    f"https://jenkins.acme.example/job/acme/job/widget/job/main/{number}/"
                )

            return payload("jenkins", "completed_failure", edit)

        outcomes = await self.send(
            "jenkins",
            build(42, "COMPLETED", "FAILURE"),
            build(43, "STARTED"),
            build(43, "COMPLETED", "SUCCESS"),  # the same build.timestamp as #42's result
            build(43, "FINALIZED", "SUCCESS"),
        )
        self.assertEqual(outcomes, ["stored", "stored", "stored", "duplicate"])
        self.assertEqual(
            await self.history("main"), [("failure", "failed"), ("running", "started"), ("success", "fixed")]
        )

    # -- CircleCI -------------------------------------------------------------------------

    async def test_circleci_rerun_workflow_that_passes_is_fixed(self) -> None:
        """ "Rerun workflow" makes a new workflow id in the same pipeline (same
        number); its later finish makes it newer."""
        await self.start()
        outcomes = await self.send(
            "circleci",
            circleci("workflow_completed_failed", "workflow", id="fda08377", status="failed"),
            circleci(
                "workflow_completed_failed", "workflow", id="0b8f3e52", status="success", stopped_at=LATER
            ),
        )
        self.assertEqual(outcomes, ["stored"] * 2)
        self.assertEqual(
            await self.history("build-test-deploy"), [("failure", "failed"), ("success", "fixed")]
        )

    async def test_circleci_rerun_job_that_passes_is_fixed(self) -> None:
        """A re-run job gets a new id and the next job number."""
        await self.start()
        outcomes = await self.send(
            "circleci",
            circleci("job_completed_success", "job", id="8b91f9a8", number=1001, status="failed"),
            circleci(
                "job_completed_success", "job", id="2c7e1d40", number=1004, status="success", stopped_at=LATER
            ),
        )
        self.assertEqual(outcomes, ["stored"] * 2)
        [failed, rerun] = [e for e in await self.hub.events() if e.provider == "circleci"]
        self.assertEqual([failed.transition.value, rerun.transition.value], ["failed", "fixed"])

    # -- GitHub ---------------------------------------------------------------------------

    async def test_github_rerun_workflow_that_passes_is_fixed(self) -> None:
        await self.start()

        def run(attempt: int, status: str, conclusion: str | None) -> Payload:
            return payload(
                "github",
                "workflow_run_completed_failure",
                lambda d: d["workflow_run"].update(run_attempt=attempt, status=status, conclusion=conclusion),
            )

        outcomes = await self.send(
            "github",
            run(1, "completed", "failure"),
            run(2, "in_progress", None),  # the same updated_at as the failure: the attempt orders it
            run(2, "completed", "success"),
            event="workflow_run",
        )
        self.assertEqual(outcomes, ["stored"] * 3)
        self.assertEqual(
            await self.history("CI"), [("failure", "failed"), ("running", "started"), ("success", "fixed")]
        )

    async def test_github_rerequested_check_suite_and_rerun_status_that_pass_are_fixed(self) -> None:
        """Both keep their id (check suite id; sha and context): the later
        timestamp makes the re-run newer."""
        await self.start()

        def suite(conclusion: str, updated: str) -> Payload:
            return payload(
                "github",
                "check_suite_completed",
                lambda d: d["check_suite"].update(conclusion=conclusion, updated_at=updated),
            )

        def status(state: str, updated: str) -> Payload:
            return payload("github", "status_failure", lambda d: d.update(state=state, updated_at=updated))

        suites = await self.send(
            "github",
            suite("failure", "2024-05-14T11:24:02Z"),
            suite("success", "2024-05-14T11:41:17Z"),
            event="check_suite",
        )
        statuses = await self.send(
            "github",
            status("failure", "2024-05-14T09:31:07+00:00"),
            status("pending", "2024-05-14T09:40:00+00:00"),  # the re-run starts: not newer than a result
            status("success", "2024-05-14T09:44:51+00:00"),
            event="status",
        )
        self.assertEqual((suites, statuses), (["stored"] * 2, ["stored", "stale", "stored"]))
        events = await self.hub.events()
        self.assertEqual(
            [(e.pipeline, e.transition.value) for e in events],
            [
                ("Acme Lint", "failed"),
                ("Acme Lint", "fixed"),
                (events[2].pipeline, "failed"),
                (events[2].pipeline, "fixed"),
            ],
        )


per_backend(RerunTests, globals())
