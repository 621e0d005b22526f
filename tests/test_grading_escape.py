"""Submissions that try to escape the grader: links out of the kernel's folder or out of
submitted/, the grader's secrets, the disk, memory, processes, CPU and wall-clock time.

One `course-grade grade` run grades the whole adversarial class; every test checks the exact
points and reasons, and that nothing outside the submissions' own folders changed.
Needs bubblewrap and a writable cgroup hierarchy (as on CI); without them these tests fail.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import nbformat
import pytest
from test_grading_helpers import (
    ADD_ONLY,
    ASSIGNMENT,
    COMMAND,
    FULL,
    NOTHING,
    changed_outside_grader_outputs,
    make_course,
    record,
    scores,
    solved,
    submit,
    tree_digest,
)

from autograder.cgroups import Hierarchy, find_hierarchy
from autograder.course import Course

SECRET_NAME = "COURSE_GRADE_TEST_SECRET"
MUL = "def mul(a, b):\n    return a * b\n"
# Limits that hold on two cores shared with another test process and more (`make test` runs
# two): the memory-spreading student's page faults and the kernel's reclaim once near the memory
# limit cost CPU, so the CPU budget leaves room for them (at 3 s the CPU limit was seen first);
# the spinner (SPIN_SECONDS in each of four processes) must pass the CPU budget before the cell's
# wall-clock limit stops it (at 4 s it did not).
MEMORY_MB, PROCESSES, CPU_SECONDS, DISK_MB, CELL_TIMEOUT, NOTEBOOK_TIMEOUT = 1200, 64, 6, 8, 15, 18
SPIN_SECONDS = 2
SLEEP = 10  # the slow student's two cells: each under CELL_TIMEOUT, both over NOTEBOOK_TIMEOUT
OPTIONS = [
    f"--memory-mb={MEMORY_MB}",
    f"--max-processes={PROCESSES}",
    f"--cpu-seconds={CPU_SECONDS}",
    f"--disk-mb={DISK_MB}",
    f"--timeout={CELL_TIMEOUT}",
    f"--notebook-timeout={NOTEBOOK_TIMEOUT}",
]
KERNEL = "hw.ipynb kernel's folder: "
STOPPED = "; the kernel was stopped and later cells scored 0"
# What grading may change: the graded submissions' folders, the gradebook and the reports.

SNOOP = """import os
for pid in sorted(p for p in os.listdir('/proc') if p.isdigit()):
    try:
        print(pid, open(f'/proc/{pid}/environ').read().replace(chr(0), ' '))
    except OSError as error:
        print(pid, type(error).__name__)
print(dict(os.environ))
try:
    print(open('/etc/shadow').read())
except OSError as error:
    print('shadow', type(error).__name__)
"""
SPARSE = """with open('sparse.bin', 'wb') as handle:
    handle.truncate(5 * 1024**2)
try:
    with open('huge.bin', 'wb') as handle:
        handle.truncate(3 * 1024**3)
except OSError as error:
    print('3 GB refused:', error.strerror)
"""
HOARD = "for name in 'abc':\n    open(f'{name}.bin', 'wb').write(b'x' * 3 * 1024**2)\n"
FILL = """import os, time
for name in 'abc':
    with open(f'{name}.bin', 'wb') as handle:
        os.posix_fallocate(handle.fileno(), 0, 6 * 1024**2)
time.sleep(30)
"""
SWARM = """import time
for number in range(1500):
    open(f'f{number:04}', 'w').close()
time.sleep(30)
"""
SPREAD = """import os, time
children = []
for _ in range(6):
    pid = os.fork()
    if pid == 0:
        block = bytearray(250 * 1024**2)
        time.sleep(30)
        os._exit(0)
    children.append(pid)
for pid in children:
    os.waitpid(pid, 0)
"""
STORM = """import os, time
try:
    for _ in range(500):
        if os.fork() == 0:
            time.sleep(30)
            os._exit(0)
except OSError as error:
    print('fork refused:', type(error).__name__)
"""
SPIN = f"""import os, time
children = []
for _ in range(4):
    pid = os.fork()
    if pid == 0:
        while time.process_time() < {SPIN_SECONDS}:
            pass
        os._exit(0)
    children.append(pid)
for pid in children:
    os.waitpid(pid, 0)
"""


def links_to(root: Path) -> dict[str, str]:
    """Student (kernel-side) code planting links to the course's files."""
    victim = root / "submitted" / "victim" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb"
    return {
        "linker": f"import os\nos.symlink({str(victim)!r}, 'hw.ipynb')\n",
        "rooter": (
            "import os\n"
            f"os.symlink({str(root / 'source' / ASSIGNMENT / 'hw.ipynb')!r}, 'hw.ipynb')\n"
            f"os.symlink({str(root)!r}, 'course')\n"
            "os.remove('data.txt')\n"
            f"os.symlink({str(root / 'planted.txt')!r}, 'data.txt')\n"
        ),
    }


