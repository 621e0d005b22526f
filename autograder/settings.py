"""course-grade's settings, configured the nbgrader way.

`CourseGrade` holds the settings of a grading run as `config=True` traits, so they are read
from the same files as nbgrader's own (see `autograder.course.load_nbgrader_config`), e.g. in
the course's nbgrader_config.py:

    c.CourseGrade.jobs = 2
    c.CourseGrade.memory_mb = 1024
    c.GuardedExecute.notebook_timeout = 300

The timeouts and output limits of the notebooks are traits of the executing preprocessor:
`Execute.timeout` (seconds per cell, nbgrader's own), `GuardedExecute.notebook_timeout` and
`GuardedExecute.output_limit_bytes`. A command-line option overrides any of them only when it
is given.
"""

from __future__ import annotations

import os

from traitlets import Bool, Integer, Unicode
from traitlets.config import Configurable


class CourseGrade(Configurable):
    """How `course-grade grade` runs: workers, the limits of each kernel, its isolation."""

    jobs = Integer(
        os.cpu_count() or 1, help="How many submissions are graded at once (workers)."
    ).tag(config=True)
    memory_mb = Integer(
        2048,
        help="Megabytes of memory of a kernel and all its child processes together (with a "
        "cgroup), and the address space of each of its processes.",
    ).tag(config=True)
    cpu_seconds = Integer(
        300,
        help="CPU seconds a kernel and all its children together may use for a whole notebook "
        "(with a cgroup; without one, each process separately).",
    ).tag(config=True)
    max_processes = Integer(
        128, help="Processes and threads a kernel and its children may run at once."
    ).tag(config=True)
    disk_mb = Integer(
        100,
        help="Megabytes of files a submission may bring and a kernel may leave in its folder; "
        "also each file's and the kernel's /tmp size.",
    ).tag(config=True)
    sandbox = Bool(
        True,
        help="Run each kernel inside bubblewrap (no network, no course files); the limits hold "
        "either way.",
    ).tag(config=True)
    scheduler = Unicode(
        "",
        help="The address of a Dask scheduler (e.g. tcp://10.0.0.5:8786) whose workers execute "
        "the notebooks; empty: grade on this machine. Dask runs whatever it is sent: keep it on "
        "loopback or a private network, or use TLS.",
    ).tag(config=True)
    allowed_failures = Integer(
        2,
        help="On a Dask cluster: how many times a notebook whose kernel kills its worker runs "
        "again elsewhere before it is graded as a dead kernel (sets the scheduler's "
        "allowed-failures).",
    ).tag(config=True)
