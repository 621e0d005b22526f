"""Grading on a Dask cluster: each notebook a task on the cluster's workers.

`course-grade grade --scheduler ADDRESS` hands the execution of each sanitized notebook to a
Dask worker instead of the local process pool; everything else (sanitizing, saving grades,
feedback, records, the report) stays in the grading process, which remains the gradebook's
only writer. Dask may run a task twice (a worker lost mid-task), so a task writes nothing
that lasts: it returns the executed notebook and the files its kernel made, and the client
records them once.

A task carries what its kernel needs, with no shared filesystem: the notebook's JSON, the
files of its staging folder, the kernel's limits and the course's configuration. On the
worker it runs in the same `NotebookRunner` as locally, under a sandbox policy the worker
builds for itself (its own Python paths and cgroup hierarchy) from the grader's limits.

Failures: a task whose kernel kills its worker is run again on another worker until the
scheduler's `allowed-failures`, then graded as a dead kernel (`WorkerKilled`); a worker lost
mid-batch costs nothing (the scheduler runs its tasks elsewhere); an infrastructure problem
(a worker with other package versions, or without the sandbox) is an `InfrastructureFailure`
or a `ClusterError`, never a grade.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
import uuid
from concurrent.futures import BrokenExecutor, CancelledError, Future
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import dask
from distributed import Client, KilledWorker, get_worker
from distributed.versions import get_package_info, optional_packages, required_packages
from traitlets.config import Config

from autograder.course import Course, Submission
from autograder.execute import ExecutionResult, InfrastructureFailure, NotebookRunner
from autograder.feedback import feedback_exporter, write_feedback
from autograder.gradebook import GradingError, NotebookJob
from autograder.pipeline import kernel_scratch
from autograder.safe_files import read_file_no_follow, write_file_no_follow
from autograder.sandbox import SandboxPolicy, make_policy, sandbox_problem

RESOURCE = "KERNEL"  # the worker resource one running notebook takes
# What a worker must have in the grader's versions, besides Dask's own packages.
COURSE_PACKAGES = (
    "sqlalchemy-sessions-by-example",
    "nbgrader",
    "nbclient",
    "nbformat",
    "jupyter_client",
    "ipykernel",
    "sqlalchemy",
    "aiosqlite",
    "greenlet",
    "psycopg",
)
CHECKED_PACKAGES = (*required_packages, *optional_packages, *COURSE_PACKAGES)
CONNECT_SECONDS = 30  # to reach the scheduler, then to see a first worker
SLOTS_REFRESH_SECONDS = 5.0
HOW_TO_START = (
    "start each worker in the course's environment with "
    f"`dask worker ADDRESS --nthreads 1 --resources {RESOURCE}=1`"
)


class ClusterError(GradingError):
    """The cluster cannot grade (unreachable, no worker, other versions, no sandbox):
    nothing is graded."""


class WorkerKilled(Exception):
    """A notebook whose kernel killed every worker that ran it: graded as a dead kernel."""


@dataclass(frozen=True)
class KernelLimits:
    """The grader's limits of one kernel, which each worker turns into its own policy."""

    memory_bytes: int
    cpu_seconds: int
    processes: int
    disk_bytes: int
    isolate: bool

    @classmethod
    def of(cls, policy: SandboxPolicy) -> KernelLimits:
        return cls(
            policy.memory_bytes,
            policy.cpu_seconds,
            policy.processes,
            policy.disk_bytes,
            policy.isolate,
        )

    def policy(self) -> SandboxPolicy:
        """This machine's policy with these limits (its Python, its cgroups)."""
        return make_policy(
            self.memory_bytes, self.cpu_seconds, self.processes, self.disk_bytes, self.isolate
        )


@dataclass(frozen=True)
class NotebookTask:
    """Everything a worker needs to execute one notebook."""

    notebook_json: str
    files: dict[str, bytes]  # the staging folder's files, by relative path
    modules: tuple[str, ...]  # what the test cells import
    limits: KernelLimits
    config: Config
    versions: dict[str, str | None]  # the grader's packages (CHECKED_PACKAGES)


@dataclass(frozen=True)
class TaskResult:
    """An executed notebook and the files its kernel made or changed."""

    execution: ExecutionResult
    files: dict[str, bytes]


def read_folder(folder: Path) -> dict[str, bytes]:
    """Every regular file below `folder`, by path relative to it (links are not followed)."""
    files = {}
    for parent, folders, names in os.walk(folder):
        folders.sort()
        for name in sorted(names):
            path = Path(parent, name)
            files[path.relative_to(folder).as_posix()] = read_file_no_follow(path, folder)
    return files


def write_folder(folder: Path, files: dict[str, bytes]) -> None:
    """Write `files` (relative paths) below `folder`, never outside it nor through a link."""
    for name, content in files.items():
        relative = PurePosixPath(name)
        if relative.is_absolute() or ".." in relative.parts or not relative.parts:
            raise ValueError(f"{name!r} is not a path inside the kernel's folder")
        write_file_no_follow(folder / relative, content, folder)


