"""course-grade on a Dask cluster: a scheduler and two worker processes on 127.0.0.1.

One LocalCluster (two nanny-supervised worker processes, one KERNEL each) serves every test;
a test that kills a worker waits for its nanny to bring it back, and a test that adds a worker
from another environment stops it and waits until the scheduler has let it go, so no test
depends on another.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import shlex
import signal
import socket
import subprocess
import sys
import sysconfig
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import dask
import psutil
import pytest
from distributed import Client, LocalCluster, get_task_stream
from test_grading_helpers import (
    ADD_ONLY,
    ASSIGNMENT,
    FULL,
    NOTHING,
    copy_course,
    gradebook_rows,
    make_course,
    record,
    release_notebook,
    scores,
    solved,
    stock_autograde,
    submit,
)

from autograder.cli import main
from autograder.cluster import DaskWorkers
from autograder.course import Submission

WORKERS = 2
CLASS = {
    "alice": None,
    "twin": None,  # alice's notebook, byte for byte
    "bob": "blank",
    "carol": "def mul(a, b):\n    return a * b if a > 0 else 0",
    "quitter": "import os\nos._exit(1)",
}
EXPECTED = {"alice": FULL, "twin": FULL, "bob": NOTHING, "carol": ADD_ONLY, "quitter": ADD_ONLY}


@pytest.fixture(scope="module")
def cluster():
    """A client of a scheduler and two worker processes, all on 127.0.0.1 (no dashboard).

    A LocalCluster forgets a worker (and closes its nanny) that is not back
    `lost-worker-timeout` after it died, 15 s by default: on a busy machine a nanny's restart
    took longer than that in CI, and the cluster stayed one worker short for every later test.
    """
    with (
        dask.config.set({"distributed.deploy.lost-worker-timeout": "10 minutes"}),
        LocalCluster(
            n_workers=WORKERS,
            threads_per_worker=1,
            processes=True,
            resources={"KERNEL": 1},
            host="127.0.0.1",
            dashboard_address=None,
        ) as local,
        Client(local) as client,
    ):
        yield client


def grade(course, client: Client, *options: str) -> int:
    """`course-grade grade` of `course` on the cluster of `client`; its exit code."""
    return main(
        [
            "grade",
            "--course-dir",
            str(course.root),
            "--scheduler",
            client.scheduler.address,
            "--grades",
            str(course.root / "grades.csv"),
            "--report",
            str(course.root / "grading-report.html"),
            *options,
        ]
    )


def hand_in(course, student: str, case: str | None) -> None:
    if case == "blank":
        submit(course, student, release_notebook(course))
    elif case is None:
        submit(course, student, solved(course))
    else:
        submit(course, student, solved(course, mul=case))


def worker_pids(client: Client) -> dict[str, int]:
    return client.run(os.getpid)


def back_to_full_strength(client: Client) -> None:
    """Wait until the cluster has its two workers again (a nanny restarts a killed one)."""
    deadline = time.monotonic() + 180
    while len(client.scheduler_info(n_workers=-1)["workers"]) != WORKERS:
        assert time.monotonic() < deadline, "the cluster did not get its workers back"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def empty_course(tmp_path_factory):
    """A course without submissions, built once and copied by each test."""
    return make_course(tmp_path_factory.mktemp("dask") / "empty")


@pytest.fixture(scope="module")
def graded(cluster, empty_course, tmp_path_factory):
    """The class graded on the cluster (its task stream recorded), in a copy locally one
    notebook at a time, and in another copy by stock `nbgrader autograde` (every student
    but the quitter, whose dead kernel stock nbgrader does not grade)."""
    root = tmp_path_factory.mktemp("dask")
    course = copy_course(empty_course, root / "course")
    for student, case in CLASS.items():
        hand_in(course, student, case)
    stock = stock_autograde(course, root / "stock", [name for name in CLASS if name != "quitter"])
    local = copy_course(course, root / "local")
    assert main(["grade", "--course-dir", str(local.root), "--jobs", "1",
                 "--grades", str(local.root / "grades.csv"),
                 "--report", str(local.root / "grading-report.html")]) == 0  # fmt: skip
    with get_task_stream(cluster) as stream:
        assert grade(course, cluster) == 0
    return course, local, stock, stream.data


def test_grades_on_the_cluster_are_those_of_a_serial_nbgrader_autograde(graded):
    course, _, stock, _ = graded
    assert scores(course) == EXPECTED
    assert {student: scores(course)[student] for student in scores(stock)} == scores(stock)
    assert set(scores(stock)) == set(CLASS) - {"quitter"}


def test_records_and_feedback_on_the_cluster_are_those_of_a_serial_local_grading(graded):
    course, local, _, _ = graded
    assert gradebook_rows(course) == gradebook_rows(local)
    for student in CLASS:
        assert record(course, student)["problems"] == record(local, student)["problems"]
        feedback = course.root / "feedback" / student / ASSIGNMENT / f"{ASSIGNMENT}.html"
        assert feedback.is_file()
    assert "cell 4 (mul): the kernel died" in " ".join(record(course, "quitter")["problems"])
    assert "the kernel died" in (course.root / "grading-report.html").read_text()


def test_two_students_with_identical_notebooks_are_two_tasks(graded):
    course, _, _, tasks = graded
    submitted = course.root / "submitted"
    notebook = Path(ASSIGNMENT, f"{ASSIGNMENT}.ipynb")
    assert (submitted / "alice" / notebook).read_bytes() == (
        submitted / "twin" / notebook
    ).read_bytes()
    keys = [task["key"] for task in tasks if str(task["key"]).startswith("grade-")]
    assert len(keys) == len(set(keys)) == len(CLASS)
    assert sum(f"-{student}-" in key for key in keys for student in ("alice", "twin")) == 2
    assert record(course, "twin")["problems"] == record(course, "alice")["problems"] == []


def test_a_worker_killed_mid_batch_loses_nothing(cluster, empty_course, tmp_path):
    course = copy_course(empty_course, tmp_path / "course")
    students = [f"student{number}" for number in range(4)]
    for student in students:  # each notebook runs long enough to be caught running
        hand_in(course, student, "import time\ntime.sleep(1)\ndef mul(a, b):\n    return a * b")
    pids = worker_pids(cluster)
    killed: list[str] = []

    def kill_a_busy_worker() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            busy = [worker for worker, keys in cluster.processing().items() if keys]
            if busy:
                time.sleep(0.5)  # mid-notebook
                os.kill(pids[busy[0]], signal.SIGKILL)
                killed.append(busy[0])
                return
            time.sleep(0.05)

    killer = threading.Thread(target=kill_a_busy_worker)
    killer.start()
    try:
        assert grade(course, cluster) == 0
    finally:
        killer.join()
        back_to_full_strength(cluster)
    assert killed
    assert scores(course) == dict.fromkeys(students, FULL)
    assert len(gradebook_rows(course)) == len(students) * len(FULL)  # every grade once
    assert all(record(course, student)["problems"] == [] for student in students)


def test_a_notebook_killing_its_worker_is_graded_as_a_dead_kernel(cluster, empty_course, tmp_path):
    course = copy_course(empty_course, tmp_path / "course")
    hand_in(course, "alice", None)
    # without bubblewrap's process namespace a kernel can reach the worker that started it
    hand_in(course, "killer", "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)")
    try:
        assert grade(course, cluster, "--no-sandbox", "--allowed-failures", "1") == 0
    finally:
        back_to_full_strength(cluster)
    assert scores(course) == {"alice": FULL, "killer": NOTHING}
    (problem,) = record(course, "killer")["problems"]
    assert "its kernel killed the grading worker each of the 2 times it ran" in problem
    assert "its cells scored 0" in problem


def environment_without(package: str, folder: Path, version: str | None = None) -> Path:
    """A virtual environment with this one's packages except those whose name starts with
    `package`; with `version`, only the package's metadata goes, replaced by one of that
    version. Its Python."""
    base = Path(sys.base_prefix, "bin", "python3")
    subprocess.run([str(base), "-m", "venv", "--without-pip", str(folder)], check=True)
    theirs = next(folder.glob("lib/python*/site-packages"))
    for entry in Path(sysconfig.get_paths()["purelib"]).iterdir():
        metadata = entry.name.endswith(".dist-info")
        if not entry.name.lower().startswith(package) or (version and not metadata):
            (theirs / entry.name).symlink_to(entry)
    if version:
        (theirs / f"{package}-{version}.dist-info").mkdir()
        (theirs / f"{package}-{version}.dist-info" / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: {package}\nVersion: {version}\n"
        )
    return folder / "bin" / "python"


def start_worker(python: Path, client: Client, folder: Path) -> subprocess.Popen:
    """A worker process of `python`'s environment, started in `folder` (this checkout, where
    `autograder` would be importable from the current folder, is not on its path)."""
    command = [str(python), "-m", "distributed.cli.dask_worker", client.scheduler.address,
               "--nthreads", "1", "--resources", "KERNEL=1", "--host", "127.0.0.1",
               "--no-nanny", "--no-dashboard", "--dashboard-address", "127.0.0.1:0"]  # fmt: skip
    return subprocess.Popen(
        command, cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def test_a_worker_missing_a_package_grades_nothing(cluster, empty_course, tmp_path, capsys):
    course = copy_course(empty_course, tmp_path / "course")
    hand_in(course, "alice", None)
    python = environment_without("nbgrader", tmp_path / "env")
    before = set(cluster.scheduler_info(n_workers=-1)["workers"])
    worker = start_worker(python, cluster, tmp_path)
    try:
        cluster.wait_for_workers(WORKERS + 1, timeout=60)
        (stranger,) = set(cluster.scheduler_info(n_workers=-1)["workers"]) - before
        capsys.readouterr()
        assert grade(course, cluster) == 2
    finally:
        worker.terminate()
        worker.wait(timeout=30)
        back_to_full_strength(cluster)
    message = " ".join(capsys.readouterr().err.split())
    version = importlib.metadata.version("nbgrader")
    assert f"the worker {stranger} lacks nbgrader (the grader has {version})" in message
    assert "Nothing was graded" in message
    assert "Traceback" not in message
    assert not (course.state_folder / "records").exists()
    assert scores(course) == {}


@contextlib.contextmanager
def joining_after_the_check(client: Client, python: Path, folder: Path) -> Iterator[list]:
    """Within it, each grading run's cluster check is followed by a worker of `python`'s
    environment joining the cluster, and the run's notebooks go to that worker first (other
    workers only once it is gone). Yields the [(address, process)] of the workers started."""
    check = DaskWorkers._check
    joined: list[tuple[str, subprocess.Popen]] = []
    with contextlib.ExitStack() as cleanup, pytest.MonkeyPatch.context() as patch:

        def check_then_join(self: DaskWorkers, allowed_failures: int) -> str:
            description = check(self, allowed_failures)
            before = set(client.scheduler_info(n_workers=-1)["workers"])
            worker = start_worker(python, client, folder)
            cleanup.callback(worker.wait, timeout=30)
            cleanup.callback(worker.terminate)
            client.wait_for_workers(WORKERS + 1, timeout=60)
            (stranger,) = set(client.scheduler_info(n_workers=-1)["workers"]) - before
            joined.append((stranger, worker))
            cleanup.enter_context(dask.annotate(workers=[stranger], allow_other_workers=True))
            return description

        patch.setattr(DaskWorkers, "_check", check_then_join)
        try:
            yield joined
        finally:
            cleanup.close()
            back_to_full_strength(client)


def test_a_late_worker_that_cannot_import_the_autograder_refuses_its_notebook(
    cluster, graded, tmp_path, capsys
):
    course = copy_course(graded[0], tmp_path / "course")  # the class, graded
    graded_before = gradebook_rows(course)
    hand_in(course, "dave", None)
    python = environment_without("__editable__", tmp_path / "env")  # setuptools' editable finder
    capsys.readouterr()
    with joining_after_the_check(cluster, python, tmp_path) as joined:
        assert grade(course, cluster) == 1
        ((stranger, worker),) = joined
        assert worker.poll() is None  # refused, and still running: not a notebook that killed it
    reason = (
        f"hw.ipynb: the Dask worker {stranger} cannot import autograder "
        "(No module named 'autograder'): start each worker in the course's environment"
    )
    assert course.not_graded(Submission("dave", ASSIGNMENT)).startswith(reason)
    message = " ".join(capsys.readouterr().err.split())
    assert f"NOT GRADED dave/{ASSIGNMENT}: {reason}" in message
    assert "Traceback" not in message
    assert gradebook_rows(course) == graded_before  # the class's grades, and no zero for dave
    assert grade(course, cluster) == 0  # the next run, on the course's workers
    assert scores(course) == {**EXPECTED, "dave": FULL}
    assert course.not_graded(Submission("dave", ASSIGNMENT)) is None


@pytest.mark.parametrize(
    ("package", "version", "difference"),
    [
        ("nbgrader", None, "lacks nbgrader (the grader has {})"),
        ("sqlalchemy_sessions_by_example", "0.0.1",
         "has sqlalchemy-sessions-by-example 0.0.1 (the grader has {})"),
    ],
    ids=["without-nbgrader", "another-version"],
)  # fmt: skip
def test_a_late_worker_with_other_packages_refuses_its_notebook(
    cluster, empty_course, tmp_path, package, version, difference
):
    course = copy_course(empty_course, tmp_path / "course")
    hand_in(course, "alice", None)
    python = environment_without(package, tmp_path / "env", version)
    with joining_after_the_check(cluster, python, tmp_path) as joined:
        assert grade(course, cluster) == 1
        ((stranger, worker),) = joined
        assert worker.poll() is None
    theirs = importlib.metadata.version(package)
    reason = f"hw.ipynb: the Dask worker {stranger} {difference.format(theirs)}: start each worker"
    assert course.not_graded(Submission("alice", ASSIGNMENT)).startswith(reason)
    assert scores(course) == {}
    assert not (course.state_folder / "records").exists()


def readme_dask_commands() -> tuple[list[str], list[str]]:
    """The README's commands that start a scheduler and a worker, as argument lists."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = readme.split("# on the machine that schedules", 1)[1].split("```", 1)[0]
    lines = block.replace("\\\n", " ").splitlines()
    scheduler, worker = (
        shlex.split(next(line for line in lines if line.startswith(f".venv/bin/dask {kind}")))
        for kind in ("scheduler", "worker")
    )
    return scheduler, worker


