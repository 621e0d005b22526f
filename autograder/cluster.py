"""Grading on a Dask cluster: each notebook a task on the cluster's workers.

`course-grade grade --scheduler ADDRESS` hands the execution of each sanitized notebook to a
Dask worker instead of the local process pool; everything else (sanitizing, saving grades,
feedback, records, the report) stays in the grading process, which remains the gradebook's
only writer. Dask may run a task twice (a worker lost mid-task), so a task writes nothing
that lasts: it returns the executed notebook and the files its kernel made, and the client
records them once.

A task carries what its kernel needs, with no shared filesystem: the notebook's JSON, the
files of its staging folder, the kernel's limits and the course's configuration; what the
worker does with it is autograder.cluster_worker.

Failures: a task whose kernel kills its worker is run again on another worker until the
scheduler's `allowed-failures`, then graded as a dead kernel (`WorkerKilled`); a worker lost
mid-batch costs nothing (the scheduler runs its tasks elsewhere); an infrastructure problem
(a worker with other package versions, or without the sandbox) is a `ClusterError` before
anything is graded, or, for a worker that joins later, an `InfrastructureFailure` (the worker
refuses the task, even one that cannot import the autograder: see cluster_worker): never a grade.
"""

from __future__ import annotations

import pickle
import time
import uuid
from concurrent.futures import BrokenExecutor, CancelledError, Future
from pathlib import Path

from distributed import Client, KilledWorker, Scheduler
from distributed import Future as DaskFuture
from distributed.versions import required_packages

from autograder.cluster_worker import (
    COURSE_PACKAGES,
    HOW_TO_START,
    RESOURCE,
    RUN_TASK,
    KernelLimits,
    NotebookTask,
    TaskResult,
    WorkerUnfit,
    close_runners,
    package_versions,
    probe_worker,
    read_folder,
    version_differences,
    write_folder,
)
from autograder.course import Course, Submission
from autograder.execute import InfrastructureFailure
from autograder.feedback import feedback_exporter, write_feedback
from autograder.gradebook import GradingError, NotebookJob
from autograder.sandbox import SandboxPolicy

CONNECT_SECONDS = 30  # to reach the scheduler, then to see a first worker
SLOTS_REFRESH_SECONDS = 5.0


class ClusterError(GradingError):
    """The cluster cannot grade (unreachable, no worker, other versions, no sandbox):
    nothing is graded."""


class WorkerKilled(Exception):
    """A notebook whose kernel killed every worker that ran it: graded as a dead kernel."""


def _set_allowed_failures(dask_scheduler: Scheduler, allowed: int) -> None:
    """On the scheduler: how often a task may kill its worker before it raises KilledWorker."""
    dask_scheduler.allowed_failures = allowed