def version_differences(grader: dict[str, str | None], worker: dict[str, str | None]) -> list[str]:
    """What a machine lacks or has in another version than the grader, in words."""
    differences = []
    for package, wanted in grader.items():
        found = worker.get(package)
        if found == wanted:
            continue
        if found is None:
            differences.append(f"lacks {package} (the grader has {wanted})")
        elif wanted is None:
            differences.append(f"has {package} {found}, which the grader lacks")
        else:
            differences.append(f"has {package} {found} (the grader has {wanted})")
    return differences


_runners: dict[int, tuple[tuple[KernelLimits, Config], NotebookRunner]] = {}
_runners_lock = threading.Lock()


def _runner(limits: KernelLimits, config: Config) -> NotebookRunner:
    """This worker thread's runner (kept between tasks, so the next kernel starts early)."""
    settings = (limits, config)
    thread = threading.get_ident()
    with _runners_lock:
        kept = _runners.get(thread)
    if kept is not None and kept[0] == settings:
        return kept[1]
    if kept is not None:
        kept[1].close()
    policy = limits.policy()
    if limits.isolate and (problem := sandbox_problem(policy, kernel_scratch() / "probe")):
        raise InfrastructureFailure(f"the Dask worker cannot sandbox kernels: {problem}")
    runner = NotebookRunner(policy, config, prefetch=True, scratch=kernel_scratch())
    with _runners_lock:
        _runners[thread] = (settings, runner)
    return runner


def close_runners() -> None:
    """Stop this worker's spare kernels (run on every worker when a grading run ends)."""
    with _runners_lock:
        runners = [runner for _, runner in _runners.values()]
        _runners.clear()
    for runner in runners:
        runner.close()


def run_notebook(task: NotebookTask) -> TaskResult:
    """On a worker: execute the task's notebook in a sandboxed kernel, in a folder of its own."""
    differences = version_differences(task.versions, get_package_info(CHECKED_PACKAGES))
    if differences:
        raise InfrastructureFailure(
            f"the Dask worker {get_worker().address} {'; '.join(differences)}: {HOW_TO_START}"
        )
    runner = _runner(task.limits, task.config)
    folder = Path(kernel_scratch(), f"task-{uuid.uuid4().hex}")
    folder.mkdir()
    try:
        write_folder(folder, task.files)
        execution = runner.run(task.notebook_json, str(folder), task.modules)
        after = read_folder(folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    changed = {name: data for name, data in after.items() if task.files.get(name) != data}
    return TaskResult(execution, changed)


def probe_worker(limits: KernelLimits) -> tuple[str | None, str]:
    """On a worker: why it cannot sandbox a kernel (None if it can), and how it limits one."""
    policy = limits.policy()
    problem = sandbox_problem(policy, kernel_scratch() / "probe") if limits.isolate else None
    return problem, policy.describe()


def _set_allowed_failures(dask_scheduler: object, allowed: int) -> None:
    dask_scheduler.allowed_failures = allowed  # type: ignore[attr-defined]


class DaskWorkers:
    """The workers of a Dask cluster, as the grading run's `Workers` (see pipeline.py)."""

    def __init__(
        self, course: Course, address: str, policy: SandboxPolicy, allowed_failures: int
    ) -> None:
        self.course = course
        self.address = address
        self.limits = KernelLimits.of(policy)
        self.versions = get_package_info(CHECKED_PACKAGES)
        self.exporter = feedback_exporter(course)
        self._running: dict[Future, object] = {}
        self._slots = (-SLOTS_REFRESH_SECONDS, 0)
        try:
            with dask.config.set({"distributed.comm.timeouts.connect": CONNECT_SECONDS}):
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
            f"grading on the Dask cluster at {self.address}: {len(sandboxes)} workers, "
            f"{self.slots} notebooks at once; a notebook that kills its worker runs at most "
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
            self.course.config,
            self.versions,
        )
        submission = job.submission
        key = f"grade-{submission.student}-{submission.assignment}-{job.notebook}-{uuid.uuid4()}"
        remote = self.client.submit(
            run_notebook, task, key=key, resources={RESOURCE: 1}, pure=False
        )
        done: Future = Future()
        self._running[done] = remote
        remote.add_done_callback(lambda finished: self._deliver(done, Path(job.workdir), finished))
        return done

    def _deliver(self, done: Future, workdir: Path, remote: object) -> None:
        """In Dask's callback thread: bring the task's files home and complete `done`."""
        self._running.pop(done, None)
        try:
            result: TaskResult = remote.result()  # type: ignore[attr-defined]
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
        except ImportError as error:
            done.set_exception(
                InfrastructureFailure(f"a Dask worker cannot run the grading task ({error})")
            )
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
        for remote in self._running.values():
            remote.cancel()  # type: ignore[attr-defined]
        try:
            self.client.run(close_runners)
        finally:
            self.client.close()

    def __enter__(self) -> DaskWorkers:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
