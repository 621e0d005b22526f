"""What the session visualizer costs: a 10,000-object workload with and without it, in one run.

The workload: add 10,000 new objects one ``add()`` at a time, ``commit()``, load them all back with
``select()``, ``close()``. "With" attaches a SessionTracker to the sessionmaker and shows an
ObjectCard, a StateDiagram, a SessionPanel and a Timeline: pinned (the default: as the end of a
notebook cell does, they are pinned when the workload ends) or all live (``live=True``). Like a
Jupyter kernel, which runs each cell inside its event loop, the workload runs as one coroutine;
live widgets refresh when it yields. Times are CPU times of this process, the best of several
alternating rounds; on a loaded machine other processes still slow it (shared caches and cores),
so the median of each round's own ratio is printed too. Widget messages are counted where
ipywidgets sends them, ``Widget.open`` (a model is created in the front end) and ``Widget._send``
(a state update), for 10 objects and for 10,000.

Run: .venv/bin/python benchmarks/visualizer_overhead.py
"""

from __future__ import annotations

import asyncio
import gc
import statistics
import time
from collections.abc import Callable
from unittest import mock

import ipywidgets
from sqlalchemy import String, create_engine, select
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

from session_visualizer import ObjectCard, SessionPanel, SessionTracker, StateDiagram, Timeline

OBJECTS = 10_000
ROUNDS = 11


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(30))

    def __repr__(self) -> str:
        return f"User(id={self.id}, name={self.name!r})"


def fresh_factory() -> sessionmaker:
    engine = create_engine("sqlite://")
    Base.metadata.create_all(engine)
    return sessionmaker(engine)


def workload(factory: sessionmaker, count: int, show: Callable | None = None) -> list[User]:
    """add() each object, commit(), load them all with a select, close(); return the objects."""
    session = factory()
    users = [User(name=f"user {number}") for number in range(count)]
    if show is not None:
        show(session, users[0])
    for user in users:
        session.add(user)
    session.commit()
    loaded = session.scalars(select(User)).all()
    assert len(loaded) == count
    session.close()
    return users


async def run_plain(count: int) -> float:
    """The workload alone, and its CPU time."""
    factory = fresh_factory()
    gc.collect()
    start = time.process_time()
    workload(factory, count)
    await asyncio.sleep(0)
    return time.process_time() - start


async def run_visualized(count: int, live: bool) -> tuple[float, list[ipywidgets.Widget]]:
    """The workload with a tracker and the four widgets attached, and its time."""
    factory = fresh_factory()
    shown: list[ipywidgets.Widget] = []
    gc.collect()
    start = time.process_time()
    tracker = SessionTracker(factory)

    def show(session, user) -> None:
        shown.extend([ObjectCard(tracker, user, live=live), StateDiagram(tracker, user, live=live),
                      SessionPanel(tracker, session, live=live), Timeline(tracker, live=live)])

    users = workload(factory, count, show)
    await asyncio.sleep(0)  # the kernel's loop runs the widgets' refresh after the cell
    if not live:
        tracker.catch_up()  # what the end of a notebook cell does
        for widget in shown:
            widget.pin()
    elapsed = time.process_time() - start
    tracker.detach()
    del users
    return elapsed, shown


async def count_messages(count: int, live: bool) -> tuple[int, int, list[ipywidgets.Widget]]:
    """(models opened, state updates sent) while the visualized workload runs on ``count``."""
    opened = updates = 0
    original_open, original_send = ipywidgets.Widget.open, ipywidgets.Widget._send

    def counting_open(widget):
        nonlocal opened
        opened += 1
        return original_open(widget)

    def counting_send(widget, msg, buffers=None):
        nonlocal updates
        updates += 1
        return original_send(widget, msg, buffers=buffers)

    with (
        mock.patch.object(ipywidgets.Widget, "open", counting_open),
        mock.patch.object(ipywidgets.Widget, "_send", counting_send),
    ):
        _elapsed, shown = await run_visualized(count, live)
    return opened, updates, shown


def per_object(seconds: float) -> float:
    """Microseconds per object of the workload (its add(), and its share of the other calls)."""
    return seconds * 1e6 / OBJECTS


async def main() -> None:
    times: dict[str, list[float]] = {"plain": [], "pinned": [], "live": []}
    for _round in range(ROUNDS):  # alternate, so all three see the same machine
        times["plain"].append(await run_plain(OBJECTS))
        for live in (False, True):
            elapsed, shown = await run_visualized(OBJECTS, live)
            times["live" if live else "pinned"].append(elapsed)
            for widget in shown:
                widget.close()
    best = {name: min(values) for name, values in times.items()}
    print(f"workload: {OBJECTS:,} objects, add() each, commit(), select all, close()")
    print(f"CPU time, best of {ROUNDS} alternating rounds, and the ratio to the plain run")
    print("(best / best, and the median of each round's ratio: steadier on a loaded machine):")
    print(f"  without visualizer:                  {best['plain']:.3f} s "
          f"({per_object(best['plain']):.1f} µs per object)")
    for name in ("pinned", "live"):
        paired = statistics.median(
            visual / plain for visual, plain in zip(times[name], times["plain"], strict=True)
        )
        print(f"  with tracker and 4 {name + ' widgets:':16} {best[name]:.3f} s  "
              f"ratio {best[name] / best['plain']:.2f}, median {paired:.2f}, "
              f"+{per_object(best[name] - best['plain']):.1f} µs per object")
    print("target: ratio at most 1.5, aim 1.25")
    for live in (False, True):
        for count in (10, OBJECTS):
            opened, updates, shown = await count_messages(count, live)
            print(f"widget messages, {'live' if live else 'pinned'}, {count:,} objects: "
                  f"{opened + updates} ({opened} models opened, {updates} state updates)")
            for widget in shown:
                print("  " + repr(widget).splitlines()[0][:96])
            for widget in shown:
                widget.close()


if __name__ == "__main__":
    asyncio.run(main())
