"""Adversarial students: hidden tests leaked, the test machinery tampered with, cells copied.

One synthetic class (tests/test_grading_helpers.py) is graded by ONE `course-grade grade`
run; every test reads its results. The `mul` answer cell carries each attack: with a correct
`mul` when the attack only changes the machinery (its test cell must then lose its points),
with a wrong one when the attack would make a failing test look passed.
"""

from __future__ import annotations

import copy
import sqlite3
import subprocess
import uuid

import nbformat
import pytest
from test_grading_helpers import (
    ADD_ONLY,
    COMMAND,
    FULL,
    HIDDEN_LINE,
    NOTHING,
    changed_outside_grader_outputs,
    make_course,
    record,
    scores,
    solved,
    submit,
    tree_digest,
)

import autograder
from autograder import checks, feedback
from autograder.integrity import WITHHELD_MESSAGE

CORRECT = "\ndef mul(a, b):\n    return a * b\n"
WRONG = "\ndef mul(a, b):\n    return 0\n"
WITHHELD = "hw.ipynb cell 5 (test_mul): points withheld, the test machinery changed: "

# student: (the `mul` cell, expected scores, expected problems)
ATTACKS = {
    "honest": (CORRECT, FULL, []),
    "printer": (
        "get_ipython().events.register('pre_run_cell', lambda info: print(info.raw_cell))"
        + CORRECT,
        ADD_ONLY,
        [WITHHELD + "events.pre_run_cell changed"],
    ),
    "stasher": (
        "import linecache, sys\n"
        "from IPython.display import HTML, display\n"
        "STASH = []\n"
        "handle = display(HTML('placeholder'), display_id=True)\n"
        "def mul(a, b):\n"
        "    STASH.append(''.join(linecache.getlines(sys._getframe(1).f_code.co_filename)))\n"
        "    handle.update(HTML('<pre>' + '\\n'.join(STASH) + '</pre>'))\n"
        "    print(*STASH)\n"
        "    return a * b\n",
        FULL,
        [],
    ),
    "raiser": (
        "import linecache, sys\n"
        "def mul(a, b):\n"
        "    if a < 0:\n"
        "        frame = sys._getframe(1)\n"
        "        raise ValueError(''.join(linecache.getlines(frame.f_code.co_filename)))\n"
        "    return a * b\n",
        ADD_ONLY,
        [],
    ),
    "reloader": (
        "import importlib\nimportlib.reload = lambda module: module" + CORRECT,
        ADD_ONLY,
        [WITHHELD + "importlib.reload changed"],
    ),
    "importer": (
        "import builtins\nreal_import = builtins.__import__\n"
        "builtins.__import__ = lambda *args, **kwargs: real_import(*args, **kwargs)" + CORRECT,
        ADD_ONLY,
        [WITHHELD + "builtins.__import__ changed"],
    ),
    "finder": (
        "import sys\nclass Finder:\n    @staticmethod\n    def find_spec(*args):\n"
        "        return None\nsys.meta_path.insert(0, Finder)" + CORRECT,
        ADD_ONLY,
        [WITHHELD + "sys.meta_path changed"],
    ),
    "fake-sqlite": (
        "import sys, types\nsys.modules['sqlite3'] = types.ModuleType('sqlite3')" + CORRECT,
        ADD_ONLY,
        [
            WITHHELD + "sys.modules['sqlite3'] replaced; "
            f"sqlite3 is not loaded from {sqlite3.__file__}"
        ],
    ),
    "fake-checks": (
        "import sys, types\n"
        "sys.modules['autograder.checks'] = types.ModuleType('autograder.checks')" + CORRECT,
        ADD_ONLY,
        [
            WITHHELD + "sys.modules['autograder.checks'] replaced; "
            f"autograder.checks is not loaded from {checks.__file__}"
        ],
    ),
    # defeated rather than flagged: ipykernel sets sys.excepthook again for every request
    "excepthook": ("import sys\nsys.excepthook = lambda *args: None" + CORRECT, FULL, []),
    "assertion": (
        "import builtins\nbuiltins.AssertionError = Exception" + CORRECT,
        ADD_ONLY,
        [WITHHELD + "builtins.AssertionError changed"],
    ),
    "tracer": (
        "import sys\nsys.settrace(lambda *args: None)\nsys.settrace(None)" + CORRECT,
        ADD_ONLY,
        [WITHHELD + "sys.settrace called"],
    ),
    "pycache": (
        "import sys\nsys.pycache_prefix = '/tmp/elsewhere'" + CORRECT,
        ADD_ONLY,
        [WITHHELD + "sys.pycache_prefix changed"],
    ),
    # each of these would turn the wrong `mul` into 3 points, unnoticed, without the guard
    "silencer": (
        "get_ipython().showtraceback = lambda *args, **kwargs: None" + WRONG,
        ADD_ONLY,
        [WITHHELD + "shell.showtraceback replaced"],
    ),
    "transformer": (
        "get_ipython().input_transformers_cleanup.append(\n"
        "    lambda lines: [line for line in lines if not line.startswith('assert')]\n)"
        + WRONG,
        ADD_ONLY,
        [WITHHELD + "input_transformers_cleanup changed"],
    ),
    "ast-transformer": (
        "import ast\nclass DropAsserts(ast.NodeTransformer):\n"
        "    def visit_Assert(self, node):\n        return None\n"
        "get_ipython().ast_transformers.append(DropAsserts())" + WRONG,
        ADD_ONLY,
        [WITHHELD + "ast_transformers changed"],
    ),
    "runner": (
        "from IPython.core.interactiveshell import InteractiveShell\n"
        "real_run = InteractiveShell.run_cell_async\n"
        "async def run_cell_async(self, raw_cell, *args, **kwargs):\n"
        "    if 'assert' in raw_cell:\n"
        "        raw_cell, kwargs['transformed_cell'] = 'pass', 'pass'\n"
        "    return await real_run(self, raw_cell, *args, **kwargs)\n"
        "InteractiveShell.run_cell_async = run_cell_async" + WRONG,
        ADD_ONLY,
        [
            WITHHELD + "class IPython.core.interactiveshell.InteractiveShell changed; "
            "the cell stopped before its end, yet showed no error"
        ],
    ),
    "guard-replacer": (
        "import builtins\n"
        "for name in [name for name in vars(builtins) if name.startswith('_course_grade_')]:\n"
        "    setattr(builtins, name, lambda *args: 'looks fine')\n"
        "get_ipython().showtraceback = lambda *args, **kwargs: None" + WRONG,
        ADD_ONLY,
        [WITHHELD + "the integrity guard gave no valid answer"],
    ),
}
SHADOW = "shadow"  # submits its own autograder/checks.py beside the notebook
CONFIGURER = "configurer"  # submits IPython config files that would hide errors at start
HIDING_CONFIG = (
    "c.InteractiveShellApp.exec_lines = "
    "['get_ipython().showtraceback = lambda *args, **kwargs: None']\n"
)
SHADOW_REASON = (
    "points withheld, the test machinery changed: "
    f"autograder is not loaded from {autograder.__file__}; "
    f"autograder.checks is not loaded from {checks.__file__}; "
    "autograder.checks is not loaded by Python's own file loader"
)


