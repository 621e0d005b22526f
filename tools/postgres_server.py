"""A throwaway PostgreSQL server for the course, on 127.0.0.1, gone when you stop it.

Usage: python tools/postgres_server.py
(prints the line that points the course at the server; Ctrl-C stops it and deletes it)

`running_postgres()` makes a new cluster in a temporary folder with `initdb`, starts it with
`pg_ctl` on a free port of 127.0.0.1 (its socket in the data folder, so nothing else is touched),
yields its URL, and stops and deletes it afterwards, also after an exception or Ctrl-C. PostgreSQL
refuses to run as root, so as root the cluster belongs to, and runs as, the unprivileged user
nobody (uid 65534). The binaries come from PATH, else from Debian's /usr/lib/postgresql/*/bin
(`make system-packages` installs Debian's `postgresql` package when neither has them).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from course_database import VARIABLE

NOBODY = 65534  # the unprivileged uid and gid the server runs as when we are root
DEBIAN_BINARIES = Path("/usr/lib/postgresql")
USER = "postgres"  # the cluster's superuser, trusted on 127.0.0.1 and the socket only
# Durability is pointless for a throwaway cluster: skipping it makes start and commits faster.
SPEED = "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"


def postgres_binaries() -> Path:
    """The folder holding `initdb` and `pg_ctl`: PATH's, else Debian's newest."""
    on_path = shutil.which("initdb")
    if on_path:
        return Path(on_path).resolve().parent
    debian = sorted(
        DEBIAN_BINARIES.glob("*/bin/initdb"), key=lambda path: int(path.parts[-3]), reverse=True
    )
    if debian:
        return debian[0].parent
    raise FileNotFoundError(
        "PostgreSQL's initdb is neither on PATH nor in /usr/lib/postgresql/*/bin: "
        "install it (`make system-packages`, or `apt-get install postgresql` on Debian)"
    )


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _run(command: list[str]) -> None:
    """Run a PostgreSQL tool, as nobody when we are root; its output only if it fails."""
    if os.geteuid() == 0:
        command = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *command]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stdout}{result.stderr}")


def server_pid(data: Path) -> int | None:
    """The process id of the server running on the cluster in `data`, or None."""
    try:
        return int((data / "postmaster.pid").read_text().split()[0])
    except (FileNotFoundError, IndexError, ValueError):
        return None


@contextmanager
def running_postgres() -> Iterator[str]:
    """Start a new, empty PostgreSQL cluster; yield its `postgresql+psycopg://` URL; remove it."""
    binaries = postgres_binaries()
    folder = Path(tempfile.mkdtemp(prefix="course-postgres-"))
    data = folder / "data"
    try:
        if os.geteuid() == 0:
            os.chown(folder, NOBODY, NOBODY)
        _run([str(binaries / "initdb"), "-D", str(data), "-U", USER, "--auth=trust", "--no-sync",
              "--encoding=UTF8", "--locale=C"])  # fmt: skip
        port = _free_port()
        options = f"-h 127.0.0.1 -p {port} -k {data} {SPEED}"
        _run([str(binaries / "pg_ctl"), "-D", str(data), "-o", options,
              "-l", str(folder / "server.log"), "-w", "start"])  # fmt: skip
        yield f"postgresql+psycopg://{USER}@127.0.0.1:{port}/postgres"
    finally:
        if server_pid(data) is not None:
            _run([str(binaries / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"])
        shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def postgres_for_the_course() -> Iterator[str]:
    """COURSE_DATABASE_URL set while inside: to the URL already set, else to a new server's.

    Kernels started inside (nbval's, nbclient's, JupyterLab's) inherit it with the environment.
    """
    if os.environ.get(VARIABLE):
        yield os.environ[VARIABLE]
        return
    with running_postgres() as url:
        os.environ[VARIABLE] = url
        try:
            yield url
        finally:
            del os.environ[VARIABLE]


def _stop_on_sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # leaves the `with` block, which stops and removes the server


def main() -> None:
    """Run one server until Ctrl-C (or SIGTERM), printing how to point the course at it."""
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    try:
        with running_postgres() as url:
            print(f"PostgreSQL is running. In the terminal where you start the course, run:\n"
                  f"export COURSE_DATABASE_URL={url}\n"
                  "Press Ctrl-C to stop it and delete its data.", flush=True)  # fmt: skip
            while True:
                signal.pause()
    except KeyboardInterrupt:
        print("PostgreSQL stopped and removed.", file=sys.stderr)


if __name__ == "__main__":
    main()
