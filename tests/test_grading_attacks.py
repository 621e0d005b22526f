"""More adversarial and careless students, found after the tamper, escape and input tests.

One synthetic class (tests/test_grading_helpers.py, plus a third test cell that imports
`autograder.checks` as the course's test cells do) is graded by ONE `course-grade grade` run
with a small disk budget and notebook output limit; every test reads its results.
"""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path

import nbformat
import pytest
import test_grading_helpers as helpers
from test_grading_helpers import (
    COMMAND,
    changed_outside_grader_outputs,
    make_course,
    record,
    scores,
    solved,
    submit,
    tree_digest,
)

CHECKED = (
    "import importlib\n"
    "import autograder.checks\n"
    "checks = importlib.reload(autograder.checks)\n"
    "checks.check_equal(mul(4, 5), 20, 'mul(4, 5) returns', 'multiply the two numbers')"
)
FULL = {"test_add": 2.0, "test_mul": 3.0, "test_checked": 1.0}
ADD_ONLY = {"test_add": 2.0, "test_mul": 0.0, "test_checked": 0.0}
WRONG = "\ndef mul(a, b):\n    return 0\n"
CORRECT = "\ndef mul(a, b):\n    return a * b\n"
DISK_MB = 10
NOTEBOOK_OUTPUT_BYTES = 3_000_000

# An audit hook sees each statement of a test cell before it runs: it reports the cell's end
# to the guard (the nonce is in the cell's text), hides the error and clears the failure, and
# undoes it all when a probe's code runs. A wrong `mul` earned every point, unflagged.
AUDITOR = r"""
import builtins, linecache, re, sys
def _hook(event, args):
    if event != "exec":
        return
    code, shell = args[0], get_ipython()
    if any(name.startswith("_course_grade_") for name in code.co_names):
        shell.__dict__.pop("showtraceback", None)
        return
    text = "".join(linecache.getlines(code.co_filename))
    found = re.search(r"(_course_grade_\w+)\('done', '(\w+)'\)", text)
    if found:
        getattr(builtins, found.group(1))("done", found.group(2))
        def quiet(*args, **kwargs):
            sys._getframe(1).f_locals["result"].error_in_exec = None
        shell.showtraceback = quiet
sys.addaudithook(_hook)
"""
# The same, from a wrapper around the kernel's receiving callback: it reads each request
# (test cell or probe) before the kernel handles it.
RECEIVER = r"""
import builtins, re, sys
shell = get_ipython()
stream = shell.kernel.shell_stream
real = stream._recv_callback
def spy(msg):
    data = b"".join(bytes(getattr(frame, "buffer", frame)) for frame in msg)
    if b"('probe', '" in data:
        shell.__dict__.pop("showtraceback", None)
    else:
        found = re.search(rb"(_course_grade_\w+)\('done', '(\w+)'\)", data)
        if found:
            getattr(builtins, found.group(1).decode())("done", found.group(2).decode())
            def quiet(*args, **kwargs):
                sys._getframe(1).f_locals["result"].error_in_exec = None
            shell.showtraceback = quiet
    return real(msg)
stream.on_recv(spy, copy=False)
"""
# The notebook's own `__builtins__` decides what `import` returns in a test cell; the
# `builtins` module, sys.modules and every import hook stay untouched.
FAKE_BUILTINS = r"""
import builtins, types
class Anything(types.ModuleType):
    def __getattr__(self, name):
        return Anything(name)
    def __call__(self, *args, **kwargs):
        return Anything("call")
real_import = builtins.__import__
def fake_import(name, *args, **kwargs):
    if name in ("importlib", "autograder", "autograder.checks"):
        return Anything(name)
    return real_import(name, *args, **kwargs)
__builtins__ = dict(vars(builtins), __import__=fake_import)
"""
# the runtime folder (connection file, ipc sockets) is the kernel's too, outside work/
RUNTIME_FILLER = (
    "import sys\nfrom pathlib import Path\n"
    "runtime = Path(sys.argv[sys.argv.index('-f') + 1]).parent\n"
    f"for i in range({3 * DISK_MB}):\n"
    "    (runtime / f'fill{i}').write_bytes(bytes(1024**2) + b'x')\n"
)