class DaskWorkers:
    """The workers of a Dask cluster, as the grading run's `Workers` (see pipeline.py)."""

    def __init__(
        self, course: Course, address: str, policy: SandboxPolicy, allowed_failures: int
    ) -> None:
        self.course = course
        self.address = address
        self.limits = KernelLimits.of(policy)
        self.config = pickle.dumps(course.config)
        self.versions = package_versions()
        self.exporter = feedback_exporter(course)
        self._running: dict[Future, DaskFuture] = {}
        self._slots = (-SLOTS_REFRESH_SECONDS, 0)
        try:
            self.client = Client(address, timeout=CONNECT_SECONDS, set_as_default=False)
        except (OSError, TimeoutError) as error:
            raise ClusterError(f"cannot reach the Dask scheduler at {address}: {error}") from None
        try:
            self.description = self._check(allowed_failures)
        except BaseException:
            self.client.close()
            raise

    def _check(self, allowed_failures: int) -> str:
        """Check the workers (versions, sandbox, resources); say how the cluster grades."""
        try:
            self.client.wait_for_workers(1, timeout=CONNECT_SECONDS)
        except TimeoutError:
            raise ClusterError(
                f"the Dask scheduler at {self.address} has no worker after "
                f"{CONNECT_SECONDS} s: {HOW_TO_START}"
            ) from None
        self._check_versions()
        sandboxes = self.client.run(probe_worker, self.limits, on_error="return")
        unsafe = [
            f"{worker} ({answer if isinstance(answer, Exception) else answer[0]})"
            for worker, answer in sandboxes.items()
            if isinstance(answer, Exception) or answer[0]
        ]
        if unsafe:
            raise ClusterError(
                f"these Dask workers cannot run kernels in the sandbox: {'; '.join(unsafe)}. "
                "Install bubblewrap there, or grade with --no-sandbox (student code then runs "
                "unisolated on the workers). Nothing was graded."
            )
        if not self.slots:
            raise ClusterError(
                f"no worker of the Dask scheduler at {self.address} offers the {RESOURCE} "
                f"resource: {HOW_TO_START}. Nothing was graded."
            )
        self.client.run_on_scheduler(_set_allowed_failures, allowed=allowed_failures)
        limits = sorted({description for _, description in sandboxes.values()})
        return (
            f"grading on the Dask cluster at {self.address}: workers {len(sandboxes)}, "
            f"notebooks at once {self.slots}; a notebook that kills its worker runs at most "
            f"{allowed_failures + 1} times; on the workers: {'; '.join(limits)}"
        )

    def _check_versions(self) -> None:
        """A ClusterError naming each machine whose packages differ from the grader's.

        `get_versions(check=True)` raises only for Dask's own packages and merely warns about
        the others (nbgrader, SQLAlchemy, ...): the versions are compared here instead."""
        versions = self.client.get_versions(packages=list(COURSE_PACKAGES))
        dask_only = {name: self.versions.get(name) for name in ("python", *required_packages)}
        found = []
        # the scheduler only runs Dask: only Dask's own packages matter there
        if differences := version_differences(dask_only, versions["scheduler"]["packages"]):
            found.append(f"the scheduler {', '.join(differences)}")
        for worker, info in versions["workers"].items():
            if differences := version_differences(self.versions, info["packages"]):
                found.append(f"the worker {worker} {', '.join(differences)}")
        if found:
            raise ClusterError(
                f"the Dask cluster does not run the grader's environment: {'; '.join(found)}. "
                "Every worker must run in the course's environment (the same packages, in the "
                f"same versions): {HOW_TO_START}. Nothing was graded."
            )

    @property
    def slots(self) -> int:
        """How many notebooks the cluster runs at once (its workers' KERNEL resources)."""
        checked, slots = self._slots
        now = time.monotonic()
        if now - checked > SLOTS_REFRESH_SECONDS:
            workers = self.client.scheduler_info(n_workers=-1)["workers"].values()
            slots = int(sum(worker.get("resources", {}).get(RESOURCE, 0) for worker in workers))
            self._slots = (now, slots)
        return slots

    def execute(self, job: NotebookJob) -> Future:
        """Run `job` on a worker; the future's result is its ExecutionResult, and the files
        the kernel made are in the job's folder by then."""
        task = NotebookTask(
            job.notebook_json,
            read_folder(Path(job.workdir)),
            job.modules,
            self.limits,
            self.config,
            self.versions,
        )
        submission = job.submission
        key = f"grade-{submission.student}-{submission.assignment}-{job.notebook}-{uuid.uuid4()}"
        remote = self.client.submit(
            RUN_TASK, pickle.dumps(task), key=key, resources={RESOURCE: 1}, pure=False
        )
        done: Future = Future()
        self._running[done] = remote
        remote.add_done_callback(lambda finished: self._deliver(done, Path(job.workdir), finished))
        return done

    def _deliver(self, done: Future, workdir: Path, remote: DaskFuture) -> None:
        """In Dask's callback thread: bring the task's files home and complete `done`."""
        self._running.pop(done, None)
        try:
            result: TaskResult = remote.result()
            write_folder(workdir, result.files)
        except KilledWorker as error:
            done.set_exception(
                WorkerKilled(
                    f"its kernel killed the grading worker each of the "
                    f"{error.allowed_failures + 1} times it ran (a crash, or the worker's "
                    "memory limit): a dead kernel"
                )
            )
        except CancelledError as error:
            done.set_exception(BrokenExecutor(f"the Dask cluster lost the task ({error})"))
        except (WorkerUnfit, ImportError) as error:  # a worker that joined after the check
            done.set_exception(InfrastructureFailure(str(error)))
        except BaseException as error:
            done.set_exception(error)
        else:
            done.set_result(result.execution)

    def feedback(self, submission: Submission) -> Future:
        """Render the submission's feedback here (the course folder is the grader's)."""
        done: Future = Future()
        try:
            done.set_result(len(write_feedback(self.course, submission, self.exporter)))
        except Exception as error:
            done.set_exception(error)
        return done

    def close(self) -> None:
        """Stop the workers' spare kernels and disconnect."""
        for remote in list(self._running.values()):
            remote.cancel()
        try:
            self.client.run(close_runners, on_error="ignore")
        except OSError:  # the scheduler is gone: so are the workers' tasks
            pass
        finally:
            self.client.close()

    def __enter__(self) -> DaskWorkers:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