def expected(root: Path) -> dict[str, tuple[dict[str, float], list[str]]]:
    """student: (scores, the record's exact problems)."""
    mirror = root / "submitted" / "mirror" / ASSIGNMENT
    return {
        "victim": (FULL, []),
        "backedup": (FULL, []),  # the instructor's backup hard-linked its notebook: innocent
        "linker": (
            FULL,
            [f"{KERNEL}hw.ipynb not copied: a notebook (the graded one is the grader's)"],
        ),
        "rooter": (
            FULL,
            [
                f"{KERNEL}course not copied: a symbolic link",
                f"{KERNEL}data.txt not copied: a symbolic link",
                f"{KERNEL}hw.ipynb not copied: a notebook (the graded one is the grader's)",
            ],
        ),
        "hardlinker": (
            FULL,
            [
                f"{KERNEL}data.txt not copied: a hard link to another file",
                f"{KERNEL}twin.txt not copied: a hard link to another file",
            ],
        ),
        "snoop": (FULL, []),
        "sparse": (
            FULL,
            [f"{KERNEL}sparse.bin not copied: a sparse file (5242880 bytes, 0 on disk)"],
        ),
        "hoarder": (
            FULL,
            [
                "submitted file big.bin not copied: 9437184 bytes, over the size budget "
                "(8388608 bytes left)",
                f"{KERNEL}c.bin not copied: 3145728 bytes, over the size budget "
                "(2097152 bytes left)",
            ],
        ),
        "filler": (
            ADD_ONLY,
            [
                f"hw.ipynb cell 4 (mul): the kernel wrote more than {2 * DISK_MB} MB into its "
                f"folder{STOPPED}",
                f"{KERNEL}b.bin not copied: 6291456 bytes, over the size budget "
                "(2097152 bytes left)",
                f"{KERNEL}c.bin not copied: 6291456 bytes, over the size budget "
                "(2097152 bytes left)",
            ],
        ),
        "swarm": (
            ADD_ONLY,
            [
                "hw.ipynb cell 4 (mul): the kernel made more than 1000 files and folders in its "
                f"folder{STOPPED}",
                f"{KERNEL}more than 1000 files and folders: the rest not copied",
            ],
        ),
        "spread": (
            ADD_ONLY,
            [
                "hw.ipynb cell 4 (mul): the kernel and its processes together used more than "
                f"{MEMORY_MB} MB{STOPPED}"
            ],
        ),
        "storm": (
            ADD_ONLY,
            [
                f"hw.ipynb cell 4 (mul): the kernel tried to run more than {PROCESSES} processes "
                f"and threads at once{STOPPED}"
            ],
        ),
        "spinner": (
            ADD_ONLY,
            [
                "hw.ipynb cell 4 (mul): the kernel and its processes together used more than "
                f"{CPU_SECONDS} s of CPU time{STOPPED}"
            ],
        ),
        "slow": (
            ADD_ONLY,
            [
                "hw.ipynb cell 5: the notebook reached its wall-clock limit of "
                f"{NOTEBOOK_TIMEOUT} s{STOPPED}"
            ],
        ),
        "pointer": (
            FULL,
            [
                "submitted file friend not copied: a symbolic link",
                "submitted file secret.txt not copied: a symbolic link",
                "submitted file timestamp.txt not copied: a symbolic link",
            ],
        ),
        "plagiarist": (
            NOTHING,
            [
                "hw.ipynb is not a valid notebook (hw.ipynb is a link or not readable (Too many "
                "levels of symbolic links)): its cells scored 0"
            ],
        ),
        "mirror": (
            NOTHING,
            [
                "hw/ in submitted/ is a link: nothing read from it",
                f"hw.ipynb is not a valid notebook ({mirror}: hw is a link or not a folder): "
                "its cells scored 0",
            ],
        ),
    }


def make_class(root: Path) -> None:
    """The course with every adversarial submission in submitted/."""
    course = make_course(root)
    planted = links_to(root)
    kernel_code = {
        **planted,
        "hardlinker": "import os\nos.link('data.txt', 'twin.txt')\n",
        "snoop": SNOOP,
        "sparse": SPARSE,
        "hoarder": HOARD,
        "filler": FILL,
        "swarm": SWARM,
        "spread": SPREAD,
        "storm": STORM,
        "spinner": SPIN,
    }
    for student in ("victim", "pointer", "backedup"):
        submit(course, student, solved(course))
    for student, code in kernel_code.items():
        submit(course, student, solved(course, mul=code + MUL))
    nb = solved(course)
    nb.cells[3:3] = [nbformat.v4.new_code_cell(f"import time\ntime.sleep({SLEEP})") for _ in "12"]
    submit(course, "slow", nb)
    submitted = root / "submitted"
    (submitted / "hoarder" / ASSIGNMENT / "big.bin").write_bytes(b"x" * 9 * 1024**2)
    (submitted / "pointer" / ASSIGNMENT / "secret.txt").symlink_to("/etc/shadow")
    (submitted / "pointer" / ASSIGNMENT / "timestamp.txt").unlink()
    (submitted / "pointer" / ASSIGNMENT / "timestamp.txt").symlink_to("/dev/zero")
    (submitted / "pointer" / ASSIGNMENT / "friend").symlink_to(submitted / "victim" / ASSIGNMENT)
    (submitted / "plagiarist" / ASSIGNMENT).mkdir(parents=True)
    (submitted / "plagiarist" / ASSIGNMENT / "hw.ipynb").symlink_to(
        submitted / "victim" / ASSIGNMENT / "hw.ipynb"
    )
    (submitted / "mirror").mkdir()
    os.link(submitted / "backedup" / ASSIGNMENT / "hw.ipynb", root / "backup-hw.ipynb")
    for folder in ("autograded", "feedback"):  # links left where the grader writes
        (root / folder / "pointer").mkdir(parents=True)
        (root / folder / "pointer" / ASSIGNMENT).symlink_to(root / "source" / ASSIGNMENT)
    (submitted / "mirror" / ASSIGNMENT).symlink_to(submitted / "victim" / ASSIGNMENT)


