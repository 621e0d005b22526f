"""Lesson 12's behaviours, asserted on PostgreSQL, and the throwaway server that runs them.

The tests marked `postgresql` get COURSE_DATABASE_URL from the session's server (conftest.py).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from postgres_server import running_postgres, server_pid
from psycopg.errors import LockNotAvailable, SerializationFailure
from sqlalchemy import Engine, create_engine, select, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from course_database import VARIABLE, course_engine

TOOL = Path(__file__).resolve().parents[1] / "tools" / "postgres_server.py"


class Base(DeclarativeBase):
    pass


class Account(Base):
    __tablename__ = "account"

    id: Mapped[int] = mapped_column(primary_key=True)
    balance: Mapped[int]


@pytest.fixture
def engine() -> Iterator[Engine]:
    """The course's engine on PostgreSQL, with two accounts of 100."""
    engine = course_engine(schema="test_concurrency")  # emptied: every test starts from no table
    assert engine.dialect.name == "postgresql", f"{VARIABLE} must name a PostgreSQL server"
    Base.metadata.create_all(engine)
    with Session(engine) as session, session.begin():
        session.add_all([Account(id=1, balance=100), Account(id=2, balance=100)])
    yield engine
    engine.dispose()


def _balance(session: Session, account: int = 1) -> int:
    return session.scalar(select(Account.balance).where(Account.id == account))


def _wait_for_a_lock_waiter(engine: Engine) -> None:
    query = text(
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE wait_event_type = 'Lock' AND datname = current_database()"
    )
    deadline = time.monotonic() + 10
    with engine.connect() as connection:
        while connection.scalar(query) == 0:
            assert time.monotonic() < deadline, "no transaction ever waited for the lock"
            time.sleep(0.01)
            connection.rollback()  # a new statement snapshot of pg_stat_activity


@pytest.mark.postgresql
def test_read_committed_sees_commits_but_not_uncommitted_changes(engine: Engine) -> None:
    with Session(engine) as writer, Session(engine) as reader:
        assert reader.connection().get_isolation_level() == "READ COMMITTED"
        assert _balance(reader) == 100
        writer.get(Account, 1).balance = 150
        writer.flush()
        assert _balance(reader) == 100
        writer.commit()
        assert _balance(reader) == 150  # the same transaction, a new statement


@pytest.mark.postgresql
def test_repeatable_read_keeps_its_snapshot_and_refuses_a_stale_write(engine: Engine) -> None:
    snapshot = engine.execution_options(isolation_level="REPEATABLE READ")
    with Session(engine) as writer, Session(snapshot) as reader:
        assert _balance(reader) == 100
        with writer.begin():
            writer.get(Account, 1).balance = 150
        assert _balance(reader) == 100
        reader.get(Account, 1).balance = 110
        with pytest.raises(OperationalError) as raised:
            reader.commit()
        assert isinstance(raised.value.orig, SerializationFailure)
        reader.rollback()
        assert _balance(reader) == 150  # a new transaction, a new snapshot


@pytest.mark.postgresql
def test_read_compute_write_loses_an_update(engine: Engine) -> None:
    first, second = Session(engine), Session(engine)
    mine, theirs = first.get(Account, 2), second.get(Account, 2)
    mine.balance += 50
    first.commit()
    theirs.balance += 50
    second.commit()
    with Session(engine) as session:
        assert _balance(session, 2) == 150
    first.close()
    second.close()


@pytest.mark.postgresql
def test_with_for_update_makes_the_second_writer_wait_and_keeps_both(engine: Engine) -> None:
    Factory = sessionmaker(engine)

    def deposit() -> None:
        with Factory.begin() as session:
            query = select(Account).where(Account.id == 2).with_for_update()
            session.scalars(query).one().balance += 50

    with Factory() as first:
        account = first.scalars(select(Account).where(Account.id == 2).with_for_update()).one()
        second = threading.Thread(target=deposit)
        second.start()
        _wait_for_a_lock_waiter(engine)
        assert second.is_alive()
        account.balance += 50
        first.commit()
    second.join(timeout=10)
    assert not second.is_alive()
    with Factory() as session:
        assert _balance(session, 2) == 200


@pytest.mark.postgresql
def test_nowait_raises_lock_not_available_and_skip_locked_skips(engine: Engine) -> None:
    with Session(engine) as holder, Session(engine) as other:
        holder.scalars(select(Account).where(Account.id == 1).with_for_update()).one()
        with pytest.raises(OperationalError) as raised:
            other.scalars(select(Account).where(Account.id == 1).with_for_update(nowait=True)).one()
        assert isinstance(raised.value.orig, LockNotAvailable)
        other.rollback()
        free = other.scalars(select(Account.id).with_for_update(skip_locked=True)).all()
        assert free == [2]


