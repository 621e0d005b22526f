"""Feedback pages that show each test's result, points and teaching message, and nothing else.

nbgrader's own `generate_feedback` renders the autograded notebook as it is: the test cells
restored from source/ with their hidden tests, and every output the student's kernel sent.
Those outputs are not safe to show. A student's hook can print each cell's source as it
runs, an answer can stash a hidden test's text and print it in a later cell, update an
earlier cell's display, or raise an error quoting it; a failing check's own message quotes
the inputs it used. So here the same converter settings, template and `GetGrades`
preprocessor are used with one more step, `WithholdOutputs`:

- hidden-test regions are removed from the cells' source (nbgrader's `ClearHiddenTests`);
- no output the kernel sent is shown, of any cell; the notebook's metadata keeps only its
  kernelspec and language (widget state, which a kernel writes, is dropped);
- a failing test cell shows one line the grader builds: the teaching message, when the
  error's message (or its "likely misunderstanding" part) is a message the instructor wrote
  in that cell (an `assert` message, or the `misunderstanding` argument of a check) or one
  `autograder.checks` raises itself; else only the error's name when it is one of Python's
  built-in exceptions or the grader's own; else a fixed sentence.

What a student can learn from the page is therefore bounded by what the instructor wrote as
teaching messages (which must not quote hidden inputs or expected values; the assignments'
tests check theirs) plus pass or fail and points per cell. Code that reads a hidden test
while it runs can still choose which of those few results the cell shows: a covert channel
of a few bits per test cell per submission, never the test's text.
"""

from __future__ import annotations

import ast
import builtins
import functools
import inspect
import secrets
from pathlib import Path

import nbformat
from nbconvert.exporters import HTMLExporter
from nbconvert.preprocessors import CSSHTMLHeaderPreprocessor
from nbgrader import server_extensions as nbgrader_server_extensions
from nbgrader import utils
from nbgrader.converters import GenerateFeedback
from nbgrader.preprocessors import ClearHiddenTests, GetGrades
from traitlets.config import Config

from autograder import checks
from autograder.course import Course, Submission
from autograder.integrity import WITHHELD_ENAME, WITHHELD_MESSAGE
from autograder.safe_files import (
    UnsafePath,
    open_folder,
    read_file_no_follow,
    remove_no_follow,
    write_file_no_follow,
)

MISUNDERSTANDING = "\n  likely misunderstanding: "
BUILTIN_ERRORS = frozenset(
    name
    for name, value in vars(builtins).items()
    if isinstance(value, type) and issubclass(value, BaseException)
)
GRADER_ERRORS = {
    WITHHELD_ENAME: WITHHELD_MESSAGE,
    "CellTimeoutError": "the cell ran out of time and was interrupted",
    "CellNotRun": "not run: the kernel had been stopped by an earlier cell",
    "KernelFailed": "the kernel failed",
}
UNKNOWN_ERROR = "the test failed (its error is not shown: it may quote the test's inputs)"
# The feedback template: nbgrader's "feedback" with a contents list naming what each test cell
# checks, wrapping lines and no MathJax from a CDN (autograder/templates/feedback/).
TEMPLATES = Path(__file__).resolve().parent / "templates"
NBGRADER_TEMPLATES = Path(nbgrader_server_extensions.__file__).parent / "formgrader" / "templates"
FEEDBACK_TEMPLATE_FILE = "course_feedback.html.j2"
TITLE_CHARACTERS = 120
# The files nbgrader's release_feedback reads beside each student's feedback pages.
SUBMISSION_SECRET = "submission_secret.txt"
TIMESTAMP = "timestamp.txt"