class TestEscapes:
    """The adversarial class, graded once."""

    @pytest.fixture(scope="class")
    @classmethod
    def graded(cls, tmp_path_factory):
        """The class graded by `course-grade grade`, run in cgroups of its own (below), and the
        kernel groups its run left in them."""
        hierarchy, why = find_hierarchy()
        assert hierarchy is not None, f"no usable cgroup here: {why}"
        root = tmp_path_factory.mktemp("escape") / "course"
        make_class(root)
        before = tree_digest(root)
        secret = secrets.token_hex(16)
        with own_cgroups(hierarchy, f"escape-test-{os.getpid()}") as (folders, join):
            result = subprocess.run(
                [COMMAND, "grade", "--jobs", "2", *OPTIONS],
                cwd=root,
                env={**os.environ, SECRET_NAME: secret},
                capture_output=True,
                text=True,
                timeout=600,
                preexec_fn=join,
            )
            left = [group for folder in folders for group in folder.glob("course-grade-*")]
        assert result.returncode == 0, result.stderr
        return root, before, secret, left

    def test_every_student_gets_exactly_the_points_and_reasons_expected(self, graded):
        root, _, _, _ = graded
        course_scores = scores(Course(root))
        for student, (points, problems) in expected(root).items():
            assert (student, course_scores[student]) == (student, points)
            assert (student, record(Course(root), student)["problems"]) == (student, problems)
        assert sorted(course_scores) == sorted(expected(root))

    def test_nothing_outside_the_graders_outputs_changed(self, graded):
        root, before, _, _ = graded
        assert changed_outside_grader_outputs(before, tree_digest(root)) == set()

    def test_no_link_is_left_in_the_graders_folders(self, graded):
        root, _, _, _ = graded
        for folder in ("autograded", "feedback", ".course-grade"):
            links = [p for p in (root / folder).rglob("*") if p.is_symlink()]
            assert links == [], folder

    def test_the_victims_notebook_and_the_source_are_untouched(self, graded):
        root, before, _, _ = graded
        after = tree_digest(root)
        for path in (f"submitted/victim/{ASSIGNMENT}/hw.ipynb", f"source/{ASSIGNMENT}/hw.ipynb"):
            assert after[path] == before[path]
        assert not (root / "planted.txt").exists()

    def test_the_graders_secret_environment_reaches_no_file(self, graded):
        root, _, secret, _ = graded
        leaks = [
            str(path)
            for path in root.rglob("*")
            if path.is_file() and not path.is_symlink() and secret.encode() in path.read_bytes()
        ]
        assert leaks == []
        snooped = (root / "autograded" / "snoop" / ASSIGNMENT / "hw.ipynb").read_text()
        assert "HOME=" in snooped and SECRET_NAME not in snooped  # it did read the environments
        assert "shadow FileNotFoundError" in snooped

    def test_the_3_gb_file_was_refused_by_the_file_size_limit(self, graded):
        root, _, _, _ = graded
        sparse = (root / "autograded" / "sparse" / ASSIGNMENT / "hw.ipynb").read_text()
        assert "3 GB refused: File too large" in sparse
        assert (root / "autograded" / "sparse" / ASSIGNMENT / "huge.bin").stat().st_size == 0

    def test_every_kernel_cgroup_of_the_run_was_removed(self, graded):
        _, _, _, left = graded
        assert left == []


@contextlib.contextmanager
def own_cgroups(hierarchy: Hierarchy, name: str) -> Iterator[tuple[list[Path], Callable]]:
    """A group `name` under each of this process's parent groups, and a function that moves the
    calling process into them (a `preexec_fn`): a grader started with it makes its kernels'
    groups in them, so what it leaves is told apart from what a concurrent test's grader (one
    killed on purpose, say) leaves beside them. The groups are deleted at the end."""
    folders = [parent / name for parent in set(hierarchy.parents.values())]
    for folder in folders:
        folder.mkdir()

    def join() -> None:
        for folder in folders:
            (folder / "cgroup.procs").write_text(str(os.getpid()))

    try:
        yield folders, join
    finally:
        for folder in folders:
            with contextlib.suppress(OSError):
                folder.rmdir()
