"""course-grade: the instructor's grading command (run it in the course folder, like nbgrader)."""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import sys
from pathlib import Path

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text
from traitlets.config import Config

from autograder.course import BrokenRecord, Course, GradingRecord
from autograder.gradebook import GradingError
from autograder.pipeline import CourseBusy, GradeOptions, grade
from autograder.report import (
    ClassReport,
    collect_report,
    export_grades,
    write_report_csv,
    write_report_html,
)
from autograder.sandbox import make_policy, sandbox_problem
from autograder.submissions import (
    SubmissionsError,
    Unpacked,
    ZipLimits,
    collect_exchange,
    find_submissions,
    unpack_lms_zip,
)

console = Console(stderr=True)
# Characters that steer a terminal (escape sequences, bidirectional overrides).
CONTROL_CHARACTERS = re.compile(
    r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]"
)


def literal(text: str, style: str = "") -> Text:
    """Text shown as it is: no rich markup or emoji codes, control characters made visible
    (reasons, names and file names come from submissions)."""
    visible = CONTROL_CHARACTERS.sub(lambda match: ascii(match[0])[1:-1], str(text))
    return Text(visible, style=style)


class ProgressBar:
    """A rich progress bar: submissions done, how many need attention, time left."""

    def __init__(self) -> None:
        self.progress = Progress(
            TextColumn("[bold]grading"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("[red]{task.fields[failures]} need attention"),
            TimeElapsedColumn(),
            TextColumn("left"),
            TimeRemainingColumn(),
            console=console,
        )
        self.task = None
        self.failures = 0

    def started(self, total: int, skipped: int) -> None:
        if skipped:
            console.print(f"{skipped} submissions already graded (use --force to regrade them)")
        self.progress.start()
        self.task = self.progress.add_task("grading", total=total, failures=0)

    def finished(self, record: GradingRecord) -> None:
        self.failures += bool(record.problems)
        self.progress.update(self.task, advance=1, failures=self.failures)

    def stop(self) -> None:
        self.progress.stop()


def add_course_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--course-dir",
        type=Path,
        default=Path.cwd(),
        help="the course folder, holding nbgrader_config.py (default: the current folder)",
    )


def add_selection_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "assignment_id", nargs="?", help="only this assignment, as in `nbgrader autograde ps1`"
    )
    parser.add_argument("--assignment", help="only this assignment (a glob pattern is allowed)")
    parser.add_argument("--student", help="only this student (a glob pattern is allowed)")


def add_input_options(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--exchange",
        action="store_true",
        help="first collect the newest submissions from nbgrader's exchange inbound folder "
        "(needs --assignment)",
    )
    source.add_argument(
        "--zip",
        type=Path,
        metavar="ARCHIVE",
        help="first unpack a learning-management system's export (Canvas or Moodle) of one "
        "assignment into submitted/ (needs --assignment)",
    )
    parser.add_argument(
        "--zip-member-mb",
        type=float,
        default=ZipLimits.member_bytes / 1024**2,
        help="megabytes one file of a --zip export may unpack to; a larger file is skipped "
        "(default: %(default)g)",
    )
    parser.add_argument(
        "--zip-ratio",
        type=int,
        default=ZipLimits.ratio,
        help="the most a --zip export may unpack to in all, as a multiple of its size; a "
        "larger export is refused as a zip bomb (default: %(default)d)",
    )


def add_output_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--grades",
        type=Path,
        default=Path("grades.csv"),
        help="where to export the grades, as `nbgrader export` does (default: grades.csv)",
    )
    parser.add_argument(
        "--report",
        type=Path,
        default=Path("grading-report.html"),
        help="the instructor's report; a .csv of test-cell results is written beside it "
        "(default: grading-report.html)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="course-grade",
        description="Grade nbgrader submissions in parallel, in sandboxed kernels, resumably.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    grade_parser = commands.add_parser(
        "grade",
        help="collect, autograde, write feedback, export grades and write the report",
        description="Autograde every submission in submitted/ that is not graded yet, write "
        "feedback, export the grades and write the grading report. Safe to interrupt and run "
        "again: finished submissions are skipped, manual grades are kept.",
    )
    add_course_options(grade_parser)
    add_selection_options(grade_parser)
    add_input_options(grade_parser)
    grade_parser.add_argument(
        "--jobs",
        type=int,
        default=os.cpu_count() or 1,
        help="how many submissions to grade at once (default: the number of cores)",
    )
    grade_parser.add_argument(
        "--force", action="store_true", help="regrade submissions that were already graded"
    )
    grade_parser.add_argument(
        "--timeout", type=int, help="seconds a cell may run (default: Execute.timeout)"
    )
    grade_parser.add_argument(
        "--memory-mb",
        type=int,
        default=2048,
        help="memory of a kernel and all its child processes together (with a cgroup), and "
        "the address space of each of its processes (default: 2048)",
    )
    grade_parser.add_argument(
        "--cpu-seconds",
        type=int,
        default=300,
        help="CPU time a kernel and all its child processes together may use for a whole "
        "notebook (with a cgroup; without one, each process separately) (default: 300)",
    )
    grade_parser.add_argument(
        "--max-processes",
        type=int,
        default=128,
        help="processes and threads a kernel and its children may run at once (with a "
        "cgroup; without one, RLIMIT_NPROC, which does not hold for root) (default: 128)",
    )
    grade_parser.add_argument(
        "--disk-mb",
        type=int,
        default=100,
        help="megabytes of files a submission may bring from submitted/ and a kernel may "
        "leave in its folder, and the size of each file and of the kernel's /tmp; a kernel "
        "whose folder grows past twice this is stopped (default: 100)",
    )
    grade_parser.add_argument(
        "--notebook-timeout",
        type=int,
        help="seconds of wall-clock time a whole notebook may run "
        "(default: GuardedExecute.notebook_timeout, 600)",
    )
    grade_parser.add_argument(
        "--output-kb",
        type=int,
        default=1000,
        help="kilobytes of output one cell may keep (default: 1000)",
    )
    grade_parser.add_argument(
        "--no-sandbox",
        action="store_true",
        help="run kernels without bubblewrap isolation (the limits still apply)",
    )
    add_output_options(grade_parser)

    collect_parser = commands.add_parser(
        "collect",
        help="only bring submissions into submitted/ (from the exchange or an LMS zip)",
        description="Copy submissions into submitted/<student>/<assignment>/ without grading.",
    )
    add_course_options(collect_parser)
    collect_parser.add_argument("--assignment", required=True, help="the assignment collected")
    add_input_options(collect_parser)

    report_parser = commands.add_parser(
        "report",
        help="export the grades and rewrite the report from the gradebook",
        description="Export grades and write the grading report from the gradebook as it is now "
        "(for instance after manual grading in formgrader).",
    )
    add_course_options(report_parser)
    add_output_options(report_parser)
    return parser


