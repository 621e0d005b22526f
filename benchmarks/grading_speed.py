"""Benchmark: stock serial `nbgrader autograde`, `course-grade grade --jobs N`, and
`course-grade grade --scheduler` on a Dask cluster of 1 and of N workers.

Builds a class of synthetic students (default 40) across every assignment in source/, two
thirds submitting the full solution (the source notebook) and one third the blank release
notebook, in identical temporary copies of the course. Grades one copy with stock nbgrader
(one `nbgrader autograde` per assignment, one student after another), one with
`course-grade grade --jobs N` (which also writes feedback, the grade export and the report),
and one per cluster size with `course-grade grade --scheduler` on a Dask LocalCluster of
worker processes on 127.0.0.1 (one thread and one KERNEL each; the cluster is started before
and stopped after its timed run, like a standing service). Checks that every gradebook holds
the same grades, and prints the wall-clock and CPU times, the ratios, and the scaling
efficiency from 1 to N Dask workers. Run from the repository root:

    .venv/bin/python benchmarks/grading_speed.py [--students 40] [--jobs 2]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from distributed import LocalCluster
from nbgrader.api import Grade, Gradebook

from autograder.course import Course

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def cpu_seconds() -> float:
    """CPU time of this process and of its finished children so far."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def run(command: list[str], cwd: Path) -> float:
    """Run a command in `cwd`; return its wall-clock seconds (stop on failure)."""
    started = time.perf_counter()
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        sys.exit(f"{' '.join(command)} failed in {cwd}:\n{result.stderr[-3000:]}")
    return elapsed


def show(label: str, seconds: float, cpu: float) -> None:
    print(f"{label + ':':40} {seconds:7.1f} s   CPU {cpu:7.1f} s")


def on_dask(folder: Path, workers: int) -> tuple[float, float]:
    """Grade `folder` on a Dask cluster of `workers` worker processes: the grading command's
    wall-clock seconds, and the CPU seconds of the command, the scheduler and the workers."""
    cpu = cpu_seconds()
    with LocalCluster(
        n_workers=workers,
        threads_per_worker=1,
        processes=True,
        resources={"KERNEL": 1},
        host="127.0.0.1",
        dashboard_address=None,
    ) as cluster:
        command = [str(BIN / "course-grade"), "grade", "--scheduler", cluster.scheduler_address]
        seconds = run(command, folder)
    return seconds, cpu_seconds() - cpu


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
        stock = Path(scratch) / "stock"
        build_course(stock, assignments, args.students)
        copies = {name: Path(scratch) / name for name in ("pool", "dask-1", f"dask-{args.jobs}")}
        for folder in copies.values():
            shutil.copytree(stock, folder)
        notebooks = args.students * len(assignments)
        print(f"{args.students} students x {len(assignments)} assignments = {notebooks} notebooks")
        print(f"cores: {os.cpu_count()}, load average before: {os.getloadavg()[0]:.1f}")

        cpu = cpu_seconds()
        stock_seconds = sum(
            run([str(BIN / "nbgrader"), "autograde", assignment], stock)
            for assignment in assignments
        )
        show("stock nbgrader autograde (serial)", stock_seconds, cpu_seconds() - cpu)
        cpu = cpu_seconds()
        command = [str(BIN / "course-grade"), "grade", "--jobs", str(args.jobs)]
        pool_seconds = run(command, copies["pool"])
        show(f"course-grade grade --jobs {args.jobs}", pool_seconds, cpu_seconds() - cpu)
        one_seconds, one_cpu = on_dask(copies["dask-1"], 1)
        show("course-grade on Dask, 1 worker", one_seconds, one_cpu)
        many_seconds, many_cpu = on_dask(copies[f"dask-{args.jobs}"], args.jobs)
        show(f"course-grade on Dask, {args.jobs} workers", many_seconds, many_cpu)

        expected = grades(stock)
        for name, folder in copies.items():
            found = grades(folder)
            if expected != found:
                differing = sorted(
                    k for k in expected.keys() | found.keys() if expected.get(k) != found.get(k)
                )
                sys.exit(f"GRADES DIFFER ({name}) for {len(differing)} cells, e.g. {differing[:5]}")
        total = sum(expected.values())
        print(f"grades identical in all four: {len(expected)} grade cells, {total:g} points")
        print(
            f"speed-up over stock nbgrader: pool {stock_seconds / pool_seconds:.2f}x, "
            f"Dask {args.jobs} workers {stock_seconds / many_seconds:.2f}x"
        )
        print(
            f"Dask {args.jobs} workers / local pool --jobs {args.jobs}: "
            f"{many_seconds / pool_seconds:.2f} (target: at most 1.15)"
        )
        efficiency = one_seconds / (args.jobs * many_seconds)
        print(
            f"Dask scaling 1 -> {args.jobs} workers: {one_seconds / many_seconds:.2f}x, "
            f"efficiency {efficiency:.0%}"
        )
        print(f"load average after: {os.getloadavg()[0]:.1f} (a busy machine slows every run)")


if __name__ == "__main__":
    main()