def _running(pid: int) -> bool:
    """Whether the process lives (a zombie, stopped and waiting for init to reap it, does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _cluster(url: str) -> Path:
    """The temporary folder of the running_postgres() cluster that listens on the URL's port."""
    port = url.rsplit(":", 1)[1].split("/")[0]
    return next(
        pid_file.parents[1]
        for pid_file in Path(tempfile.gettempdir()).glob("course-postgres-*/data/postmaster.pid")
        if pid_file.read_text().splitlines()[3] == port  # the pid file's fourth line: the port
    )


def test_the_server_is_stopped_and_deleted_after_an_exception() -> None:
    with pytest.raises(RuntimeError), running_postgres() as url:
        folder = _cluster(url)
        pid = server_pid(folder / "data")
        assert pid is not None and _running(pid)
        raise RuntimeError("a failure inside the block")
    assert not _running(pid)
    assert not folder.exists()


def test_the_command_line_server_stops_on_ctrl_c() -> None:
    server = subprocess.Popen(
        [sys.executable, str(TOOL)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        lines = [server.stdout.readline() for _ in range(2)]
        url = lines[1].strip().removeprefix(f"export {VARIABLE}=")
        assert url.startswith("postgresql+psycopg://"), lines
        folder = _cluster(url)
        pid = server_pid(folder / "data")
        with create_engine(url).connect() as connection:
            assert connection.scalar(text("SELECT 1")) == 1
        server.send_signal(signal.SIGINT)
        assert server.wait(timeout=60) == 0
        assert "stopped and removed" in server.stderr.read()
    finally:
        if server.poll() is None:
            server.kill()
    assert not _running(pid)
    assert not folder.exists()


def test_without_the_variable_the_course_runs_on_in_memory_sqlite(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(VARIABLE, raising=False)
    engine = course_engine(schema="ignored")
    assert str(engine.url) == "sqlite://"


@pytest.mark.postgresql
def test_a_lesson_schema_starts_empty_and_leaves_other_tables_alone() -> None:
    outside = create_engine(os.environ[VARIABLE])
    with outside.begin() as connection:
        connection.execute(text("CREATE TABLE IF NOT EXISTS public.kept (x int)"))
    for _ in range(2):  # the second run finds the first run's table gone
        engine = course_engine(schema="lesson_test")
        with engine.begin() as connection:
            connection.execute(text("CREATE TABLE made (x int)"))
            where = "SELECT table_schema FROM information_schema.tables WHERE table_name = 'made'"
            assert connection.scalar(text(where)) == "lesson_test"
        engine.dispose()
    with outside.begin() as connection:
        assert connection.scalar(text("SELECT count(*) FROM public.kept")) == 0
        connection.execute(text("DROP TABLE public.kept"))
    outside.dispose()


def test_a_postgresql_test_run_leaves_no_server_behind() -> None:
    """`pytest --course-database=postgresql` starts its own server and stops and deletes it."""
    with tempfile.TemporaryDirectory() as folder:
        _a_postgresql_run_in(Path(folder))


def _a_postgresql_run_in(tmp_path: Path) -> None:
    tmp_path.chmod(0o711)  # the server's user (nobody, under root) must reach its folder in here
    environment = {name: value for name, value in os.environ.items() if name != VARIABLE}
    environment["TMPDIR"] = str(tmp_path)  # the run's server folder is made in here, and only its
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--override-ini=addopts=",
         "--course-database=postgresql", f"{__file__}::test_read_compute_write_loses_an_update"],
        cwd=TOOL.parents[1], env=environment, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    assert "1 passed" in run.stdout
    assert not list(tmp_path.glob("course-postgres-*")), "the server's folder is left behind"
    assert not _servers_in(tmp_path), "the server still runs"


def _servers_in(folder: Path) -> list[str]:
    """Command lines of the PostgreSQL servers running on a cluster inside `folder`."""
    servers = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            arguments = cmdline.read_bytes().decode(errors="replace").split("\0")
        except (FileNotFoundError, ProcessLookupError):
            continue
        if Path(arguments[0]).name == "postgres" and str(folder) in " ".join(arguments):
            servers.append(" ".join(arguments))
    return servers
