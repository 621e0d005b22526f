"""Grade many submissions at once: one gradebook writer, a pool of executing workers.

Design: the parent process is the only one that writes the gradebook. It sanitizes each
notebook with nbgrader's preprocessors, hands it to a worker, and saves the executed
notebook's grades with nbgrader's preprocessors, one notebook at a time (a few tens of
milliseconds each). The workers only execute notebooks in sandboxed kernels, which is where
the time goes, and render feedback pages (which only read the gradebook). The workers are
forked from the parent once nbgrader is imported, so no submission pays for the imports, and
they die with it (even by SIGKILL); each starts its next kernel while the current one runs.
SQLite then never sees two writers, and the grades are the ones a serial nbgrader would save.

Resume: a submission counts as done once its record exists; the record is written after
its grades are committed, its autograded folder is in place and its feedback is written.
A killed run leaves at most the submissions in flight without a record; the next run grades
them again, which updates the same gradebook rows (one row per student and cell), so no grade
is lost or stored twice.

Infrastructure failure is not a grade: a kernel that cannot start, or cannot import what the
test cells import, raises InfrastructureFailure in the worker, and a worker that dies breaks the
pool. Either way the submissions concerned get no record (the next run grades them) and a note
saying why (`Course.write_not_graded`), which the command and the report show.

Where notebooks run is a `Workers`: the local fork pool (`LocalWorkers`), or the workers of a
Dask cluster (`autograder.cluster.DaskWorkers`, `course-grade grade --scheduler`); the loop
that opens, saves and publishes submissions is the same for both.
"""

from __future__ import annotations

import ctypes
import fcntl
import multiprocessing
import os
import shutil
import signal
import tempfile
from collections import deque
from concurrent.futures import (
    FIRST_COMPLETED,
    BrokenExecutor,
    Future,
    ProcessPoolExecutor,
    wait,
)
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from multiprocessing.util import Finalize
from pathlib import Path
from typing import Protocol

from nbgrader.api import Gradebook
from traitlets.config import Config

from autograder.course import Course, GradingRecord, Submission
from autograder.execute import ExecutionResult, InfrastructureFailure, NotebookRunner
from autograder.feedback import feedback_exporter, write_feedback
from autograder.gradebook import GradebookWriter, GradingError, NotebookJob, OpenSubmission
from autograder.sandbox import SandboxPolicy

PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class GradeOptions:
    """How to grade: how many workers, whether to regrade, the kernel's sandbox."""

    jobs: int
    force: bool
    policy: SandboxPolicy


class Listener(Protocol):
    """Told how the batch progresses (the command's progress bar)."""

    def started(self, total: int, skipped: int) -> None: ...

    def finished(self, record: GradingRecord) -> None: ...

    def not_graded(self, submission: Submission, reason: str) -> None: ...


class Workers(Protocol):
    """Where notebooks are executed and feedback is rendered; each call returns a future."""

    @property
    def slots(self) -> int:
        """How many notebooks run at once."""
        ...

    def execute(self, job: NotebookJob) -> Future: ...

    def feedback(self, submission: Submission) -> Future: ...


@dataclass(frozen=True)
class LocalWorkers:
    """The local pool of forked workers."""

    pool: ProcessPoolExecutor
    slots: int

    def execute(self, job: NotebookJob) -> Future:
        return self.pool.submit(_execute, job)

    def feedback(self, submission: Submission) -> Future:
        return self.pool.submit(_feedback, submission)


class CourseBusy(Exception):
    """Another grading run holds the course."""


_worker: dict = {}


def _start_worker(
    parent: int, root: Path, extra_config: Config, policy: SandboxPolicy, scratch: Path
) -> None:
    """Runs once in each worker: die with the parent (even by SIGKILL), open the course."""
    ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before the line above
        os._exit(1)
    os.environ["NBGRADER_EXECUTION"] = "autograde"
    course = Course(root, extra_config)
    runner = NotebookRunner(policy, course.config, prefetch=True, scratch=scratch)
    Finalize(runner, runner.close, exitpriority=10)
    _worker.update(course=course, runner=runner, exporter=feedback_exporter(course))


def _execute(job: NotebookJob) -> ExecutionResult:
    return _worker["runner"].run(job.notebook_json, job.workdir, job.modules)


def _feedback(submission: Submission) -> int:
    return len(write_feedback(_worker["course"], submission, _worker["exporter"]))


