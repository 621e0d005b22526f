"""Killing course-grade mid-batch (SIGKILL) and running it again loses and duplicates nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from test_grading_helpers import (
    ASSIGNMENT,
    COMMAND,
    gradebook_rows,
    make_course,
    scores,
    solved,
    submit,
)

STUDENTS = [f"student{number}" for number in range(6)]


def wait_until_no_process_works_in(folder: Path, seconds: float = 10) -> bool:
    """Whether every process whose working folder is `folder` ends within `seconds`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        working = []
        for process in Path("/proc").glob("[0-9]*"):
            try:
                working.append(process.joinpath("cwd").resolve() == folder)
            except OSError:
                continue
        if not any(working):
            return True
        time.sleep(0.1)
    return False


def test_a_killed_run_is_finished_by_the_next_one(tmp_path):
    course = make_course(tmp_path / "course")
    for student in STUDENTS:
        submit(course, student, solved(course))
    records = course.state_folder / "records" / ASSIGNMENT
    first = subprocess.Popen(
        [COMMAND, "grade", "--jobs", "2"],
        cwd=course.root,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while not list(records.glob("*.json")) and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    assert wait_until_no_process_works_in(course.root), "workers outlived the killed command"
    done_before = {p.name: p.stat().st_mtime_ns for p in records.glob("*.json")}
    assert 1 <= len(done_before) < len(STUDENTS)

    second = subprocess.run(
        [COMMAND, "grade", "--jobs", "2"], cwd=course.root, capture_output=True, text=True
    )

    assert second.returncode == 0, second.stderr
    assert f"{len(done_before)} submissions already graded" in second.stderr
    done_after = {p.name: p.stat().st_mtime_ns for p in records.glob("*.json")}
    assert sorted(done_after) == sorted(f"{student}.json" for student in STUDENTS)
    assert {name: done_after[name] for name in done_before} == done_before  # not graded twice
    keys = [(student, cell) for student, _, cell, _, _ in gradebook_rows(course)]
    assert sorted(keys) == sorted((s, c) for s in STUDENTS for c in ("test_add", "test_mul"))
    assert scores(course) == {s: {"test_add": 2.0, "test_mul": 3.0} for s in STUDENTS}
    assert not list((course.state_folder / "staging").glob("*"))
    kernels = Path(tempfile.gettempdir()) / f"course-grade-{os.getuid()}"
    assert not list(kernels.glob(f"run-{first.pid}")), "the killed run's kernel folders are left"
