"""Feedback pages that show every test's result, points and message, never hidden-test source.

nbgrader's own `generate_feedback` renders the autograded notebook, whose test cells were
restored from source/ with their hidden tests: the page shows them (and the traceback of
a failing hidden assert quotes its line). Here the same converter settings, template and
`GetGrades` preprocessor are used, with one more step: nbgrader's `ClearHiddenTests`
removes the hidden region from the cell, and the cell's error outputs are cut down to
"Error: message", which keeps the assertion message and drops the quoted source.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import nbformat
from nbconvert.exporters import HTMLExporter
from nbconvert.preprocessors import CSSHTMLHeaderPreprocessor
from nbgrader.converters import GenerateFeedback
from nbgrader.preprocessors import ClearHiddenTests, GetGrades

from autograder.course import Course, Submission


class HideHiddenTests(ClearHiddenTests):
    """Remove hidden-test source from a cell and from the tracebacks of its errors."""

    def preprocess_cell(self, cell, resources, cell_index):  # noqa: D102 - nbconvert's signature
        before = cell.source
        cell, resources = super().preprocess_cell(cell, resources, cell_index)
        if cell.source != before:
            for output in cell.get("outputs", []):
                if output.output_type == "error":
                    message = f": {output.evalue}" if output.evalue else ""
                    output.traceback = [f"{output.ename}{message}"]
        return cell, resources


def feedback_exporter(course: Course) -> HTMLExporter:
    """An HTML exporter configured as nbgrader's generate_feedback, plus HideHiddenTests."""
    converter = GenerateFeedback(coursedir=course.coursedir, config=course.config)
    exporter = HTMLExporter(parent=converter, config=converter.config)
    for preprocessor in (GetGrades, HideHiddenTests, CSSHTMLHeaderPreprocessor):
        exporter.register_preprocessor(preprocessor(parent=exporter), enabled=True)
    return exporter


def write_feedback(course: Course, submission: Submission, exporter: HTMLExporter) -> list[Path]:
    """Render every autograded notebook of `submission` into feedback/; return the pages."""
    autograded = course.folder("autograded", submission)
    destination = course.folder("feedback", submission)
    shutil.rmtree(destination, ignore_errors=True)
    destination.mkdir(parents=True)
    if (autograded / "timestamp.txt").exists():
        shutil.copyfile(autograded / "timestamp.txt", destination / "timestamp.txt")
    pages = []
    for path in sorted(autograded.glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        resources = {
            "unique_key": path.stem,
            "metadata": {"name": path.stem},
            "nbgrader": {
                "student": submission.student,
                "assignment": submission.assignment,
                "notebook": path.stem,
                "db_url": course.db_url,
            },
        }
        html, _ = exporter.from_notebook_node(nb, resources=resources)
        page = destination / f"{path.stem}.html"
        page.write_text(html, encoding="utf-8")
        pages.append(page)
    return pages