# one 300 MB message on iopub: the worker held three times that in memory before cutting it
BIG_MESSAGE = (
    "kernel = get_ipython().kernel\n"
    'body = b\'{"name": "stdout", "text": "\' + b\'x\' * 300_000_000 + b\'"}\'\n'
    "kernel.session.send(kernel.iopub_socket, 'stream', content=body, "
    "parent=kernel.get_parent('shell'))\n"
)


def withheld(cell: str, reason: str) -> str:
    return f"hw.ipynb {cell}: points withheld, the test machinery changed: {reason}"


def older_format(course) -> str:
    """The solved notebook as nbformat 3 writes it (an older Jupyter or another editor)."""
    return nbformat.writes(nbformat.convert(solved(course), 3), version=3)


def with_big_image(course) -> nbformat.NotebookNode:
    """A solved notebook holding a base64 image past the disk budget in a cell's outputs."""
    nb = solved(course)
    image = base64.b64encode(bytes(DISK_MB * 1024**2)).decode()
    nb.cells[1].outputs = [nbformat.v4.new_output("display_data", data={"image/png": image})]
    return nb


def chatty(course) -> nbformat.NotebookNode:
    """Five extra cells of 900 kB output each: each under the cell limit, not together."""
    nb = solved(course)
    nb.cells += [nbformat.v4.new_code_cell("print('y' * 900_000)") for _ in range(5)]
    return nb


def chatty_reason(cell: int) -> str:
    return (
        f"hw.ipynb cell {cell}: output cut at 1000000 bytes for the cell, "
        f"{NOTEBOOK_OUTPUT_BYTES} for the notebook"
    )


def stripped(course) -> nbformat.NotebookNode:
    """A solved notebook whose cells lost their metadata (an editor that drops it)."""
    nb = solved(course)
    for cell in nb.cells:
        cell.metadata = {}
    return nb


def answer_rewritten(course) -> nbformat.NotebookNode:
    """The mul answer cell and its test deleted, the answer written in a new cell instead."""
    nb = solved(course)
    ids = [cell.metadata["nbgrader"]["grade_id"] for cell in nb.cells]
    nb.cells[ids.index("mul")] = nbformat.v4.new_code_cell(CORRECT)
    del nb.cells[ids.index("test_mul")]
    return nb


def restored(*cells: str) -> list[str]:
    return [f"hw.ipynb test cell {cell} was deleted (restored from source/)" for cell in cells]


# student: (the submission, expected scores, expected problems)
STUDENTS = {
    "honest": (lambda course: solved(course), FULL, []),
    "auditor": (
        lambda course: solved(course, mul=AUDITOR + WRONG),
        ADD_ONLY,
        [
            withheld("cell 5 (test_mul)", "sys.addaudithook called"),
            withheld("cell 6 (test_checked)", "sys.addaudithook called"),
        ],
    ),
    "receiver": (
        lambda course: solved(course, mul=RECEIVER + WRONG),
        ADD_ONLY,
        [
            withheld(f"cell {i} (test_{name})", "shell_stream._recv_callback replaced")
            for i, name in ((5, "mul"), (6, "checked"))
        ],
    ),
    "builtins": (
        lambda course: solved(course, mul=FAKE_BUILTINS + WRONG),
        ADD_ONLY,
        [
            withheld(
                f"cell {i} (test_{name})", "the notebook's namespace or its __builtins__ replaced"
            )
            for i, name in ((5, "mul"), (6, "checked"))
        ],
    ),
    "runtime-filler": (
        lambda course: solved(course, mul=RUNTIME_FILLER + CORRECT),
        ADD_ONLY,
        [
            f"hw.ipynb cell 4 (mul): the kernel wrote more than {2 * DISK_MB} MB into its "
            "folder; the kernel was stopped and later cells scored 0"
        ],
    ),
    "big-message": (
        lambda course: solved(course, mul=BIG_MESSAGE + CORRECT),
        ADD_ONLY,
        None,  # two outcomes, depending on where the interrupt lands: see its own test
    ),
    "older-format": (older_format, FULL, []),
    "big-image": (
        with_big_image,
        {"test_add": 0.0, "test_mul": 0.0, "test_checked": 0.0},
        None,  # the reason names the file's size: see its own test
    ),
    "chatty": (chatty, FULL, [chatty_reason(10), chatty_reason(11)]),
    # nbgrader's OverwriteCells failed (KeyError) on both: every cell scored 0
    "stripped": (stripped, FULL, restored("test_add", "test_mul", "test_checked")),
    "answer-rewritten": (answer_rewritten, FULL, restored("test_mul")),
}