def collect(course: Course, args: argparse.Namespace) -> None:
    if (args.exchange or args.zip) and not args.assignment:
        raise SubmissionsError("--exchange and --zip need --assignment")
    if args.exchange:
        collect_exchange(course, args.assignment)
    elif args.zip:
        limits = ZipLimits(int(args.zip_member_mb * 1024**2), args.zip_ratio)
        print_unpacked(args.zip, unpack_lms_zip(course, args.zip, args.assignment, limits))


def print_unpacked(archive: Path, unpacked: Unpacked) -> None:
    """What an LMS export brought, and every member it skipped with the reason."""
    console.print(
        literal(
            f"{archive}: {len(unpacked.updated)} submissions new or resubmitted, "
            f"{len(unpacked.unchanged)} unchanged, {len(unpacked.skipped)} skipped"
        )
    )
    if unpacked.skipped:
        skipped = Table(title=literal(f"Skipped in {archive}"))
        for column in ("member or student", "why"):
            skipped.add_column(column, overflow="fold")
        for name, reason in unpacked.skipped:
            skipped.add_row(literal(name), literal(reason))
        console.print(skipped)


def write_outputs(course: Course, args: argparse.Namespace) -> None:
    """Export the grades, write the report of the whole course and print its tables."""
    export_grades(course, args.grades)
    report = collect_report(course, course.read_records(find_submissions(course)))
    write_report_html(report, args.report)
    write_report_csv(report, args.report.with_suffix(".csv"))
    print_tables(report)
    console.print(literal(f"grades: {args.grades}   report: {args.report}"))


def print_tables(report: ClassReport) -> None:
    assignments = sorted({name for scores in report.scores.values() for name in scores})
    scores = Table(title="Scores")
    scores.add_column("student")
    for assignment in assignments:
        scores.add_column(assignment, justify="right")
    for student in sorted(report.scores):
        cells = []
        for assignment in assignments:
            score = report.scores[student].get(assignment)
            cells.append(f"{score[0]:g}/{score[1]:g}" if score else "-")
        scores.add_row(literal(student), *cells)
    console.print(scores)
    if report.attention:
        attention = Table(title="Needs your attention")
        for column in ("student", "assignment", "reason"):
            attention.add_column(column, overflow="fold")
        for row in report.attention:
            attention.add_row(*map(literal, row))
        console.print(attention)


def run_grade(course: Course, args: argparse.Namespace, extra: Config) -> int:
    collect(course, args)
    policy = make_policy(
        args.memory_mb * 1024**2,
        args.cpu_seconds,
        args.max_processes,
        args.disk_mb * 1024**2,
        isolate=not args.no_sandbox,
    )
    problem = sandbox_problem(policy, course.state_folder / "sandbox-probe")
    if problem:
        console.print(
            f"[bold red]WARNING: kernels run WITHOUT the sandbox ({problem}): student code "
            "can read the course folder and reach the network.[/]"
        )
        policy = dataclasses.replace(policy, isolate=False)
    console.print(policy.describe())
    submissions = find_submissions(course, args.assignment, args.student)
    for submission in submissions:
        try:
            course.read_record(submission)
        except BrokenRecord as broken:
            console.print(literal(str(broken), style="yellow"))
    if not submissions:
        console.print(f"no submissions found in {course.coursedir.submitted_directory}/")
    bar = ProgressBar()
    options = GradeOptions(max(1, args.jobs), args.force, policy)
    try:
        grade(course, submissions, options, bar, extra)
    finally:
        bar.stop()
    write_outputs(course, args)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `course-grade` console script."""
    args = build_parser().parse_args(argv)
    # nbgrader runs the `alembic` program installed beside this Python by name.
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    if getattr(args, "assignment_id", None):
        args.assignment = args.assignment or args.assignment_id
    extra = Config()
    if getattr(args, "timeout", None):
        extra.Execute.timeout = args.timeout
    if getattr(args, "notebook_timeout", None):
        extra.GuardedExecute.notebook_timeout = args.notebook_timeout
    if getattr(args, "output_kb", None):
        extra.GuardedExecute.output_limit_bytes = args.output_kb * 1000
    try:
        course = Course(args.course_dir, extra)
        if args.command == "grade":
            return run_grade(course, args, extra)
        if args.command == "collect":
            collect(course, args)
            return 0
        write_outputs(course, args)
        return 0
    except (GradingError, SubmissionsError, CourseBusy) as error:
        console.print(Text("error: ", style="bold red"), literal(str(error)), sep="")
        return 2


if __name__ == "__main__":
    sys.exit(main())
