"""course-grade: the instructor's grading command (run it in the course folder, like nbgrader)."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import re
import sys
from pathlib import Path

from nbgrader.api import Gradebook
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

from autograder.course import BrokenRecord, Course, GradingRecord, Submission
from autograder.gradebook import GradingError
from autograder.pipeline import CourseBusy, GradeOptions, grade
from autograder.report import (
    ClassReport,
    collect_report,
    export_grades,
    write_canvas_csv,
    write_report_csv,
    write_report_html,
)
from autograder.sandbox import make_policy, sandbox_problem
from autograder.settings import CourseGrade
from autograder.submissions import (
    SubmissionsError,
    Unpacked,
    ZipLimits,
    collect_exchange,
    find_submissions,
    unpack_lms_zip,
)
from autograder.term import TermError, init_term

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
        self.ungraded: list[tuple[Submission, str]] = []

    def started(self, total: int, skipped: int) -> None:
        if skipped:
            console.print(f"{skipped} submissions already graded (use --force to regrade them)")
        self.progress.start()
        self.task = self.progress.add_task("grading", total=total, failures=0)

    def finished(self, record: GradingRecord) -> None:
        self.failures += bool(record.problems)
        self.progress.update(self.task, advance=1, failures=self.failures)

    def not_graded(self, submission: Submission, reason: str) -> None:
        """A submission the machinery could not grade: said at once, it stays ungraded."""
        self.ungraded.append((submission, reason))
        self.progress.update(self.task, advance=1)
        console.print(
            literal(
                f"NOT GRADED {submission.student}/{submission.assignment}: {reason} "
                "(no grade recorded; the next run grades it)",
                style="bold red",
            )
        )

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


# Options that override a configurable trait only when given: (option, trait, help, factor).
SETTING_OPTIONS = (
    ("--jobs", "CourseGrade.jobs", "how many submissions to grade at once", 1),
    (
        "--memory-mb",
        "CourseGrade.memory_mb",
        "memory of a kernel and all its child processes together (with a cgroup), and the "
        "address space of each of its processes",
        1,
    ),
    (
        "--cpu-seconds",
        "CourseGrade.cpu_seconds",
        "CPU time a kernel and all its child processes together may use for a whole notebook "
        "(with a cgroup; without one, each process separately)",
        1,
    ),
    (
        "--max-processes",
        "CourseGrade.max_processes",
        "processes and threads a kernel and its children may run at once (with a cgroup; "
        "without one, RLIMIT_NPROC, which does not hold for root)",
        1,
    ),
    (
        "--disk-mb",
        "CourseGrade.disk_mb",
        "megabytes of files a submission may bring from submitted/ and a kernel may leave in "
        "its folder, and the size of each file and of the kernel's /tmp; a kernel whose folder "
        "grows past twice this is stopped",
        1,
    ),
    (
        "--allowed-failures",
        "CourseGrade.allowed_failures",
        "with --scheduler: how many times a notebook whose kernel kills its worker runs again "
        "before it is graded as a dead kernel",
        1,
    ),
    ("--timeout", "Execute.timeout", "seconds a cell may run", 1),
    (
        "--notebook-timeout",
        "GuardedExecute.notebook_timeout",
        "seconds of wall-clock time a whole notebook may run",
        1,
    ),
    (
        "--output-kb",
        "GuardedExecute.output_limit_bytes",
        "kilobytes of output one cell may keep",
        1000,
    ),
)


def add_setting_options(parser: argparse.ArgumentParser) -> None:
    for option, trait, text, _ in SETTING_OPTIONS:
        parser.add_argument(
            option,
            type=int,
            help=f"{text} (default: c.{trait} from the nbgrader config files, else its default)",
        )
    parser.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="execute the notebooks on the workers of this Dask scheduler, e.g. "
        "tcp://10.0.0.5:8786 (default: c.CourseGrade.scheduler, else on this machine)",
    )
    parser.add_argument(
        "--no-sandbox",
        action="store_true",
        default=None,
        help="run kernels without bubblewrap isolation, the limits still apply "
        "(c.CourseGrade.sandbox = False)",
    )


def setting_overrides(args: argparse.Namespace) -> Config:
    """The configuration the options given on the command line set (nothing for the others)."""
    config = Config()
    for option, trait, _, factor in SETTING_OPTIONS:
        value = getattr(args, option.removeprefix("--").replace("-", "_"), None)
        if value is not None:
            section, name = trait.split(".")
            config[section][name] = value * factor
    if getattr(args, "scheduler", None):
        config.CourseGrade.scheduler = args.scheduler
    if getattr(args, "no_sandbox", None):
        config.CourseGrade.sandbox = False
    return config


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
        "--force", action="store_true", help="regrade submissions that were already graded"
    )
    add_setting_options(grade_parser)
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

    term_parser = commands.add_parser(
        "init-term",
        help="create the instructor's private course for a term, outside the public repository",
        description="Create FOLDER with the assignments' sources (solutions and hidden tests), "
        "nbgrader_config.py, the gradebook (every assignment generated into release/) and the "
        "exchange. Run every later instructor command in FOLDER; keep it private.",
    )
    term_parser.add_argument("folder", type=Path, help="the new course folder (must not exist)")
    term_parser.add_argument(
        "--from",
        dest="source_course",
        type=Path,
        default=Path.cwd(),
        help="the course repository to copy source/ and nbgrader_config.py from "
        "(default: the current folder)",
    )
    term_parser.add_argument("--course-id", help="nbgrader's course id (default: the repository's)")
    term_parser.add_argument(
        "--exchange-root",
        type=Path,
        help="nbgrader's exchange folder, shared with the students (default: FOLDER/exchange)",
    )
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


def write_outputs(course: Course, args: argparse.Namespace, gradebook: Gradebook) -> None:
    """Export the grades (nbgrader's CSV and Canvas's), write the report of the whole course
    and print its tables."""
    export_grades(course, args.grades, gradebook)
    report = collect_report(course, course.read_records(find_submissions(course)), gradebook)
    canvas = args.grades.with_name(f"{args.grades.stem}-canvas.csv")
    write_canvas_csv(course, report, gradebook, canvas)
    write_report_html(report, args.report)
    write_report_csv(report, args.report.with_suffix(".csv"))
    print_tables(report)
    console.print(literal(f"grades: {args.grades}   for Canvas: {canvas}   report: {args.report}"))


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


def run_grade(course: Course, args: argparse.Namespace, gradebook: Gradebook) -> int:
    collect(course, args)
    settings = CourseGrade(config=course.config)
    policy = make_policy(
        settings.memory_mb * 1024**2,
        settings.cpu_seconds,
        settings.max_processes,
        settings.disk_mb * 1024**2,
        isolate=settings.sandbox,
    )
    if settings.scheduler:
        from autograder.cluster import DaskWorkers  # imports Dask only for a cluster

        cluster = DaskWorkers(course, settings.scheduler, policy, settings.allowed_failures)
        console.print(literal(cluster.description))
    else:
        cluster = None
        problem = sandbox_problem(policy, course.state_folder / "sandbox-probe")
        if problem:
            console.print(
                f"[bold red]WARNING: kernels run WITHOUT the sandbox ({problem}): student code "
                "can read the course folder and reach the network.[/]"
            )
            policy = dataclasses.replace(policy, isolate=False)
        console.print(policy.describe())
    with cluster or contextlib.nullcontext():
        submissions = find_submissions(course, args.assignment, args.student)
        for submission in submissions:
            try:
                course.read_record(submission)
            except BrokenRecord as broken:
                console.print(literal(str(broken), style="yellow"))
        if not submissions:
            console.print(f"no submissions found in {course.coursedir.submitted_directory}/")
        bar = ProgressBar()
        options = GradeOptions(max(1, settings.jobs), args.force, policy)
        try:
            grade(course, submissions, options, bar, gradebook, setting_overrides(args), cluster)
        finally:
            bar.stop()
    write_outputs(course, args, gradebook)
    return 1 if bar.ungraded else 0


def open_course(args: argparse.Namespace) -> Course:
    """The course of `--course-dir`, configured as nbgrader configures it, with the options
    given on the command line over that."""
    return Course(args.course_dir, setting_overrides(args))


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `course-grade` console script."""
    args = build_parser().parse_args(argv)
    # nbgrader runs the `alembic` program installed beside this Python by name.
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    if getattr(args, "assignment_id", None):
        args.assignment = args.assignment or args.assignment_id
    try:
        if args.command == "init-term":
            term = init_term(args.folder, args.source_course, args.course_id, args.exchange_root)
            console.print(
                literal(
                    f"created the course {term.coursedir.course_id} in {term.root}: run every "
                    f"instructor command there (cd {term.root}), and keep it private"
                )
            )
            return 0
        course = open_course(args)
        if args.command == "collect":
            collect(course, args)
            return 0
        with Gradebook(course.db_url, course.coursedir.course_id) as gradebook:
            if args.command == "grade":
                return run_grade(course, args, gradebook)
            write_outputs(course, args, gradebook)
            return 0
    except (GradingError, SubmissionsError, CourseBusy, TermError) as error:
        console.print(Text("error: ", style="bold red"), literal(str(error)), sep="")
        return 2


if __name__ == "__main__":
    sys.exit(main())