def listening_addresses(process: subprocess.Popen) -> set[str]:
    """The addresses a process and its children listen on (TCP)."""
    parent = psutil.Process(process.pid)
    return {
        connection.laddr.ip
        for member in (parent, *parent.children(recursive=True))
        for connection in member.net_connections(kind="tcp")
        if connection.status == psutil.CONN_LISTEN
    }


def test_the_readmes_scheduler_and_worker_listen_on_loopback_only(tmp_path):
    """`--host` binds Dask's connections only: without `--dashboard-address` on loopback too,
    the scheduler's and each worker's HTTP server (health, metrics) listened on 0.0.0.0."""
    scheduler, worker = readme_dask_commands()
    dask = str(Path(sys.executable).parent / "dask")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    address = f"tcp://127.0.0.1:{port}"
    scheduler = [dask, *scheduler[1:]]
    scheduler[scheduler.index("--port") + 1] = str(port)
    scheduler[scheduler.index("--dashboard-address") + 1] = "127.0.0.1:0"  # 8787 may be taken
    assert worker[:3] == [".venv/bin/dask", "worker", "tcp://127.0.0.1:8786"]
    worker = [dask, "worker", address, *worker[3:]]
    started = []
    try:
        for command in (scheduler, worker):  # a worker retries until the scheduler is up
            started.append(subprocess.Popen(command, cwd=tmp_path, stderr=subprocess.DEVNULL))
        with Client(address, timeout=60) as client:
            client.wait_for_workers(1, timeout=60)
            assert listening_addresses(started[0]) == {"127.0.0.1"}
            assert listening_addresses(started[1]) == {"127.0.0.1"}
    finally:
        for process in reversed(started):
            process.terminate()
            process.wait(timeout=60)
