"""The kernel's sandbox: no course files, no other submissions, no home, no network, limits.

Needs bubblewrap (`make system-packages`): without it these tests fail, they never skip.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from test_grading_helpers import ASSIGNMENT, make_course, scores, solved, submit
from traitlets.config import Config

from autograder.execute import KernelWatch, NotebookRunner
from autograder.sandbox import SandboxPolicy, make_policy, sandbox_problem

MEMORY_LIMIT = 768 * 1024**2  # an idle kernel needs about 550 MiB of address space


def attempt(code: str) -> str:
    """A cell that prints what happened when it tried `code`."""
    return (
        "try:\n"
        + "".join(f"    {line}\n" for line in code.splitlines())
        + "    print('GOT IT')\n"
        + "except BaseException as error:\n"
        + "    print('REFUSED', type(error).__name__)\n"
    )


SECRET_NAME = "COURSE_GRADE_SANDBOX_SECRET"
ENVIRONMENTS = """import os
for pid in (p for p in os.listdir('/proc') if p.isdigit()):
    print(open(f'/proc/{pid}/environ').read())
"""


@pytest.fixture(scope="module")
def sandboxed_outputs(tmp_path_factory):
    assert shutil.which("bwrap"), "bubblewrap is missing: run `make system-packages`"
    root = tmp_path_factory.mktemp("sandbox")
    course = make_course(root / "course")
    policy = make_policy(MEMORY_LIMIT, cpu_seconds=4)
    submit(course, "other", solved(course))
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    home = Path.home()
    bound_in_home = {
        Path(path).relative_to(home).parts[0]
        for path in policy.read_only
        if Path(path).is_relative_to(home)
    }
    workdir = root / "work"
    workdir.mkdir()
    cells = [
        attempt(f"open({str(course.root / 'source' / ASSIGNMENT / 'hw.ipynb')!r}).read()"),
        attempt(f"open({str(course.root / 'gradebook.db')!r}, 'rb').read()"),
        attempt(
            f"open({str(course.root / 'submitted' / 'other' / ASSIGNMENT / 'hw.ipynb')!r}).read()"
        ),
        attempt(f"import os\nassert set(os.listdir({str(home)!r})) - {bound_in_home!r}"),
        attempt(f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2)"),
        attempt("import socket\nsocket.create_connection(('1.1.1.1', 53), timeout=2)"),
        attempt(f"memory = bytearray({MEMORY_LIMIT + 100 * 1024**2})"),
        attempt("open('written.txt', 'w').write('mine')\nimport autograder, sqlalchemy"),
        attempt("open('/etc/shadow').read()"),
        ENVIRONMENTS,
        "while True:\n    pass",
    ]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    nb.metadata.kernelspec = {"name": "python3", "display_name": "Python 3", "language": "python"}
    config = Config()
    config.Execute.timeout = 30
    assert sandbox_problem(policy, root / "probe") is None
    os.environ[SECRET_NAME] = "the grader's secret"
    try:
        runner = NotebookRunner(policy, config, prefetch=False)
        result = runner.run(nbformat.writes(nb), str(workdir))
    finally:
        del os.environ[SECRET_NAME]
    listener.close()
    executed = nbformat.reads(result.notebook_json, as_version=4)
    outputs = ["".join(o.get("text", "") for o in cell.outputs) for cell in executed.cells]
    return outputs, result.problems, workdir


@pytest.mark.parametrize(
    "index, what",
    [
        (0, "source/"),
        (1, "the gradebook"),
        (2, "another student's submission"),
        (3, "the instructor's home"),
        (4, "a socket on this machine"),
        (5, "the network"),
    ],
)
def test_the_kernel_cannot_reach(sandboxed_outputs, index, what):
    outputs, _, _ = sandboxed_outputs
    assert outputs[index].startswith("REFUSED"), (what, outputs[index])


def test_the_kernel_cannot_allocate_past_the_memory_limit(sandboxed_outputs):
    outputs, _, _ = sandboxed_outputs
    assert outputs[6] == "REFUSED MemoryError\n"


def test_the_kernel_can_write_its_folder_and_import_the_course_packages(sandboxed_outputs):
    outputs, _, workdir = sandboxed_outputs
    assert outputs[7] == "GOT IT\n"
    assert (workdir / "written.txt").read_text() == "mine"


def test_the_kernel_cannot_read_the_hosts_secrets(sandboxed_outputs):
    outputs, _, _ = sandboxed_outputs
    assert outputs[8] == "REFUSED FileNotFoundError\n"  # /etc/shadow


def test_no_process_in_the_sandbox_has_the_graders_environment(sandboxed_outputs):
    outputs, _, _ = sandboxed_outputs
    assert "HOME=" in outputs[9] and "NBGRADER_EXECUTION=autograde" in outputs[9]
    assert SECRET_NAME not in outputs[9] and "secret" not in outputs[9]


def test_the_kernel_is_stopped_at_the_cpu_time_limit(sandboxed_outputs):
    _, problems, _ = sandboxed_outputs
    assert problems == [
        "cell 11: the kernel and its processes together used more than 4 s of CPU time; "
        "the kernel was stopped and later cells scored 0"
    ]


def test_a_policy_that_cannot_start_is_reported(tmp_path):
    broken = SandboxPolicy(MEMORY_LIMIT, 10, read_only=(str(tmp_path / "does-not-exist"),))
    assert "bubblewrap could not start" in sandbox_problem(broken, tmp_path / "probe")


def test_grading_without_bubblewrap_warns_and_still_grades(tmp_path):
    course = make_course(tmp_path / "course")
    submit(course, "alice", solved(course))
    tools = tmp_path / "bin"
    tools.mkdir()
    (tools / "prlimit").symlink_to(shutil.which("prlimit"))
    environment = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{tools}"}
    result = subprocess.run(
        [str(Path(sys.executable).parent / "course-grade"), "grade", "--jobs", "1"],
        cwd=course.root,
        env=environment,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert "WARNING: kernels run WITHOUT the sandbox (bubblewrap (bwrap) is not installed)" in (
        " ".join(result.stderr.split())
    )
    assert scores(course) == {"alice": {"test_add": 2.0, "test_mul": 3.0}}


def test_without_a_cgroup_a_kernel_filling_its_folder_is_still_stopped(tmp_path):
    policy = dataclasses.replace(
        make_policy(MEMORY_LIMIT, cpu_seconds=30, disk_bytes=1024**2), hierarchy=None
    )
    assert "limits per process only" in policy.describe()
    fill = (
        "import os, time\n"
        "for name in 'abc':\n"
        "    with open(name, 'wb') as handle:\n"
        "        os.posix_fallocate(handle.fileno(), 0, 900 * 1024)\n"
        "time.sleep(30)"
    )
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(fill)])
    nb.metadata.kernelspec = {"name": "python3", "display_name": "Python 3", "language": "python"}
    config = Config()
    config.Execute.timeout = 20
    workdir = tmp_path / "work"
    workdir.mkdir()
    result = NotebookRunner(policy, config, prefetch=False).run(nbformat.writes(nb), str(workdir))
    assert result.problems == [
        "cell 1: the kernel wrote more than 2 MB into its folder; the kernel was stopped and "
        "later cells scored 0",
        "kernel's folder: b not copied: 921600 bytes, over the size budget (126976 bytes left)",
        "kernel's folder: c not copied: 921600 bytes, over the size budget (126976 bytes left)",
    ]


def test_the_folder_watch_skips_a_file_the_kernel_removes_while_it_counts(tmp_path, monkeypatch):
    """SQLite deletes its journal at each commit: a watch that met one between listing the
    folder and reading the file's size used to die: the folder was then checked only as each
    cell ended, while the cell could write on."""
    folder = tmp_path / "kernel"
    folder.mkdir()
    (folder / "crud.db").write_bytes(b"x" * 64 * 1024)
    journal = folder / "crud.db-journal"
    journal.write_bytes(b"j" * 4096)
    listing = os.scandir

    def list_then_commit(path):
        entries = list(listing(path))
        journal.unlink(missing_ok=True)
        return iter(entries)

    monkeypatch.setattr(os, "scandir", list_then_commit)
    assert KernelWatch(None, folder, 1024**2, kill=lambda: None).exceeded() is None
    journal.write_bytes(b"j" * 4096)
    assert KernelWatch(None, folder, 16 * 1024, kill=lambda: None).exceeded() == (
        "the kernel wrote more than 0 MB into its folder"
    )