def message_arguments(source: str) -> set[str]:
    """The teaching messages written in a test cell's code: `assert` messages and the
    `misunderstanding` argument of every call of a check from `autograder.checks`."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return set()
    messages = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Assert) and isinstance(node.msg, ast.Constant):
            messages.add(node.msg.value)
        elif isinstance(node, ast.Call):
            messages |= _misunderstanding_argument(node)
    return {message for message in messages if isinstance(message, str)}


def _misunderstanding_argument(call: ast.Call) -> set[str]:
    argument = _check_arguments(call).get("misunderstanding")
    return {argument.value} if isinstance(argument, ast.Constant) else set()


def _check_arguments(call: ast.Call) -> dict[str, ast.AST]:
    """The arguments of a call of a check from `autograder.checks`, by parameter name ({} for
    any other call, or one whose arguments cannot be told apart)."""
    name = call.func.attr if isinstance(call.func, ast.Attribute) else getattr(call.func, "id", "")
    check = getattr(checks, name, None)
    if not callable(check) or not hasattr(check, "__code__"):
        return {}
    if any(isinstance(arg, ast.Starred) for arg in call.args) or any(
        keyword.arg is None for keyword in call.keywords
    ):
        return {}
    try:
        bound = inspect.signature(check).bind_partial(
            *call.args, **{keyword.arg: keyword.value for keyword in call.keywords}
        )
    except TypeError:
        return {}
    return dict(bound.arguments)


def describe_test_cell(source: str) -> str:
    """What a test cell checks, in one line, from its code: its leading comment, else the `what`
    of its checks, else its `assert` messages ("" when none says)."""
    comment = []
    for line in source.strip().splitlines():
        if not line.startswith("#") or line.startswith("###"):
            break
        comment.append(line.lstrip("#").strip())
    said = [" ".join(comment)] if any(comment) else []
    if not said:
        try:
            tree = ast.parse(source)
        except SyntaxError:
            tree = ast.Module(body=[], type_ignores=[])
        whats, asserts = [], []
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                what = _check_arguments(node).get("what")
                if isinstance(what, ast.Constant) and isinstance(what.value, str):
                    whats.append(what.value)
            elif isinstance(node, ast.Assert) and isinstance(node.msg, ast.Constant):
                asserts.append(str(node.msg.value))
        said = list(dict.fromkeys(whats or asserts))
    text = "; ".join(said)
    return text if len(text) <= TITLE_CHARACTERS else f"{text[: TITLE_CHARACTERS - 1]}…"


@functools.cache
def checks_messages() -> frozenset[str]:
    """The teaching messages `autograder.checks` itself raises."""
    return frozenset(message_arguments(Path(checks.__file__).read_text()))


def shown_message(error: dict, allowed: set[str]) -> str:
    """The one line a failing test cell shows for its error output."""
    ename, evalue = str(error.get("ename", "")), str(error.get("evalue", ""))
    if ename in GRADER_ERRORS:
        return f"{ename}: {GRADER_ERRORS[ename]}"
    message = evalue.rpartition(MISUNDERSTANDING)[2]
    if ename == "AssertionError" and (message in allowed or message in checks_messages()):
        return f"AssertionError: {message}"
    if ename in BUILTIN_ERRORS:
        return f"{ename} raised (its message is not shown: it may quote the test's inputs)"
    return UNKNOWN_ERROR


class WithholdOutputs(ClearHiddenTests):
    """Remove hidden tests and every kernel output; a failing test cell gets one line."""

    def preprocess(self, nb, resources):  # noqa: D102 - nbconvert's signature
        nb.metadata = nbformat.NotebookNode(
            {key: nb.metadata[key] for key in ("kernelspec", "language_info") if key in nb.metadata}
        )
        return super().preprocess(nb, resources)

    def preprocess_cell(self, cell, resources, cell_index):  # noqa: D102 - nbconvert's signature
        if cell.cell_type != "code":
            return super().preprocess_cell(cell, resources, cell_index)
        allowed = message_arguments(cell.source)
        outputs = cell.get("outputs", [])
        cell, resources = super().preprocess_cell(cell, resources, cell_index)
        cell.outputs = []
        if not utils.is_grade(cell):
            return cell, resources
        # the contents list's title, from what is left once the hidden tests are removed
        cell.metadata["course_grade"] = {"title": describe_test_cell(cell.source)}
        errors = [output for output in outputs if output.get("output_type") == "error"]
        if errors:
            line = shown_message(errors[-1], allowed)
        elif any(output.get("name") == "stderr" for output in outputs):
            line = "the cell wrote to stderr, which counts as a failure"
        else:
            return cell, resources
        cell.outputs = [
            nbformat.v4.new_output("stream", name="stdout", text=f"{line}\n"),
        ]
        return cell, resources


FEEDBACK_PREPROCESSORS = (GetGrades, WithholdOutputs, CSSHTMLHeaderPreprocessor)


def leak_free_feedback_config() -> Config:
    """nbgrader settings under which every route to feedback (`nbgrader generate_feedback`,
    formgrader's buttons, course-grade) renders the same leak-free page: merge it into the
    course's nbgrader_config.py. nbgrader's API forces the template name "feedback"; ours is
    found first, and its page file extends nbgrader's."""
    config = Config()
    config.GenerateFeedback.preprocessors = list(FEEDBACK_PREPROCESSORS)
    config.HTMLExporter.template_name = "feedback"
    config.HTMLExporter.template_file = FEEDBACK_TEMPLATE_FILE
    config.HTMLExporter.extra_template_basedirs = [str(TEMPLATES), str(NBGRADER_TEMPLATES)]
    return config


def feedback_exporter(course: Course) -> HTMLExporter:
    """An HTML exporter configured as nbgrader's generate_feedback, with the leak-free
    preprocessors and template whatever the course's configuration says."""
    config = Config(course.config)
    config.merge(leak_free_feedback_config())
    converter = GenerateFeedback(coursedir=course.coursedir, config=config)
    exporter = HTMLExporter(parent=converter, config=converter.config)
    for preprocessor in FEEDBACK_PREPROCESSORS:
        exporter.register_preprocessor(preprocessor(parent=exporter), enabled=True)
    return exporter


def write_feedback(course: Course, submission: Submission, exporter: HTMLExporter) -> list[Path]:
    """Render every autograded notebook of `submission` into feedback/; return the pages."""
    autograded = course.folder("autograded", submission)
    destination = course.folder("feedback", submission)
    remove_no_follow(destination, course.root)
    with open_folder(destination, course.root, create=True):
        pass
    for name, fallback in ((TIMESTAMP, ""), (SUBMISSION_SECRET, secrets.token_hex(64))):
        try:
            content: bytes | str = read_file_no_follow(autograded / name, course.root)
        except UnsafePath:  # missing (or a link)
            # nbgrader's release_feedback stops at a feedback folder without these files; a
            # submission that never went through the exchange gets a secret nobody holds
            content = fallback
        write_file_no_follow(destination / name, content, course.root)
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
        write_file_no_follow(page, html, course.root)
        pages.append(page)
    return pages
