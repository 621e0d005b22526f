"""What the instructor reads after grading: nbgrader's grade export, an LMS export and a report.

`grading-report.html` opens offline (inline CSS and SVG, no script) and shows:

- one row per student: the score of each assignment (linking to that student's feedback page),
  the total, and why a submission needs the instructor (or that nothing does);
- the class mean and median, per assignment and of the totals;
- per assignment, the distribution of scores and, per test cell, what it checks (from its code)
  and the fraction of students who did not get its full points, as a table and a bar chart;
- the class's most frequent misunderstandings: the "likely misunderstanding" part of the teaching
  messages in the graded notebooks' failing test cells, counted per student, with their names;
  only a message the instructor wrote in that test cell, or one `autograder.checks` raises,
  counts (an error's text is the student's code's to choose), as on the feedback page.

A submission the machinery could not grade (its not-graded note, `Course.not_graded`) has no
score anywhere: an empty cell in both CSV files, "NOT GRADED" in the report, and no part in
the class statistics or the per-test counts.

Everything is read from the gradebook, the graded notebooks and the grading records, so
`course-grade report` rebuilds it at any time (after manual grading in formgrader, say).
"""

from __future__ import annotations

import csv
import html
import os
import re
import statistics
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
from nbgrader import utils
from nbgrader.api import Gradebook, MissingEntry

from autograder.course import Course, GradingRecord, Submission
from autograder.feedback import checks_messages, describe_test_cell, message_arguments
from autograder.safe_files import read_file_no_follow
from autograder.submissions import canvas_id, find_submissions, marked_late

HISTOGRAM_BINS = 10
# How a check's failure message names the misunderstanding (autograder.checks.fail); matched
# loosely (any case and spacing, wrapped over lines) so a reworded message still counts.
MISUNDERSTANDING = re.compile(r"likely\s+misunderstanding\s*:\s*(.+)", re.IGNORECASE | re.DOTALL)
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
MOST_FREQUENT = 15


@dataclass
class TestCellStats:
    """How the class did on one test cell."""

    assignment: str
    notebook: str
    cell: str
    max_points: float
    students: int
    failed: int
    checks: str = ""  # what it checks, from its code

    @property
    def failed_fraction(self) -> float:
        return self.failed / self.students if self.students else 0.0


@dataclass
class Misunderstanding:
    """A teaching message some students' failing test cells showed."""

    assignment: str
    message: str
    students: set[str] = field(default_factory=set)


@dataclass
class ClassReport:
    """Scores and test-cell results of every graded submission in the gradebook."""

    scores: dict[str, dict[str, tuple[float, float]]] = field(default_factory=dict)
    # (student, assignment) -> why the machinery could not grade it (it has no score)
    not_graded: dict[tuple[str, str], str] = field(default_factory=dict)
    max_scores: dict[str, float] = field(default_factory=dict)  # per assignment
    tests: list[TestCellStats] = field(default_factory=list)
    attention: list[tuple[str, str, str]] = field(default_factory=list)
    misunderstandings: list[Misunderstanding] = field(default_factory=list)
    # (student, assignment) -> the feedback pages (paths), for the links
    feedback: dict[tuple[str, str], list[Path]] = field(default_factory=dict)

    @property
    def assignments(self) -> list[str]:
        return sorted(self.max_scores)

    def total(self, student: str) -> float:
        return sum(score for score, _ in self.scores.get(student, {}).values())

    def incomplete(self, student: str) -> bool:
        """Whether one of the student's submissions is not graded (their total is partial)."""
        return any(who == student for who, _ in self.not_graded)

    @property
    def max_total(self) -> float:
        return sum(self.max_scores.values())


NBGRADER_COLUMNS = [
    "assignment",
    "duedate",
    "timestamp",
    "student_id",
    "last_name",
    "first_name",
    "email",
    "raw_score",
    "late_submission_penalty",
    "score",
    "max_score",
]


def not_graded_submissions(course: Course) -> dict[tuple[str, str], str]:
    """(student, assignment) -> why the machinery could not grade it, for every submission
    with a not-graded note."""
    return {
        (submission.student, submission.assignment): reason
        for submission in find_submissions(course)
        if (reason := course.not_graded(submission))
    }


