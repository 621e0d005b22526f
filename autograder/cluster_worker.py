"""What a Dask worker runs for `course-grade grade --scheduler` (the client is autograder.cluster).

A worker that joins the cluster after the grader checked it may run another environment; it
must then refuse its task in words (never grade it, never die of it). Dask unpickles a task as
it reads the scheduler's message, and a worker that cannot import what the message names closes
its connection and stops: the scheduler counts that as the task killing its worker, the way it
counts a notebook that kills it. So the client sends `RUN_TASK`, whose code travels by value,
with the task pickled once more as bytes: on the worker it unpickles the task itself and turns
an ImportError (no `autograder`, say) into one that names the worker. This module loads with
the standard library and Dask alone, so a worker that lacks one of the course's other packages,
or has another version of one, still unpacks the task and says what differs (`WorkerUnfit`);
the grading code (nbgrader, the kernel's sandbox) is imported only once the versions match.

A task executes one notebook in the same `NotebookRunner` as local grading, under a sandbox
policy the worker builds for itself (its own Python paths and cgroup hierarchy) from the
grader's limits, in a folder of its own; it writes nothing that lasts and returns the executed
notebook with the files its kernel made or changed.
"""

from __future__ import annotations

import os
import pickle
import shutil
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from distributed import get_worker
from distributed.versions import get_package_info, optional_packages, required_packages

from autograder.safe_files import read_file_no_follow, write_file_no_follow

if TYPE_CHECKING:
    from autograder.execute import ExecutionResult, NotebookRunner
    from autograder.sandbox import SandboxPolicy

RESOURCE = "KERNEL"  # the worker resource one running notebook takes
# What a worker must have in the grader's versions, besides Dask's own packages.
COURSE_PACKAGES = (
    "sqlalchemy-sessions-by-example",
    "nbgrader",
    "nbclient",
    "nbformat",
    "jupyter_client",
    "ipykernel",
    "traitlets",
    "sqlalchemy",
    "aiosqlite",
    "greenlet",
    "psycopg",
)
CHECKED_PACKAGES = (*required_packages, *optional_packages, *COURSE_PACKAGES)
HOW_TO_START = (
    "start each worker in the course's environment with "
    f"`dask worker ADDRESS --nthreads 1 --resources {RESOURCE}=1`"
)


class WorkerUnfit(Exception):
    """The worker cannot grade (other package versions, no sandbox): not the notebook's fault."""


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
        from autograder.sandbox import make_policy

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
    config: bytes  # the course's traitlets Config, pickled (unpickled once versions match)
    versions: dict[str, str | None]  # the grader's packages (CHECKED_PACKAGES)


@dataclass(frozen=True)
class TaskResult:
    """An executed notebook and the files its kernel made or changed."""

    execution: ExecutionResult
    files: dict[str, bytes]


def package_versions() -> dict[str, str | None]:
    """This machine's versions of Python and of CHECKED_PACKAGES (None: not installed)."""
    return get_package_info(CHECKED_PACKAGES)


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


def _scratch() -> Path:
    from autograder.pipeline import kernel_scratch

    return kernel_scratch()


_runners: dict[int, tuple[tuple[KernelLimits, bytes], NotebookRunner]] = {}
_runners_lock = threading.Lock()


def _runner(limits: KernelLimits, config: bytes) -> NotebookRunner:
    """This worker thread's runner (kept between tasks, so the next kernel starts early)."""
    from autograder.execute import NotebookRunner
    from autograder.sandbox import sandbox_problem

    settings = (limits, config)
    thread = threading.get_ident()
    with _runners_lock:
        kept = _runners.get(thread)
    if kept is not None and kept[0] == settings:
        return kept[1]
    if kept is not None:
        kept[1].close()
    policy = limits.policy()
    if limits.isolate and (problem := sandbox_problem(policy, _scratch() / "probe")):
        raise WorkerUnfit(f"the Dask worker {get_worker().address} cannot sandbox: {problem}")
    runner = NotebookRunner(policy, pickle.loads(config), prefetch=True, scratch=_scratch())
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
    if differences := version_differences(task.versions, package_versions()):
        raise WorkerUnfit(
            f"the Dask worker {get_worker().address} {', '.join(differences)}: {HOW_TO_START}"
        )
    runner = _runner(task.limits, task.config)
    folder = Path(_scratch(), f"task-{uuid.uuid4().hex}")
    folder.mkdir()
    try:
        write_folder(folder, task.files)
        execution = runner.run(task.notebook_json, str(folder), task.modules)
        after = read_folder(folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    changed = {name: data for name, data in after.items() if task.files.get(name) != data}
    return TaskResult(execution, changed)


def _task_runner() -> Callable[[bytes], TaskResult]:
    """`run_notebook` behind a function that cloudpickle sends by value (its code, not its
    module's name: it is defined in a function), so that a worker without this module runs it."""
    how_to_start = HOW_TO_START

    def run_pickled_task(task: bytes) -> TaskResult:
        import pickle

        from distributed import get_worker

        try:
            from autograder.cluster_worker import run_notebook

            return run_notebook(pickle.loads(task))
        except ImportError as error:  # the worker's environment, never the notebook
            raise ImportError(
                f"the Dask worker {get_worker().address} cannot import {error.name} "
                f"({error}): {how_to_start}",
                name=error.name,
            ) from None

    return run_pickled_task


RUN_TASK = _task_runner()


def probe_worker(limits: KernelLimits) -> tuple[str | None, str]:
    """On a worker: why it cannot sandbox a kernel (None if it can), and how it limits one."""
    from autograder.sandbox import sandbox_problem

    policy = limits.policy()
    problem = sandbox_problem(policy, _scratch() / "probe") if limits.isolate else None
    return problem, policy.describe()
