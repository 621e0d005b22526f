"""Benchmark: stock serial `nbgrader autograde` against `course-grade grade --jobs N`.

Builds a class of synthetic students (default 40) across every assignment in source/, two
thirds submitting the full solution (the source notebook) and one third the blank release
notebook, in two identical temporary copies of the course. Grades one copy with stock
nbgrader (one `nbgrader autograde` per assignment, one student after another) and the other
with `course-grade grade --jobs N` (which also writes feedback, the grade export and the
report), checks that both gradebooks hold the same grades, and prints both times and their
ratio. Run from the repository root:

    .venv/bin/python benchmarks/grading_speed.py [--students 40] [--jobs 2]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from nbgrader.api import Grade, Gradebook

from autograder.course import Course

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def run(command: list[str], cwd: Path) -> float:
    """Run a command in `cwd`; return its wall-clock seconds (stop on failure)."""
    started = time.perf_counter()
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        sys.exit(f"{' '.join(command)} failed in {cwd}:\n{result.stderr[-3000:]}")
    return elapsed


def build_course(folder: Path, assignments: list[str], students: int) -> None:
    """A copy of the course with generated assignments and synthetic submissions."""
    folder.mkdir()
    shutil.copy(ROOT / "nbgrader_config.py", folder)
    shutil.copytree(ROOT / "source", folder / "source")
    for assignment in assignments:
        run([str(BIN / "nbgrader"), "generate_assignment", assignment, "--force"], folder)
    for number in range(students):
        student = f"student{number:02d}"
        for assignment in assignments:
            version = "release" if number % 3 == 2 else "source"
            submitted = folder / "submitted" / student / assignment
            submitted.mkdir(parents=True)
            shutil.copy(folder / version / assignment / f"{assignment}.ipynb", submitted)
            (submitted / "timestamp.txt").write_text("2026-11-20 10:00:00.000000 UTC")


def grades(folder: Path) -> dict[tuple[str, str, str, str], float]:
    """Every (student, assignment, notebook, cell) -> auto score in a course's gradebook."""
    course = Course(folder)
    with Gradebook(course.db_url, course.coursedir.course_id) as gb:
        return {
            (
                grade.notebook.assignment.student.id,
                grade.notebook.assignment.assignment.name,
                grade.notebook.name,
                grade.cell.name,
            ): grade.auto_score
            for grade in gb.db.query(Grade).all()
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--students", type=int, default=40)
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    os.environ["PATH"] = f"{BIN}{os.pathsep}{os.environ['PATH']}"  # nbgrader calls `alembic`
    assignments = sorted(path.name for path in (ROOT / "source").iterdir() if path.is_dir())
    with tempfile.TemporaryDirectory(prefix="grading-speed-") as scratch:
        stock, ours = Path(scratch) / "stock", Path(scratch) / "ours"
        build_course(stock, assignments, args.students)
        shutil.copytree(stock, ours)
        notebooks = args.students * len(assignments)
        print(f"{args.students} students x {len(assignments)} assignments = {notebooks} notebooks")
        print(f"cores: {os.cpu_count()}")

        stock_seconds = sum(
            run([str(BIN / "nbgrader"), "autograde", assignment], stock)
            for assignment in assignments
        )
        print(f"stock nbgrader autograde (serial):      {stock_seconds:7.1f} s")
        ours_seconds = run([str(BIN / "course-grade"), "grade", "--jobs", str(args.jobs)], ours)
        print(f"course-grade grade --jobs {args.jobs}:            {ours_seconds:7.1f} s")

        expected, found = grades(stock), grades(ours)
        if expected != found:
            differing = sorted(
                k for k in expected.keys() | found.keys() if expected.get(k) != found.get(k)
            )
            sys.exit(f"GRADES DIFFER for {len(differing)} cells, e.g. {differing[:5]}")
        total = sum(found.values())
        print(f"grades identical: {len(found)} grade cells, {total:g} points in total")
        print(f"speed-up: {stock_seconds / ours_seconds:.2f}x")


if __name__ == "__main__":
    main()