def export_grades(course: Course, destination: Path, gradebook: Gradebook) -> None:
    """The grades with the columns and values of nbgrader's `nbgrader export` (a student
    without a submission scores 0), except that a submission that is not graded has empty
    scores, and values are quoted as CSV (nbgrader's writer does not)."""
    not_graded = not_graded_submissions(course)
    with open(destination, "w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(NBGRADER_COLUMNS)
        for assignment in gradebook.assignments:
            for student in gradebook.students:
                row = {
                    "assignment": assignment.name,
                    "duedate": assignment.duedate,
                    "student_id": student.id,
                    "last_name": student.last_name,
                    "first_name": student.first_name,
                    "email": student.email,
                    "max_score": assignment.max_score,
                }
                try:
                    submission = gradebook.find_submission(assignment.name, student.id)
                except MissingEntry:
                    submission = None
                if submission is not None:
                    row["timestamp"] = submission.timestamp
                if (student.id, assignment.name) in not_graded:
                    pass  # no score: it is not graded
                elif submission is None:
                    row.update(raw_score=0.0, late_submission_penalty=0.0, score=0.0)
                else:
                    penalty = submission.late_submission_penalty
                    row.update(
                        raw_score=submission.score,
                        late_submission_penalty=penalty,
                        score=max(0.0, submission.score - penalty),
                    )
                writer.writerow(
                    "" if row.get(key) is None else str(row[key]) for key in NBGRADER_COLUMNS
                )


def collect_report(course: Course, records: list[GradingRecord], gb: Gradebook) -> ClassReport:
    """Read scores and per-test results from the gradebook, reasons from the records and the
    notes of submissions the machinery could not grade, messages from the graded notebooks."""
    report = ClassReport(not_graded=not_graded_submissions(course))
    for record in records:
        for problem in record.problems:
            report.attention.append((record.student, record.assignment, problem))
    for (student, assignment_name), reason in report.not_graded.items():
        report.attention.append(
            (
                student,
                assignment_name,
                f"not graded yet ({reason}); `course-grade grade` grades it at its next run",
            )
        )
    found: dict[tuple[str, str], Misunderstanding] = {}
    for assignment in gb.assignments:
        report.max_scores[assignment.name] = assignment.max_score
        ungraded = {who for who, name in report.not_graded if name == assignment.name}
        known = {notebook.name: _instructor_messages(notebook) for notebook in assignment.notebooks}
        for submission in gb.assignment_submissions(assignment.name):
            student = submission.student_id
            if student in ungraded:
                continue
            report.scores.setdefault(student, {})[assignment.name] = (
                submission.score,
                submission.max_score,
            )
            if submission.needs_manual_grade:
                report.attention.append((student, assignment.name, "needs manual grading"))
            lms = marked_late(course, Submission(student, assignment.name))
            if lms:
                report.attention.append((student, assignment.name, _lateness(lms, submission)))
            pages = sorted(course.folder("feedback", Submission(student, assignment.name)).glob(
                "*.html"
            ))  # fmt: skip
            report.feedback[(student, assignment.name)] = pages
            for message in _messages(course, Submission(student, assignment.name), known):
                key = (assignment.name, message)
                found.setdefault(key, Misunderstanding(assignment.name, message)).students.add(
                    student
                )
        for notebook in assignment.notebooks:
            report.tests += _test_cell_stats(assignment.name, notebook, ungraded)
    report.misunderstandings = sorted(
        found.values(), key=lambda m: (-len(m.students), m.assignment, m.message)
    )
    report.attention.sort()
    return report


def _misunderstanding(text: str) -> str | None:
    """The "likely misunderstanding" part of a message, its spaces collapsed, or None."""
    match = MISUNDERSTANDING.search(text)
    return (" ".join(match[1].split()) or None) if match else None


def _named(messages: set[str] | frozenset[str]) -> set[str]:
    """What those messages can name as a misunderstanding: each one (a check's `misunderstanding`
    argument) and its "likely misunderstanding" part (an `assert` message), spaces collapsed."""
    return {" ".join(message.split()) for message in messages} | {
        found for message in messages if (found := _misunderstanding(message))
    }


def _instructor_messages(notebook) -> dict[str, set[str]]:
    """Test cell name -> the misunderstandings its code (hidden tests included) or
    `autograder.checks` can name: the only ones the report counts."""
    from_checks = _named(checks_messages())
    return {
        cell.name: from_checks | _named(message_arguments(cell.source))
        for cell in notebook.source_cells
    }


def _messages(
    course: Course, submission: Submission, known: dict[str, dict[str, set[str]]]
) -> Iterator[str]:
    """The misunderstandings the failing test cells of a graded submission name, once each:
    only those the instructor wrote in that cell (`known`, by notebook and cell) or
    `autograder.checks` raises, whatever else the student's code put in an error."""
    folder = course.folder("autograded", submission)
    seen = set()
    for path in sorted(folder.glob("*.ipynb")):
        try:
            nb = nbformat.reads(read_file_no_follow(path, course.root).decode(), as_version=4)
        except Exception:  # noqa: BLE001 - an unreadable graded notebook shows no message
            continue
        for cell in nb.cells:
            if cell.cell_type != "code" or not utils.is_grade(cell) or utils.is_solution(cell):
                continue
            allowed = known.get(path.stem, {}).get(cell.metadata["nbgrader"].get("grade_id"), set())
            for output in cell.get("outputs", []):
                if output.get("output_type") != "error":
                    continue
                text = str(output.get("evalue", ""))
                if not MISUNDERSTANDING.search(text):
                    text = ANSI_ESCAPE.sub("", "\n".join(output.get("traceback", [])))
                message = _misunderstanding(text)
                if message in allowed and message not in seen:
                    seen.add(message)
                    yield message


def _lateness(lms: str, submission) -> str:
    """What the LMS's late flag and nbgrader's own late model (timestamp against due date,
    extension included) say of one submission."""
    flagged = f"{lms} marked it LATE"
    if submission.duedate is None:
        return (
            f"{flagged}; the gradebook has no due date for {submission.assignment.name}, so "
            "nbgrader counts it on time (give it one to apply nbgrader's late penalty)"
        )
    times = f"submitted {submission.timestamp or 'at no known time'}, due {submission.duedate} UTC"
    if submission.total_seconds_late > 0:
        return f"{flagged}; nbgrader counts it {submission.total_seconds_late:g} s late ({times})"
    return f"{flagged}, but nbgrader counts it on time ({times}): check the due date"


def _test_cell_stats(assignment: str, notebook, ungraded: set[str]) -> list[TestCellStats]:
    """How the class did on each test cell of a notebook; the students in `ungraded` (not
    graded) are not counted."""
    solutions = {cell.name for cell in notebook.solution_cells}
    sources = {cell.name: cell.source for cell in notebook.source_cells}
    scores_by_cell: dict[str, list[float]] = {}
    for submission in notebook.submissions:
        if submission.student.id in ungraded:
            continue
        for grade in submission.grades:
            scores_by_cell.setdefault(grade.cell.name, []).append(grade.score)
    stats = []
    for cell in notebook.grade_cells:
        if cell.name in solutions:
            continue
        scores = scores_by_cell.get(cell.name, [])
        failed = sum(1 for score in scores if score < cell.max_score)
        checks = describe_test_cell(sources.get(cell.name, ""))
        stats.append(
            TestCellStats(
                assignment, notebook.name, cell.name, cell.max_score, len(scores), failed, checks
            )
        )
    return stats


def write_report_csv(report: ClassReport, destination: Path) -> None:
    """One row per test cell: what it checks, how many students failed it."""
    with open(destination, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            [
                "assignment",
                "notebook",
                "test_cell",
                "checks",
                "max_points",
                "students",
                "failed",
                "failed_fraction",
            ]
        )
        for test in report.tests:
            writer.writerow(
                [
                    test.assignment,
                    test.notebook,
                    test.cell,
                    test.checks,
                    test.max_points,
                    test.students,
                    test.failed,
                    f"{test.failed_fraction:.3f}",
                ]
            )


CANVAS_COLUMNS = ["Student", "ID", "SIS User ID", "SIS Login ID", "Section"]


def write_canvas_csv(course: Course, report: ClassReport, gb: Gradebook, destination: Path) -> None:
    """The grades as Canvas's gradebook imports them: its five student columns, a "Points
    Possible" row, one column per assignment. A student known from a Canvas export is matched
    by their Canvas user id (ID); any other by their nbgrader id as SIS Login ID. A submission
    that is not graded has an empty cell, which Canvas's import leaves alone."""
    assignments = report.assignments
    with open(destination, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([*CANVAS_COLUMNS, *assignments])
        writer.writerow(
            ["Points Possible", "", "", "", "", *(f"{report.max_scores[a]:g}" for a in assignments)]
        )
        for student in sorted(set(report.scores) | {who for who, _ in report.not_graded}):
            try:
                record = gb.find_student(student)
                parts = (record.last_name, record.first_name)
            except MissingEntry:
                parts = ()
            name = ", ".join(part for part in parts if part)
            user_id = canvas_id(course, student)
            scores = report.scores.get(student, {})
            writer.writerow(
                [
                    _spreadsheet_safe(name or student),
                    user_id or "",
                    "",
                    "" if user_id else _spreadsheet_safe(student),
                    "",
                    *(f"{scores[a][0]:g}" if a in scores else "" for a in assignments),
                ]
            )


def _spreadsheet_safe(text: str) -> str:
    """A value a spreadsheet shows as text, never runs as a formula."""
    return f"'{text}" if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def histogram_svg(percentages: list[float], width: int = 420, height: int = 160) -> str:
    """An SVG bar chart of scores (0-100 %) in ten bins."""
    counts = [0] * HISTOGRAM_BINS
    for value in percentages:
        counts[min(int(value // (100 / HISTOGRAM_BINS)), HISTOGRAM_BINS - 1)] += 1
    tallest = max(counts) or 1
    bar_width = width / HISTOGRAM_BINS
    top, plot_height = 16, height - 46
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}">']
    for index, count in enumerate(counts):
        bar_height = plot_height * count / tallest
        x = index * bar_width
        y = top + plot_height - bar_height
        low = index * 100 // HISTOGRAM_BINS
        parts.append(
            f'<rect x="{x + 2:.1f}" y="{y:.1f}" width="{bar_width - 4:.1f}" '
            f'height="{bar_height:.1f}" fill="#4a78b5"><title>{low}-{low + 10} %: '
            f"{count}</title></rect>"
        )
        if count:
            parts.append(
                f'<text x="{x + bar_width / 2:.1f}" y="{y - 2:.1f}" font-size="11" '
                f'text-anchor="middle">{count}</text>'
            )
        parts.append(
            f'<text x="{x + bar_width / 2:.1f}" y="{height - 18}" font-size="10" '
            f'text-anchor="middle">{low}-{low + 10}</text>'
        )
    parts.append(
        f'<text x="{width / 2}" y="{height - 2}" font-size="11" text-anchor="middle">'
        "score, % of the maximum (number of students above each bar)</text></svg>"
    )
    return "".join(parts)


def failures_svg(tests: list[TestCellStats], width: int = 420) -> str:
    """A horizontal bar per test cell: the percentage of students who failed it."""
    row, label = 18, 150
    height = row * len(tests) + 22
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}">']
    for index, test in enumerate(tests):
        y = index * row
        bar = (width - label - 40) * test.failed_fraction
        parts.append(
            f'<text x="{label - 4}" y="{y + 13}" font-size="11" text-anchor="end">'
            f"{html.escape(test.cell[:24])}</text>"
            f'<rect x="{label}" y="{y + 3}" width="{bar:.1f}" height="{row - 6}" fill="#c0504d">'
            f"<title>{html.escape(test.cell)}: {test.failed}/{test.students}</title></rect>"
            f'<text x="{label + bar + 4:.1f}" y="{y + 13}" font-size="11">'
            f"{100 * test.failed_fraction:.0f} %</text>"
        )
    parts.append(
        f'<text x="{width / 2}" y="{height - 4}" font-size="11" text-anchor="middle">'
        "students who failed each test cell, %</text></svg>"
    )
    return "".join(parts)


def _mean_median(values: list[float]) -> str:
    if not values:
        return "no submissions"
    return f"mean {statistics.fmean(values):.2f}, median {statistics.median(values):g}"


def write_report_html(report: ClassReport, destination: Path) -> None:
    """The instructor's page (see the module's docstring); it works offline."""
    esc = html.escape
    assignments = report.assignments
    reasons: dict[tuple[str, str], list[str]] = {}
    for student, assignment, reason in report.attention:
        reasons.setdefault((student, assignment), []).append(reason)

    def link(student: str, assignment: str, text: str) -> str:
        pages = report.feedback.get((student, assignment), [])
        if not pages:
            return esc(text)
        target = Path(os.path.relpath(pages[0], destination.resolve().parent)).as_posix()
        return f'<a href="{esc(target)}">{esc(text)}</a>'

    header = "".join(f"<th>{esc(a)} ({report.max_scores[a]:g})</th>" for a in assignments)
    rows = []
    for student in sorted(set(report.scores) | {student for student, _, _ in report.attention}):
        scores = report.scores.get(student, {})
        cells = "".join(
            '<td class="num">NOT GRADED</td>'
            if (student, a) in report.not_graded
            else f'<td class="num">{link(student, a, f"{scores[a][0]:g}")}</td>'
            if a in scores
            else '<td class="num">-</td>'
            for a in assignments
        )
        partial = " (incomplete)" if report.incomplete(student) else ""
        notes = [
            f"{esc(assignment)}: {esc(reason)}"
            for (who, assignment), texts in sorted(reasons.items())
            if who == student
            for reason in texts
        ]
        rows.append(
            f"<tr><td>{esc(student)}</td>{cells}"
            f'<td class="num">{report.total(student):g} / {report.max_total:g}{partial}</td>'
            f"<td>{'<br>'.join(notes) or 'nothing'}</td></tr>"
        )
    summary = "".join(
        f"<li>{esc(a)}: {_mean_median([s[a][0] for s in report.scores.values() if a in s])} "
        f"of {report.max_scores[a]:g} points</li>"
        for a in assignments
    )
    totals = [report.total(student) for student in report.scores if not report.incomplete(student)]
    summary += f"<li>total: {_mean_median(totals)} of {report.max_total:g} points</li>"

    sections = []
    for assignment in assignments:
        percentages = [
            100 * score / maximum if maximum else 0.0
            for scores in report.scores.values()
            if (pair := scores.get(assignment)) is not None
            for score, maximum in [pair]
        ]
        tests = sorted(
            (t for t in report.tests if t.assignment == assignment),
            key=lambda t: -t.failed_fraction,
        )
        test_rows = "".join(
            f"<tr><td>{esc(t.notebook)}</td><td>{esc(t.cell)}</td><td>{esc(t.checks)}</td>"
            f'<td class="num">{t.max_points:g}</td><td class="num">{t.failed}/{t.students}</td>'
            f'<td class="num">{100 * t.failed_fraction:.0f} %</td></tr>'
            for t in tests
        )
        sections.append(
            f"<h3>{esc(assignment)}</h3><p>{len(percentages)} submissions.</p>"
            f'<div class="plots">{histogram_svg(percentages)}{failures_svg(tests)}</div>'
            "<table><tr><th>Notebook</th><th>Test cell</th><th>What it checks</th>"
            f"<th>Points</th><th>Failed</th><th>Failed fraction</th></tr>{test_rows}</table>"
        )

    frequent = report.misunderstandings[:MOST_FREQUENT]
    misunderstandings = (
        "<table><tr><th>Students</th><th>Assignment</th><th>Likely misunderstanding</th>"
        "<th>Who</th></tr>"
        + "".join(
            f'<tr><td class="num">{len(m.students)}</td><td>{esc(m.assignment)}</td>'
            f"<td>{esc(m.message)}</td><td>{esc(', '.join(sorted(m.students)))}</td></tr>"
            for m in frequent
        )
        + "</table>"
        if frequent
        else "<p>No failing test cell named a misunderstanding.</p>"
    )
    page = (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>Grading report</title>"
        "<style>body{font-family:sans-serif;max-width:72em;margin:auto;padding:0 1em}"
        "table{border-collapse:collapse;margin:.5em 0}"
        "td,th{border:1px solid #ccc;padding:2px 8px;vertical-align:top;overflow-wrap:anywhere}"
        "td.num{text-align:right;white-space:nowrap}th{background:#f0f0f0}"
        ".plots{display:flex;flex-wrap:wrap;gap:1em;align-items:flex-start}</style>"
        "</head><body><h1>Grading report</h1>"
        f"<h2>Class</h2><ul>{summary}</ul>"
        "<h2>Most frequent misunderstandings</h2>"
        "<p>From the teaching messages of the failing test cells, each student counted once "
        f"per message.</p>{misunderstandings}"
        "<h2>Students</h2><p>Each score links to the student's feedback page.</p>"
        f"<table><tr><th>Student</th>{header}<th>Total</th><th>Needs attention</th></tr>"
        f"{''.join(rows)}</table>"
        f"<h2>Assignments</h2>{''.join(sections)}"
        "</body></html>"
    )
    destination.write_text(page, encoding="utf-8")