def pasted(cell: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """A copy of `cell` as JupyterLab pastes it: a new id, the same metadata."""
    copied = copy.deepcopy(cell)
    copied.id = uuid.uuid4().hex[:8]
    return copied


def copied_test_cell(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """test_add pasted twice, the first copy edited (as if the student typed into it)."""
    test_add = next(c for c in nb.cells if c.metadata["nbgrader"]["grade_id"] == "test_add")
    edited = pasted(test_add)
    edited.source = "pass"
    index = nb.cells.index(test_add)
    nb.cells[index:index] = [edited]
    nb.cells.insert(index + 2, pasted(test_add))
    return nb


def copied_answer_cell(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    mul = next(c for c in nb.cells if c.metadata["nbgrader"]["grade_id"] == "mul")
    answer = pasted(mul)
    mul.source = "# my first try"
    nb.cells.insert(nb.cells.index(mul) + 1, answer)
    return nb


def added_grade_cell(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    cell = pasted(nb.cells[2])
    cell.metadata["nbgrader"].update(grade_id="my-test", points=10)
    cell.source = "assert mul(3, 3) == 9"
    nb.cells.append(cell)
    return nb


COPIES = {
    "copier": (
        copied_test_cell,
        [
            "hw.ipynb cell 3 is a copy of cell test_add: it was dropped",
            "hw.ipynb cell 5 is a copy of cell test_add: it was dropped",
        ],
    ),
    "answer-copier": (
        copied_answer_cell,
        ["hw.ipynb cell 5 is a copy of answer cell mul: it ran as an ordinary cell"],
    ),
    "adder": (
        added_grade_cell,
        [
            "hw.ipynb cell 6 had grading metadata with an id the assignment does not have "
            "('my-test'): it was removed and the cell ran as an ordinary cell"
        ],
    ),
}


@pytest.fixture(scope="class")
def graded(tmp_path_factory):
    """Every adversarial student graded by one course-grade run."""
    course = make_course(tmp_path_factory.mktemp("tamper") / "course")
    for student, (cell, _, _) in ATTACKS.items():
        submit(course, student, solved(course, mul=cell))
    for student, (change, _) in COPIES.items():
        submit(course, student, change(solved(course)))
    submit(course, SHADOW, solved(course))
    fake = course.root / "submitted" / SHADOW / "hw" / "autograder"
    fake.mkdir()
    (fake / "__init__.py").write_text("")
    (fake / "checks.py").write_text("def check(*args):\n    pass\n")
    submit(course, CONFIGURER, solved(course, mul=WRONG))
    for name in ("ipython_config.py", "ipython_kernel_config.py"):
        (course.root / "submitted" / CONFIGURER / "hw" / name).write_text(HIDING_CONFIG)
    course.digest_before_grading = tree_digest(course.root)
    result = subprocess.run(
        [COMMAND, "grade", "--jobs", "2"],
        cwd=course.root,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    return course


class TestAdversarialStudents:
    def test_nothing_outside_the_graders_outputs_changed(self, graded):
        after = tree_digest(graded.root)
        assert changed_outside_grader_outputs(graded.digest_before_grading, after) == set()

    def test_every_student_gets_exactly_the_points_of_honest_untampered_answers(self, graded):
        expected = {student: cells for student, (_, cells, _) in ATTACKS.items()}
        expected |= {student: FULL for student in COPIES}
        expected[SHADOW] = NOTHING
        expected[CONFIGURER] = ADD_ONLY  # the kernel starts before it gets the files
        assert scores(graded) == expected

    @pytest.mark.parametrize("student", list(ATTACKS))
    def test_each_tampering_route_has_its_exact_reason(self, graded, student):
        assert record(graded, student)["problems"] == ATTACKS[student][2]

    @pytest.mark.parametrize("student", list(COPIES))
    def test_copied_and_added_grade_cells_are_resolved_with_a_reason(self, graded, student):
        assert record(graded, student)["problems"] == COPIES[student][1]

    def test_a_submitted_autograder_package_withholds_every_test(self, graded):
        assert record(graded, SHADOW)["problems"] == [
            f"hw.ipynb cell 3 (test_add): {SHADOW_REASON}",
            f"hw.ipynb cell 5 (test_mul): {SHADOW_REASON}",
        ]

    def test_submitted_ipython_config_files_are_never_read(self, graded):
        assert record(graded, CONFIGURER)["problems"] == []

    def test_no_feedback_page_shows_a_hidden_test(self, graded):
        pages = sorted((graded.root / "feedback").glob("*/hw/hw.html"))
        assert len(pages) == len(ATTACKS) + len(COPIES) + 2
        hidden = HIDDEN_LINE.split(",")[0]
        for page in pages:
            text = page.read_text()
            assert hidden not in text and "mul(-2" not in text, page
            assert "BEGIN HIDDEN TESTS" not in text, page
        # the stasher's outputs (printed in the test cell, written into an earlier display)
        # reached the autograded notebook, but not the page
        stashed = (graded.root / "autograded" / "stasher" / "hw" / "hw.ipynb").read_text()
        assert "mul(-2" in stashed

    def test_a_failing_hidden_test_shows_only_its_teaching_message(self, graded):
        raiser = (graded.root / "feedback" / "raiser" / "hw" / "hw.html").read_text()
        assert "ValueError raised (its message is not shown" in raiser
        printer = (graded.root / "feedback" / "printer" / "hw" / "hw.html").read_text()
        assert WITHHELD_MESSAGE in printer


# --- what a teaching message may say ----------------------------------------------------------


def test_a_message_is_shown_only_when_the_instructor_wrote_it_in_the_cell():
    source = (
        "checks.check_equal(f(7), 8, 'f(7) returns', 'add one')\n"
        "assert g(), 'g must be true'\n"
    )
    allowed = feedback.message_arguments(source)
    assert allowed == {"add one", "g must be true"}
    wrong = {"ename": "AssertionError", "evalue": "f(7) returns\n  expected: 8\n  got:      9"}
    quoted = {**wrong, "evalue": wrong["evalue"] + "\n  likely misunderstanding: add one"}
    assert feedback.shown_message(quoted, allowed) == "AssertionError: add one"
    assert "8" not in feedback.shown_message(wrong, allowed)
    forged = {"ename": "AssertionError", "evalue": "f(7) returns"}  # a literal, not a message
    assert feedback.shown_message(forged, allowed).startswith("AssertionError raised (its message")
    invented = {"ename": "Secret_mul_neg2", "evalue": "x"}
    assert feedback.shown_message(invented, allowed) == feedback.UNKNOWN_ERROR
