"""What the instructor reads after grading: nbgrader's grade export and a class report.

The report shows, per assignment, the distribution of scores (an inline SVG histogram)
and, per test cell, the fraction of students who did not get its full points: the concept
the class missed stands out. It also lists the submissions that need the instructor.
"""

from __future__ import annotations

import csv
import html
from dataclasses import dataclass, field
from pathlib import Path

from nbgrader.api import Gradebook
from nbgrader.plugins import CsvExportPlugin

from autograder.course import Course, GradingRecord, Submission
from autograder.submissions import marked_late

HISTOGRAM_BINS = 10


@dataclass
class TestCellStats:
    """How the class did on one test cell."""

    assignment: str
    notebook: str
    cell: str
    max_points: float
    students: int
    failed: int

    @property
    def failed_fraction(self) -> float:
        return self.failed / self.students if self.students else 0.0


@dataclass
class ClassReport:
    """Scores and test-cell results of every graded submission in the gradebook."""

    scores: dict[str, dict[str, tuple[float, float]]] = field(default_factory=dict)
    tests: list[TestCellStats] = field(default_factory=list)
    attention: list[tuple[str, str, str]] = field(default_factory=list)


def export_grades(course: Course, destination: Path) -> None:
    """nbgrader's own CSV export of the gradebook (the columns `nbgrader export` writes)."""
    with Gradebook(course.db_url, course.coursedir.course_id) as gb:
        CsvExportPlugin(to=str(destination), config=course.config).export(gb)


def collect_report(course: Course, records: list[GradingRecord]) -> ClassReport:
    """Read scores and per-test results from the gradebook; reasons from the records."""
    report = ClassReport()
    for record in records:
        for problem in record.problems:
            report.attention.append((record.student, record.assignment, problem))
    with Gradebook(course.db_url, course.coursedir.course_id) as gb:
        for assignment in gb.assignments:
            submissions = gb.assignment_submissions(assignment.name)
            for submission in submissions:
                scores = report.scores.setdefault(submission.student_id, {})
                scores[assignment.name] = (submission.score, submission.max_score)
                if submission.needs_manual_grade:
                    report.attention.append(
                        (submission.student_id, assignment.name, "needs manual grading")
                    )
                lms = marked_late(course, Submission(submission.student_id, assignment.name))
                if lms:
                    report.attention.append(
                        (submission.student_id, assignment.name, _lateness(lms, submission))
                    )
            for notebook in assignment.notebooks:
                report.tests += _test_cell_stats(assignment.name, notebook)
    report.attention.sort()
    return report


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


def _test_cell_stats(assignment: str, notebook) -> list[TestCellStats]:
    solutions = {cell.name for cell in notebook.solution_cells}
    scores_by_cell: dict[str, list[float]] = {}
    for submission in notebook.submissions:
        for grade in submission.grades:
            scores_by_cell.setdefault(grade.cell.name, []).append(grade.score)
    stats = []
    for cell in notebook.grade_cells:
        if cell.name in solutions:
            continue
        scores = scores_by_cell.get(cell.name, [])
        failed = sum(1 for score in scores if score < cell.max_score)
        stats.append(
            TestCellStats(assignment, notebook.name, cell.name, cell.max_score, len(scores), failed)
        )
    return stats


def write_report_csv(report: ClassReport, destination: Path) -> None:
    """One row per test cell: how many students failed it."""
    with open(destination, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            [
                "assignment",
                "notebook",
                "test_cell",
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
                    test.max_points,
                    test.students,
                    test.failed,
                    f"{test.failed_fraction:.3f}",
                ]
            )


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


def write_report_html(report: ClassReport, destination: Path) -> None:
    """The instructor's page: score histograms, test cells by failure rate, attention list."""
    esc = html.escape
    assignments = sorted({name for scores in report.scores.values() for name in scores})
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
        rows = "".join(
            f"<tr><td>{esc(t.notebook)}</td><td>{esc(t.cell)}</td><td>{t.max_points:g}</td>"
            f"<td>{t.failed}/{t.students}</td><td>{100 * t.failed_fraction:.0f} %</td></tr>"
            for t in tests
        )
        sections.append(
            f"<h2>{esc(assignment)}</h2><p>{len(percentages)} submissions.</p>"
            f"{histogram_svg(percentages)}"
            "<table><tr><th>Notebook</th><th>Test cell</th><th>Points</th><th>Failed</th>"
            f"<th>Failed fraction</th></tr>{rows}</table>"
        )
    attention = "".join(
        f"<tr><td>{esc(student)}</td><td>{esc(assignment)}</td><td>{esc(reason)}</td></tr>"
        for student, assignment, reason in report.attention
    )
    page = (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>Grading report</title>"
        "<style>body{font-family:sans-serif;max-width:60em;margin:auto}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 8px}</style>"
        "</head><body><h1>Grading report</h1>"
        f"{''.join(sections)}"
        "<h2>Submissions that need attention</h2>"
        "<table><tr><th>Student</th><th>Assignment</th><th>Reason</th></tr>"
        f"{attention}</table></body></html>"
    )
    destination.write_text(page, encoding="utf-8")