def course_with_checked_test(root: Path):
    """The helpers' course, with a third test cell (1 point) that uses autograder.checks."""
    plain = helpers.source_notebook

    def with_checked() -> nbformat.NotebookNode:
        nb = plain()
        metadata = helpers._meta("test_checked", points=1)
        nb.cells.append(nbformat.v4.new_code_cell(CHECKED, metadata=metadata))
        return nb

    helpers.source_notebook = with_checked
    try:
        return make_course(root)
    finally:
        helpers.source_notebook = plain


@pytest.fixture(scope="class")
def graded(tmp_path_factory):
    """Every student of STUDENTS graded by one course-grade run."""
    course = course_with_checked_test(tmp_path_factory.mktemp("attacks") / "course")
    with (course.root / "nbgrader_config.py").open("a") as config:
        config.write(f"c.GuardedExecute.notebook_output_limit_bytes = {NOTEBOOK_OUTPUT_BYTES}\n")
    for student, (make, _, _) in STUDENTS.items():
        submit(course, student, make(course))
    before = tree_digest(course.root)
    result = subprocess.run(
        [COMMAND, "grade", "--jobs", "2", "--disk-mb", str(DISK_MB)],
        cwd=course.root,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    return course, before


class TestMoreAttacks:
    def test_every_student_gets_exactly_the_points_expected(self, graded):
        course, _ = graded
        assert scores(course) == {student: cells for student, (_, cells, _) in STUDENTS.items()}

    @pytest.mark.parametrize(
        "student", [s for s, (_, _, why) in STUDENTS.items() if why is not None]
    )
    def test_each_student_has_exactly_the_reasons_expected(self, graded, student):
        course, _ = graded
        assert record(course, student)["problems"] == STUDENTS[student][2]

    def test_a_huge_message_times_its_cell_out(self, graded):
        """The kernel is still sending its 300 MB message when the cell's time is up. Whether it
        heeds the interrupt depends on where the signal lands: inside the socket's C code it is
        ignored and the kernel is stopped; between Python lines it interrupts the send, which
        leaves the kernel's message machinery patched half-way, and the guard withholds the
        later test cells. Both were seen in CI on busy cores; the points are the same."""
        course, _ = graded
        problems = record(course, "big-message")["problems"]
        stopped = [
            "hw.ipynb cell 4 (mul): timed out after 3 s and ignored the interrupt; "
            "the kernel was stopped and later cells scored 0"
        ]
        interrupted = [
            "hw.ipynb cell 4 (mul): timed out after 3 s and was interrupted",
            withheld("cell 5 (test_mul)", "control_stream._send_callback replaced"),
            withheld("cell 6 (test_checked)", "control_stream._send_callback replaced"),
        ]
        assert problems in (stopped, interrupted)

    def test_a_notebook_past_the_disk_budget_is_not_read(self, graded):
        course, _ = graded
        size = (course.root / "submitted" / "big-image" / "hw" / "hw.ipynb").stat().st_size
        assert size > DISK_MB * 1024**2
        assert record(course, "big-image")["problems"] == [
            f"hw.ipynb is not a valid notebook (too large: {size} bytes, past --disk-mb): "
            "its cells scored 0"
        ]

    def test_a_notebooks_outputs_are_bounded_together(self, graded):
        course, _ = graded
        graded_notebook = course.root / "autograded" / "chatty" / "hw" / "hw.ipynb"
        assert graded_notebook.stat().st_size < NOTEBOOK_OUTPUT_BYTES + 100_000

    def test_nothing_outside_the_graders_outputs_changed(self, graded):
        course, before = graded
        assert changed_outside_grader_outputs(before, tree_digest(course.root)) == set()
