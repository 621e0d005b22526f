"""An infrastructure failure is not a grade: the submission stays ungraded, says why, and the next
run grades it; no kernel is left behind.

Three failures, each made real: a kernel that cannot start (its kernelspec runs /bin/false), a
kernel that cannot import what the test cells import, and a grading worker killed mid-run.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import nbformat
from nbgrader.apps import NbGraderAPI
from test_grading_helpers import (
    ASSIGNMENT,
    COMMAND,
    FULL,
    make_course,
    record,
    release_notebook,
    scores,
    solved,
    submit,
)

from autograder.course import Course, Submission

MISSING_MODULE = "course_grade_missing_helper"
KILL_WORKER = "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\n"


def grade(course: Course, *options: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.Popen(
        [COMMAND, "grade", "--jobs", "1", *options],
        cwd=course.root,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "COLUMNS": "300", **(env or {})},
    )


def finish(process: subprocess.Popen) -> tuple[int, str]:
    _, stderr = process.communicate(timeout=600)
    return process.returncode, " ".join(stderr.split())


def kernels_of(run_pid: int) -> list[str]:
    """Command lines of processes still running a kernel of the run `run_pid`."""
    marker = f"/run-{run_pid}/"
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if marker in command:
            found.append(command)
    return found


def not_graded(course: Course, student: str) -> str | None:
    return course.not_graded(Submission(student, ASSIGNMENT))


def write_kernelspec(share: Path, argv: list[str]) -> None:
    folder = share / "kernels" / "python3"
    folder.mkdir(parents=True, exist_ok=True)
    spec = {"argv": argv, "display_name": "Python 3", "language": "python"}
    (folder / "kernel.json").write_text(json.dumps(spec))


def test_a_kernel_that_cannot_start_leaves_the_submission_ungraded(tmp_path):
    course = make_course(tmp_path / "course")
    submit(course, "alice", solved(course))
    share = tmp_path / "share"
    write_kernelspec(share, ["/bin/false"])
    code, output = finish(grade(course, env={"JUPYTER_PATH": str(share)}))
    assert code == 1, output
    assert "NOT GRADED alice/hw: hw.ipynb: the kernel did not start" in output
    assert "no grade recorded; the next run grades it" in output
    assert not course.record_path(Submission("alice", ASSIGNMENT)).exists()
    assert "the kernel did not start" in not_graded(course, "alice")
    assert scores(course) == {}  # no gradebook submission: no export reads it as a 0
    report = (course.root / "grading-report.html").read_text()
    assert "not graded yet (hw.ipynb: the kernel did not start" in report

    code, output = finish(grade(course))  # the kernel starts again: graded at the next run
    assert code == 0, output
    assert scores(course) == {"alice": FULL}
    assert record(course, "alice")["problems"] == []
    assert not_graded(course, "alice") is None
    assert "not graded yet" not in (course.root / "grading-report.html").read_text()


def test_a_kernel_that_cannot_import_what_the_tests_import_grades_nobody(tmp_path):
    course = make_course(tmp_path / "course")
    source = course.root / "source" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb"
    nb = nbformat.read(source, as_version=4)
    nb.cells[2].source = f"import {MISSING_MODULE}\n{nb.cells[2].source}"
    nbformat.write(nb, source)
    api = NbGraderAPI(course.coursedir, config=course.config)
    assert api.generate_assignment(ASSIGNMENT, force=True)["success"]
    for student in ("alice", "bob"):
        submit(course, student, solved(course))
    code, output = finish(grade(course))
    assert code == 1, output
    for student in ("alice", "bob"):
        reason = not_graded(course, student)
        assert reason.startswith(
            "hw.ipynb: the grading kernel cannot import what the test cells import: "
            f"{MISSING_MODULE} (ModuleNotFoundError: No module named '{MISSING_MODULE}')"
        ), reason
        assert f"NOT GRADED {student}/hw" in output
        assert not course.record_path(Submission(student, ASSIGNMENT)).exists()

    # the assignment ships the module beside its notebook: the kernel imports it from there
    (course.root / "source" / ASSIGNMENT / f"{MISSING_MODULE}.py").write_text("VALUE = 1\n")
    code, output = finish(grade(course))
    assert code == 0, output
    assert scores(course) == {"alice": FULL, "bob": FULL}
    assert not_graded(course, "alice") is None


def test_a_worker_that_dies_leaves_no_grade_and_no_kernel(tmp_path):
    course = make_course(tmp_path / "course")
    nb = release_notebook(course)
    nb.cells[1].source = f"{KILL_WORKER}def add(a, b):\n    return a + b"
    submit(course, "mallory", nb)
    process = grade(course, "--no-sandbox")  # in the sandbox a kernel cannot see its worker
    code, output = finish(process)
    assert code == 2, output
    assert "a grading worker died" in output
    assert not course.record_path(Submission("mallory", ASSIGNMENT)).exists()
    assert "a grading worker died while grading it" in not_graded(course, "mallory")
    deadline = time.monotonic() + 10
    while kernels_of(process.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert kernels_of(process.pid) == []  # the spare kernel died with its worker