def _lock(course: Course) -> int:
    course.state_folder.mkdir(parents=True, exist_ok=True)
    handle = os.open(course.state_folder / "lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(handle)
        raise CourseBusy(f"another course-grade run is grading {course.root}") from None
    return handle


def grade(
    course: Course,
    submissions: list[Submission],
    options: GradeOptions,
    listener: Listener,
    gradebook: Gradebook,
    extra_config: Config | None = None,
    cluster: Workers | None = None,
) -> list[GradingRecord]:
    """Grade every submission not graded yet (all of them with `force`) with the run's one
    gradebook connection, on `cluster` if given, else in a local pool; return the records."""
    lock = _lock(course)
    try:
        shutil.rmtree(course.state_folder / "staging", ignore_errors=True)
        writer = GradebookWriter(course, gradebook, options.policy.disk_bytes)
        for assignment in sorted({s.assignment for s in submissions}):
            writer.notebooks_of(assignment)
        todo = [s for s in submissions if options.force or not course.is_graded(s)]
        if todo and cluster is not None:
            listener.started(len(todo), len(submissions) - len(todo))
            _run_pool(cluster, writer, deque(todo), options.force, listener)
        elif todo:
            with _start_pool(course, options, extra_config or Config()) as pool:
                listener.started(len(todo), len(submissions) - len(todo))
                workers = LocalWorkers(pool, options.jobs)
                _run_pool(workers, writer, deque(todo), options.force, listener)
            shutil.rmtree(kernel_scratch(), ignore_errors=True)
        else:
            listener.started(0, len(submissions))
        writer.remove_staging()
    finally:
        os.close(lock)
    return [record for s in submissions if (record := course.read_record(s)) is not None]


def kernel_scratch() -> Path:
    """This run's folder for kernel folders (short, for ipc socket paths), in the system's
    temporary folder. Folders of runs whose process is gone (killed) are deleted."""
    root = Path(tempfile.gettempdir()) / f"course-grade-{os.getuid()}"
    for folder in root.glob("run-*"):
        try:
            os.kill(int(folder.name.removeprefix("run-")), 0)
        except ProcessLookupError:
            shutil.rmtree(folder, ignore_errors=True)
        except (ValueError, PermissionError):
            continue
    scratch = root / f"run-{os.getpid()}"
    scratch.mkdir(parents=True, exist_ok=True)
    return scratch


def _start_pool(course: Course, options: GradeOptions, extra_config: Config) -> ProcessPoolExecutor:
    """Fork the workers now, while this process has no other thread (the progress bar's)."""
    context = multiprocessing.get_context("fork")
    initargs = (os.getpid(), course.root, extra_config, options.policy, kernel_scratch())
    pool = ProcessPoolExecutor(options.jobs, context, _start_worker, initargs)
    pool.submit(os.getpid).result()  # a fork pool starts all its workers at the first task
    return pool


def _run_pool(
    workers: Workers,
    writer: GradebookWriter,
    queue: deque[Submission],
    force: bool,
    listener: Listener,
) -> None:
    running: dict[Future, tuple[OpenSubmission, str | None]] = {}

    def publish(opened: OpenSubmission) -> None:
        writer.publish(opened)
        running[workers.feedback(opened.submission)] = (opened, None)

    while queue or running:
        while queue and len(running) < 2 * max(1, workers.slots):
            opened, jobs = writer.open(queue.popleft(), force)
            for job in jobs:
                running[workers.execute(job)] = (opened, job.notebook)
            if not jobs:
                publish(opened)
        done, _ = wait(running, return_when=FIRST_COMPLETED)
        for future in done:
            opened, notebook = running.pop(future)
            error = future.exception()
            if isinstance(error, BrokenExecutor):  # the pool or the cluster is gone
                local = isinstance(error, BrokenProcessPool)
                lost = "a grading worker died" if local else str(error)
                died = f"{lost} while grading it" + (" (out of memory?)" if local else "")
                held = {id(item[0]): item[0] for item in [(opened, notebook), *running.values()]}
                for submission in held.values():
                    submission.not_graded = submission.not_graded or died
                    writer.drop(submission)
                raise GradingError(
                    f"{lost}{' (out of memory?)' if local else ''}; the submissions it held "
                    "have no grade yet: run the command again to finish them"
                ) from error
            if isinstance(error, InfrastructureFailure):
                writer.abandon(opened, notebook, str(error))
                if not opened.pending:
                    writer.drop(opened)
                    listener.not_graded(opened.submission, opened.not_graded)
                continue
            if notebook is None:
                if error is not None:
                    opened.problems.append(f"feedback failed: {error}")
                listener.finished(writer.finish(opened))
                continue
            try:
                if error is not None:
                    raise error
                writer.save(opened, notebook, future.result())
            except Exception as failure:  # one notebook's problem, never the batch's
                writer.fail(opened, notebook, f"{type(failure).__name__}: {failure}")
            if opened.pending:
                continue
            if opened.not_graded:
                writer.drop(opened)
                listener.not_graded(opened.submission, opened.not_graded)
            else:
                publish(opened)
