"""Record every state transition of every object of a Session, step by step.

A *step* is one public Session call (``add()``, ``commit()``, ``close()``...), or a run of the same
call that emits no SQL (a loop of ``add()``). The calls are wrapped on the target's sessions only
(the Session instance, or the private subclass a ``sessionmaker`` makes for itself); SQLAlchemy's
ten object-lifecycle events, the session events (begin, flush, commit, rollback) and the engine's
``before_cursor_execute`` are listened to. Each hooked owner gets one wrapper per method and one
listener per event, whatever the number of trackers: a ``_Hub`` that passes them on to the
trackers attached to it (held weakly) and is removed when the last one detaches. When a call
returns, each tracker appends a ``Step`` to its history. Rows that ``execute()``/``scalars()``
turn into objects only while the result is read belong to that call's step: it stays open until
the next call in that thread, the end of the transaction, or until someone reads the tracker
(``settle()``). A step shows the objects as its call left them: a step kept open reads them when
its call returns, and an object its result loads later as it is loaded. Changes made between
calls (an attribute assigned) become a step ``"between calls"`` of their own: before the next
call, or when ``catch_up()`` is called (at the end of a notebook cell, say).

An AsyncSession does its work in the Session it wraps, so its calls are recorded there; asyncio
tasks interleave their calls in one thread, so a running call's step is kept per task.

Event handlers never load an attribute (they read ``InstanceState`` only); objects, and the
session of a step kept open, are held weakly (the tracker never changes what the garbage
collector does to them); per-thread bookkeeping lives in ``threading.local`` and the history
behind a lock. The tracker knows nothing of widgets: they ``subscribe`` and read its snapshots.
"""

from __future__ import annotations

import asyncio
import bisect
import functools
import os
import sys
import threading
import weakref
from collections.abc import Callable, Iterable, Set
from dataclasses import InitVar, dataclass, field
from types import FrameType
from typing import Any

import sqlalchemy.orm.query
from sqlalchemy import Executable, event, inspect
from sqlalchemy.engine import Engine
from sqlalchemy.orm import InstanceState, Session, scoped_session, sessionmaker
from sqlalchemy.orm.attributes import instance_state

try:
    from sqlalchemy.ext.asyncio import AsyncSession, async_scoped_session, async_sessionmaker
except ImportError:  # no greenlet (Pyodide, in the browser): no asyncio session can exist there
    AsyncSession = async_scoped_session = async_sessionmaker = type("NoAsyncio", (), {})

from session_visualizer.snapshot import (
    GONE,
    LIFECYCLE_EVENTS,
    ROW_EXPIRED,
    ROW_LABEL,
    ROW_MODIFIED,
    ROW_SESSION,
    ROW_STATE,
    ObjectSnapshot,
    SessionSnapshot,
    Step,
    Transition,
    fallback_label,
    gone_row,
    read_row,
    safe_label,
    state_name,
)

# The public Session methods that make a step.
TRACKED_CALLS = (
    "add", "add_all", "delete", "delete_all", "expunge", "expunge_all", "merge", "merge_all",
    "flush", "commit", "rollback", "close", "reset", "execute", "scalars", "scalar", "get",
    "get_one", "refresh", "expire", "expire_all", "begin", "begin_nested",
)
# Calls that return a result whose rows become objects only when the result is read.
RESULT_CALLS = frozenset({"execute", "scalars"})
# Calls that emit no SQL: a run of the same one (a loop of add()) makes a single step.
MERGEABLE_CALLS = frozenset({"add", "add_all", "delete", "delete_all", "expunge"})
# Calls whose step stays open after they return, for one of the two reasons above.
LINGERING_CALLS = RESULT_CALLS | MERGEABLE_CALLS
# Calls that mark objects for deletion without a lifecycle event (it comes with the flush).
DELETING_CALLS = frozenset({"delete", "delete_all"})
# What the attribute loaders (and Query) pass to Session.execute(); the step name of the former.
LOAD_OPTIONS = "_sa_orm_load_options"
LOAD_ON_ACCESS = "load on access"
# The name of a step of changes made outside any call (see ``SessionTracker.catch_up``).
BETWEEN_CALLS = "between calls"
# Calls that may change every object of the session without a lifecycle event (expiry, a
# merge), and session events that do (a commit or rollback outside any call); "between calls"
# re-reads them all too. So do the queries that may (see ``_changes_whole_session``).
WHOLE_SESSION_CALLS = frozenset(
    {"commit", "rollback", "expire", "expire_all", "refresh", "merge", "merge_all", BETWEEN_CALLS}
)
# The calls that run a statement or a get(): an ORM UPDATE or DELETE, or populate_existing, may
# change any object of the session.
QUERY_CALLS = frozenset({"execute", "scalars", "scalar", "get", "get_one"})
# Session events that can happen outside any call (the end of a ``with session.begin():`` block).
SESSION_EVENTS = frozenset({"begin", "flush", "commit", "rollback"})
# At most this many objects per step get a repr() label: views list only the first few.
LABEL_BUDGET = 64
_NO_IDS: frozenset[int] = frozenset()  # no object marked for deletion

Listener = Callable[[Step | None], None]
Target = (
    Session | sessionmaker | scoped_session | AsyncSession | async_sessionmaker
    | async_scoped_session
)
# Marks the private Session subclass the tracker gives an async_sessionmaker (see _method_owner).
_PRIVATE_SYNC_CLASS = "_session_visualizer_private"
# Frames of these files lead from a user's call to Session.execute(): SQLAlchemy's and ours.
_LIBRARIES = (os.path.dirname(sqlalchemy.__file__), __file__)
_QUERY_FILE = sqlalchemy.orm.query.__file__


class _Record(weakref.ref):
    """What the tracker knows about one object: a weak reference to it (calling the record gives
    the object, or None once it is collected), its label and its last snapshot row."""

    __slots__ = (
        "key", "object_id", "records", "history", "class_name", "label", "fixed_label",
        "settled_label", "clean_label", "flushed_change", "latest", "last_step", "last_position",
        "gone_from",
    )

    def __new__(
        cls, obj: object, key: int, records: dict[int, _Record], history: list[Step]
    ) -> _Record:
        return super().__new__(cls, obj, _forget)

    def __init__(
        self, obj: object, key: int, records: dict[int, _Record], history: list[Step]
    ) -> None:
        insp = instance_state(obj)
        self.key, self.object_id, self.records, self.history = key, id(obj), records, history
        self.class_name = insp.class_.__name__
        self.label = fallback_label(insp)
        self.fixed_label = False  # given to watch(): never replaced
        self.settled_label = False  # a repr(); False while it is the class-and-identity fallback
        # the last label read with no change to the database row in the current transaction:
        # what a rollback restores (the rolled-back object is expired, so it cannot be re-read)
        self.clean_label: str | None = None
        self.flushed_change = False  # this transaction flushed a change to its row
        self.latest: tuple | None = None  # the last snapshot row (earlier ones: in the steps)
        self.last_step = -1  # its last lifecycle transition: step index, position in that step
        self.last_position = 0
        self.gone_from: int | None = None  # the index of the first step it did not live through


@dataclass(eq=False)
class _StepBuilder:
    """The step being recorded in one thread."""

    call: str  # "add()"; outside any call "between calls", or a session event's name, or "load"
    # held weakly: a step kept open after its call returned must not keep its session (and so
    # the session's pending objects) alive; a session collected meanwhile reads as None
    session: InitVar[Session]
    session_ref: weakref.ref[Session] = field(init=False)
    session_key: int = field(init=False)
    thread: str = field(default_factory=lambda: threading.current_thread().name)
    name: str | None = None  # the Session method, None outside any call
    calls: int = 0
    lingering: bool = False  # the call returned; rows still to load or more calls may join
    returned: bool = False  # its last call returned (no call of it is running)
    # once its call returned, the rows read then (and as its result loads more objects): by key
    rows: dict[int, tuple] | None = None
    read_transitions: int = 0  # how many of the transitions' objects ``rows`` has read
    refreshable: list[_Record] = field(default_factory=list)  # expired when the call returned
    label_budget: int = 0  # how many more objects may get a repr() label once it returned
    only_dirty: bool = False  # a step between calls before a call: only modified objects change
    whole_session: bool = False  # any object of the session may change (WHOLE_SESSION_CALLS)
    # the lifecycle events so far: which object, which event
    transition_records: list[_Record] = field(default_factory=list)
    transition_events: list[str] = field(default_factory=list)
    events: list[str] = field(default_factory=list)
    sql: list[str] = field(default_factory=list)
    touched: dict[int, _Record] = field(default_factory=dict)
    error: str | None = None

    def __post_init__(self, session: Session) -> None:
        self.session_ref, self.session_key = weakref.ref(session), session.hash_key

    def joins(self, name: str, session: Session) -> bool:
        """Whether a new call of ``name`` continues this step (add(), add(), ...)."""
        return (
            self.name == name and name in MERGEABLE_CALLS and self.session_key == session.hash_key
            and not self.sql and not self.events and self.error is None
        )

    def accepts(self, event_name: str, session: Session) -> bool:
        """Whether an event of ``session`` outside any call belongs to this step rather than to
        a new one.

        Rows an ``execute()`` result turns into objects later belong to it; a session event
        (the commit at the end of ``with session.begin():``) does not, nor an event of another
        session (the rows of a result that session returned earlier).
        """
        if self.name in MERGEABLE_CALLS or session.hash_key != self.session_key:
            return False
        if self.name in RESULT_CALLS:  # reading the result only loads objects
            return event_name == "load"
        return event_name not in SESSION_EVENTS or self.call in SESSION_EVENTS

    def mark(self, name: str) -> None:
        if not self.events or self.events[-1] != name:
            self.events.append(name)


class _ThreadSteps(threading.local):
    """One thread's steps: the one open outside any call (``builder``), and those of the calls
    running (``calls``, by asyncio task, None outside asyncio: tasks of one thread interleave
    their calls)."""

    def __init__(self) -> None:
        self.builder: _StepBuilder | None = None
        self.calls: dict[asyncio.Task | None, _StepBuilder] = {}


@dataclass(eq=False)
class _SessionMembers:
    """The tracked objects currently in one session, and those that may change silently."""

    members: set[int] = field(default_factory=set)
    # persistent objects with modified or expired attributes: re-read at every step
    flagged: set[int] = field(default_factory=set)
    in_transaction: bool = False
    session: weakref.ref[Session] = field(default=lambda: None)  # once it made a step
    thread: int | None = None  # the ident of the thread that made its last step


class SessionTracker:
    """Record the history of the sessions of one or more targets: a Session, a sessionmaker,
    a scoped_session, or their asyncio versions (AsyncSession, async_sessionmaker,
    async_scoped_session), whose work is done by the Session each AsyncSession wraps.

    The hooks it needs are shared with the other trackers of the same targets and hold it weakly:
    it records while something references it (a variable, a widget), and ``detach()`` stops it
    at once. Making a new tracker on the same target (a notebook cell run again) adds no wrapper.
    """

    def __init__(self, target: Target, *more_targets: Target) -> None:
        self._lock = threading.RLock()
        self._local = _ThreadSteps()
        self._history: list[Step] = []
        self._records: dict[int, _Record] = {}  # by id(obj), only while the object lives
        self._all_records: list[_Record] = []  # by tracker key
        self._sessions: dict[int, _SessionMembers] = {}
        self._session_labels: dict[int, str] = {}  # by Session.hash_key, in order of first sight
        self._listeners: list[Listener] = []
        self._hubs: list[_Hub] = []  # where this tracker is attached: owners, then engines
        for followed in (target, *more_targets):
            self.follow(followed)

    def follow(self, target: Target) -> None:
        """Record the sessions of one more target (a Session, a sessionmaker, a scoped_session
        or their asyncio versions) too.

        (Follow a sessionmaker before any of its sessions: a session followed on its own, then
        its factory, would have its events recorded twice.)
        """
        owner = _method_owner(target)
        with self._lock:
            # a session of a factory this tracker follows is followed already
            followed = {id(hub.owner) for hub in self._hubs}
            if not followed & {id(owner), id(type(owner))}:
                self._hubs.append(_Hub.join(owner, self))
        if isinstance(owner, Session):
            for obj in list(owner.new) + list(owner.identity_map.values()):
                self.watch(obj)

    # ----------------------------------------------------------------- reading
    @property
    def history(self) -> list[Step]:
        """The recorded steps, oldest first."""
        self.settle()
        with self._lock:
            return list(self._history)

    @property
    def step_count(self) -> int:
        """The number of recorded steps."""
        self.settle()
        return len(self._history)

    def step_at(self, index: int) -> Step:
        """The step at ``index`` (counted from 0)."""
        self.settle()
        with self._lock:
            return self._history[index]

    def state_of(self, obj: object) -> str:
        """The object's state after the last step (one of ``STATES``)."""
        self.settle()
        record = self._record_of(obj)
        if record is None or record.latest is None:
            return state_name(inspect(obj))
        return record.latest[ROW_STATE]

    def watch(self, obj: object, label: str | None = None) -> ObjectSnapshot:
        """Track ``obj`` from now on (even while transient) and return its current snapshot.

        ``label`` names it in every view; by default its ``repr()``, read whenever that cannot
        load an attribute.
        """
        self.settle()
        insp = inspect(obj)
        record = self._record_for(obj)
        with self._lock:
            if label is not None:
                record.label, record.fixed_label = label, True
            else:
                _relabel([record])
            session = insp.session
            row = self._read(record, _deleted_ids(session), None)
            if row == record.latest:
                return ObjectSnapshot._make(row)
            if record.latest is None or session is None:
                self._apply(record, row)  # first sight, or a label changed outside any session
                return ObjectSnapshot._make(row)
        self.catch_up()
        return self.snapshot_of(record.key)

    def catch_up(self) -> None:
        """Record the changes made since the last step outside any Session call (an attribute
        assigned or loaded on access) as a step ``"between calls"`` per session that has some.

        Only the sessions whose last step this thread made are read (a Session belongs to one
        thread at a time). Widgets call it at the end of a notebook cell, so that the history at
        that moment shows what the cell did even without a Session call.
        """
        self.settle()
        thread = threading.get_ident()
        with self._lock:
            sessions = [members.session() for members in self._sessions.values()
                        if members.thread == thread]
        for session in sessions:
            if session is not None and self._call_builder() is None:
                self._finish(_StepBuilder(call=BETWEEN_CALLS, session=session, name=BETWEEN_CALLS,
                                          whole_session=True))

    def snapshot_of(self, key: int) -> ObjectSnapshot:
        """An object's latest snapshot, by its tracker key (state ``gone`` once collected)."""
        self.settle()
        with self._lock:
            record = self._all_records[key]
            row = record.latest or (key, record.label, GONE, "", None, (), (), False, None)
            return ObjectSnapshot._make(gone_row(row) if record() is None else row)

    def snapshot_at(self, key: int, index: int) -> ObjectSnapshot:
        """An object (by tracker key) as it was after step ``index`` (-1: before any step).

        Its label is the one it had then; its state is ``gone`` only if it was collected by
        then. Before its first row it reads as transient.
        """
        self.settle()
        with self._lock:
            record = self._all_records[key]
            row = self._row_at(record, index)
        if row is None:
            first = self._row_at(record, len(self._history) - 1, first=True)
            label = record.label if first is None else first[1]
            row = (key, label, "transient", record.class_name, None, (), (), False, None)
        if record.gone_from is not None and index >= record.gone_from:
            row = gone_row(row)
        return ObjectSnapshot._make(row)

    def last_transition(self, key: int) -> tuple[Transition, str] | None:
        """An object's (by tracker key) last lifecycle transition and the call it happened in."""
        self.settle()
        with self._lock:
            record = self._all_records[key]
            if record.last_step < 0:
                return None
            step = self._history[record.last_step]
        keys, labels, events = step.transition_columns
        position = record.last_position
        return Transition(keys[position], labels[position], events[position]), step.call

    def last_transition_at(self, key: int, index: int) -> tuple[Transition, str] | None:
        """An object's (by tracker key) last transition up to step ``index``, and its call."""
        self.settle()
        with self._lock:
            steps = self._steps_to(index)
        for step in reversed(steps):
            keys, labels, events = step.transition_columns
            if key in keys:
                position = len(keys) - 1 - keys[::-1].index(key)
                return Transition(key, labels[position], events[position]), step.call
        return None

    def steps_touching(self, key: int) -> list[int]:
        """The indices of the steps where an object (by tracker key) changed or had a transition."""
        self.settle()
        with self._lock:
            steps = list(self._history)
        return [
            step.index for step in steps
            if key in step.transition_columns[0] or _row_position(step, key) is not None
        ]

    def objects_at(self, index: int) -> list[ObjectSnapshot]:
        """Every object's snapshot after step ``index`` (those known by then), in tracker order."""
        self.settle()
        with self._lock:
            found: dict[int, tuple] = {}
            for step in self._steps_to(index):
                for row in step.change_rows:
                    found[row[0]] = row
            records = self._all_records
            return [
                ObjectSnapshot._make(_as_of(found[key], records[key].gone_from, index))
                for key in sorted(found)
            ]

    def session_at(self, index: int) -> SessionSnapshot:
        """The collections of step ``index``'s session just after that step."""
        return self.session_snapshot_at(self.step_at(index).session_key, index)

    def session_snapshot_at(self, session: Session | int, index: int) -> SessionSnapshot:
        """A given session's (or ``Session.hash_key``'s) collections after step ``index``
        (-1: before any step)."""
        self.settle()
        session_key = _session_key(session)
        with self._lock:
            if index == len(self._history) - 1:  # the latest: no need to replay the history
                return self._current(session_key)
            return self._session_as_of(session_key, index)

    def _session_as_of(self, session_key: int | None, index: int) -> SessionSnapshot:
        objects = [snap for snap in self.objects_at(index) if snap.session_key == session_key]
        in_transaction = next(
            (step.in_transaction for step in reversed(self._steps_to(index))
             if step.session_key == session_key),
            False,
        )
        return SessionSnapshot.from_objects(objects, in_transaction)

    def _steps_to(self, index: int) -> list[Step]:
        """The steps up to ``index`` included (none for a negative index)."""
        return self._history[: max(index + 1, 0)]

    def _row_at(self, record: _Record, index: int, first: bool = False) -> tuple | None:
        """A record's last row up to step ``index`` (or its first row, if ``first``)."""
        steps = self._steps_to(index)
        for step in steps if first else reversed(steps):
            position = _row_position(step, record.key)
            if position is not None:
                return step.change_rows[position]
        return None

    def current_session(self, session: Session | int) -> SessionSnapshot:
        """The session's (or ``Session.hash_key``'s) collections after the last step."""
        self.settle()
        return self._current(_session_key(session))

    def _current(self, session_key: int | None) -> SessionSnapshot:
        with self._lock:
            members = self._sessions.get(session_key, _SessionMembers())
            records = (self._all_records[key] for key in members.members)
            rows = [record.latest for record in records if record() is not None]
        return SessionSnapshot.from_objects(map(ObjectSnapshot._make, rows),
                                            members.in_transaction)

    # ----------------------------------------------------------------- listening
    def subscribe(self, listener: Listener) -> None:
        """Call ``listener(step)`` after every new step, in the thread that made it.

        ``listener(None)`` means a step has begun that stays open after its call returned (rows
        still to load, or more calls of the same kind may join it): ``settle()`` closes it.
        """
        with self._lock:
            self._listeners.append(listener)

    def unsubscribe(self, listener: Listener) -> None:
        """Stop calling ``listener``."""
        with self._lock:
            if listener in self._listeners:
                self._listeners.remove(listener)

    def settle(self) -> None:
        """Close this thread's open step, if no call is running in this thread (or task)."""
        if self._local.builder is not None and self._call_builder() is None:
            self._finish_open_step()

    def detach(self) -> None:
        """Stop recording. The last tracker to leave a target removes its wrapper and listeners,
        leaving the target's methods exactly as they were."""
        self.settle()
        with self._lock:
            hubs, self._hubs = self._hubs, []
        for hub in hubs:
            hub.leave(self)

    # ----------------------------------------------------------------- calls (from _Hub)
    def _call_started(
        self, name: str, session: Session, args: tuple[Any, ...], kwargs: dict[str, Any],
        task: asyncio.Task | None,
    ) -> bool:
        """A tracked call begins in ``task``: start or continue a step; False for a call inside
        another.

        ``args`` and ``kwargs`` are the call's arguments (with the session first, if the method
        is wrapped on a class)."""
        local = self._local
        calls = local.calls
        if task in calls:
            return False
        builder = local.builder
        changed = self._changed_between_calls(session, builder)
        if builder is not None and not changed and builder.joins(name, session):
            local.builder, builder.returned = None, False
        else:
            if builder is not None:
                self._finish_open_step()
            if changed:
                self._finish(_StepBuilder(call=BETWEEN_CALLS, session=session,
                                          name=BETWEEN_CALLS, only_dirty=True))
            builder = _StepBuilder(
                call=_call_name(name, kwargs), session=session, name=name,
                whole_session=_changes_whole_session(name, session, args, kwargs),
            )
        builder.calls += 1
        calls[task] = builder
        return True

    def _call_failed(self, error: BaseException, task: asyncio.Task | None) -> None:
        self._local.calls[task].error = type(error).__name__

    def _call_returned(self, name: str, task: asyncio.Task | None) -> None:
        """Close the call's step, or keep it open for rows still to load or the same call again."""
        builder = self._local.calls.pop(task)
        if builder.error is None and name in LINGERING_CALLS:
            if self._local.builder is not None:
                self._finish_open_step()  # another task's step, left open meanwhile
            self._read_on_return(builder)
            builder.returned, self._local.builder = True, builder
            if not builder.lingering:
                builder.lingering = True
                self._notify(None)
            return
        if name in ("close", "reset"):
            builder.mark("close")
        if builder.rows is not None:  # a run of add() that ends with a failed one
            self._read_on_return(builder)
        self._finish(builder)

    def _call_builder(self) -> _StepBuilder | None:
        """The step of the call running in this thread (and asyncio task), if any."""
        calls = self._local.calls
        return calls.get(_current_task()) if calls else None

    # ----------------------------------------------------------------- event handlers
    def _builder(self, session: Session, first_event: str) -> _StepBuilder:
        """The running call's step; outside any call, this thread's open step, or a new step
        named ``first_event``, or ``"between calls"`` for a cascade (an object appended to a
        collection joins the session)."""
        builder = self._call_builder()
        if builder is not None:
            return builder
        local = self._local
        builder = local.builder
        if builder is not None and not builder.accepts(first_event, session):
            self._finish_open_step()
            builder = None
        if builder is None:
            call = BETWEEN_CALLS if first_event in LIFECYCLE_EVENTS else first_event  # a cascade
            builder = _StepBuilder(call=call, session=session, lingering=True,
                                   whole_session=call in WHOLE_SESSION_CALLS)
            local.builder = builder
        return builder

    def _on_lifecycle(self, session: Session, state: InstanceState, name: str) -> None:
        """One lifecycle event of one object."""
        obj = state.obj()
        if obj is None:  # collected meanwhile: SQLAlchemy's own wrapper skips these too
            return
        record = self._records.get(id(obj))
        if record is None or record() is not obj:
            record = self._record_for(obj)
        builder = self._builder(session, "load" if name == "loaded_as_persistent" else name)
        builder.transition_records.append(record)
        builder.transition_events.append(name)
        builder.touched[record.key] = record
        if builder.returned:  # loaded by a result after its call returned: read it now
            self._read_into(builder, [record])
            builder.read_transitions += 1

    def _on_begin(self, session: Session, transaction: Any, connection: Any) -> None:
        engine = connection.engine
        with self._lock:
            if not any(hub.owner is engine for hub in self._hubs):
                self._hubs.append(_Hub.join(engine, self))
        self._builder(session, "begin").mark("begin")

    def _on_sql(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        """A statement sent on a listened engine: the running call's, or that of a step opened
        outside any call (``session.connection()`` began it); never that of a call which has
        returned (another connection's, then)."""
        builder = self._call_builder()
        if builder is None:
            builder = self._local.builder
            if builder is None or builder.name is not None:
                return
        builder.sql.append(statement)

    def _on_flush(self, session: Session, flush_context: Any) -> None:
        """Remember the objects this flush updates or deletes (they have no lifecycle event)."""
        builder = self._builder(session, "flush")
        builder.mark("flush")
        for obj in list(session.dirty) + list(session.deleted):
            record = self._record_of(obj)
            if record is not None:
                builder.touched[record.key] = record
                record.flushed_change = True

    def _on_flush_postexec(self, session: Session, flush_context: Any) -> None:
        """Label flushed objects now: their ids are known and a commit has not expired them yet."""
        builder = self._builder(session, "flush")
        touched = builder.touched
        _relabel([touched[key] for key in sorted(touched)], identity_changed=True)

    def _on_commit(self, session: Session) -> None:
        self._builder(session, "commit").mark("commit")

    def _on_rollback(self, session: Session, previous_transaction: Any) -> None:
        self._builder(session, "rollback").mark("rollback")

    def _on_transaction_end(self, session: Session, transaction: Any) -> None:
        """A step outside any call (the commit ending ``with session.begin():``) ends here."""
        if transaction.parent is None:
            self.settle()

    # ----------------------------------------------------------------- records and steps
    def _record_of(self, obj: object) -> _Record | None:
        record = self._records.get(id(obj))
        return record if record is not None and record() is obj else None

    def _record_for(self, obj: object) -> _Record:
        """The record of ``obj``, created on first sight; its repr label comes with its step."""
        with self._lock:
            record = self._record_of(obj)
            if record is None:
                record = _Record(obj, len(self._all_records), self._records, self._history)
                self._records[record.object_id] = record
                self._all_records.append(record)
            return record

    def _read(
        self, record: _Record, deleted_ids: Set[int], open_session: int | None
    ) -> tuple:
        obj = record()
        if obj is None:
            return gone_row(record.latest or (record.key, record.label, GONE, "", None))
        return read_row(
            record.key, record.label, record.class_name, instance_state(obj),
            id(obj) in deleted_ids, open_session,
        )

    def _apply(self, record: _Record, row: tuple) -> None:
        """Store a record's new row and keep the per-session membership up to date."""
        previous = record.latest
        old_session = None if previous is None else previous[ROW_SESSION]
        new_session = row[ROW_SESSION]
        if old_session is not None and old_session != new_session:
            members = self._sessions[old_session]
            members.members.discard(record.key)
            members.flagged.discard(record.key)
        if new_session is not None:
            members = self._sessions.get(new_session) or self._sessions.setdefault(
                new_session, _SessionMembers()
            )
            if old_session != new_session:
                members.members.add(record.key)
            if row[ROW_STATE] == "persistent" and (row[ROW_MODIFIED] or row[ROW_EXPIRED]):
                members.flagged.add(record.key)
            else:
                members.flagged.discard(record.key)
        record.latest = row

    def _candidates(self, builder: _StepBuilder, members: _SessionMembers) -> list[_Record]:
        """The records whose row may have changed in this step, in tracker order."""
        candidates = dict(builder.touched)
        if not builder.only_dirty:
            keys = members.members if builder.whole_session else members.flagged
            candidates.update((key, self._all_records[key]) for key in keys)
        session = builder.session_ref()
        if session is not None:
            for obj in list(session.dirty) + list(session.deleted):
                record = self._record_of(obj)
                if record is not None:
                    candidates[record.key] = record
        return [candidates[key] for key in sorted(candidates)]

    def _changed_between_calls(self, session: Session, open_step: _StepBuilder | None) -> bool:
        """Whether an object of ``session`` was modified since its last row (an attribute
        assigned outside any call): the modified objects are read, the others cannot have
        changed without a call or an event."""
        if not session.identity_map.check_modified():
            return False
        kept = {} if open_step is None or open_step.rows is None else open_step.rows
        with self._lock:
            records = [record for record in map(self._record_of, session.dirty)
                       if record is not None]
            records.sort(key=_record_key)
            _relabel(records)
            session_key = session.hash_key
            return any(  # session.dirty leaves out the objects marked for deletion
                self._read(record, _NO_IDS, session_key) != kept.get(record.key, record.latest)
                for record in records
            )

    def _read_on_return(self, builder: _StepBuilder) -> None:
        """A step kept open after its call returned: read the objects as the call left them.

        A result's step reads what its call may have changed (an expired object it did not
        touch is read when the step ends: reading the result may load it); a step of calls that
        emit no SQL (``add()`` ...) only the objects of this call's transitions.
        """
        if builder.rows is None:
            builder.rows, builder.label_budget = {}, LABEL_BUDGET
        transitions, start = builder.transition_records, builder.read_transitions
        builder.read_transitions = len(transitions)
        session = builder.session_ref()  # alive: its call has just returned
        if builder.name not in RESULT_CALLS:
            if start < len(transitions):  # delete() attaches a detached object it marks
                deleted_ids = _deleted_ids(session) if builder.name in DELETING_CALLS else _NO_IDS
                self._read_into(builder, transitions[start:], deleted_ids)
            return
        with self._lock:
            members = self._sessions.get(builder.session_key) or _SessionMembers()
            candidates = self._candidates(builder, members)
            _end_transaction_labels(candidates, builder.events)
        touched, records, untouched_expired = builder.touched, [], []
        for record in candidates:
            latest = record.latest
            if (latest is not None and latest[ROW_EXPIRED] and not latest[ROW_MODIFIED]
                    and record.key not in touched):
                untouched_expired.append(record)
            else:
                records.append(record)
        self._read_into(builder, records, _deleted_ids(session))  # no autoflush: still marked
        rows = builder.rows
        # reading the result loads the expired objects, and with populate_existing overwrites
        # any object it returns
        builder.refreshable = untouched_expired + [
            record for record in records if builder.whole_session or rows[record.key][ROW_EXPIRED]
        ]

    def _read_into(
        self, builder: _StepBuilder, records: list[_Record], deleted_ids: Set[int] = _NO_IDS
    ) -> None:
        """Read ``records``' rows now into the step's kept rows, labelling them by repr()
        within the step's budget; ``deleted_ids``: the objects marked for deletion among them."""
        with self._lock:
            if builder.label_budget:
                builder.label_budget = _relabel(records, budget=builder.label_budget)
            session_key = builder.session_key
            for record in records:
                builder.rows[record.key] = self._read(record, deleted_ids, session_key)

    def _rows_kept(self, builder: _StepBuilder) -> dict[int, tuple]:
        """The rows of a step read as its call returned, and since then: those of objects
        still expired then, which reading the result may have loaded, or of any object with
        ``populate_existing`` (without the attributes assigned since: a later step shows those);
        and the objects a ``delete()`` marked."""
        rows = builder.rows
        session = builder.session_ref()
        session_key = None if session is None else builder.session_key  # see read_row
        refreshable = builder.refreshable
        marked = [] if builder.name not in DELETING_CALLS or session is None else [
            record for record in map(self._record_of, session.deleted)
            if record is not None and record.key not in rows
        ]
        _relabel(refreshable + marked, budget=builder.label_budget)
        deleted_ids = _deleted_ids(session)
        for record in refreshable:
            row = self._read(record, deleted_ids, session_key)
            kept = rows.get(record.key, record.latest)  # as the call left it
            rows[record.key] = (
                row if row[ROW_MODIFIED] == kept[ROW_MODIFIED]
                else _loaded_before_changes(kept, row)
            )
        for record in marked:
            rows[record.key] = self._read(record, deleted_ids, session_key)
        return rows

    def _finish_open_step(self) -> None:
        """Close this thread's step open outside any call."""
        builder, self._local.builder = self._local.builder, None
        self._finish(builder)

    def _finish(self, builder: _StepBuilder) -> None:
        """Close a step: read what changed, append the step, notify listeners."""
        session, session_key = builder.session_ref(), builder.session_key
        with self._lock:
            members = self._sessions.setdefault(session_key, _SessionMembers())
            if builder.rows is None:  # the step ends as its call returns: read it now
                candidates = self._candidates(builder, members)
                _end_transaction_labels(candidates, builder.events)
                _relabel(candidates)
                deleted_ids = _deleted_ids(session)
                open_session = None if session is None else session_key  # see read_row
                rows = {record.key: self._read(record, deleted_ids, open_session)
                        for record in candidates}
            else:
                rows = self._rows_kept(builder)
            records = self._all_records
            changes = []
            for key in sorted(rows):
                row = rows[key]
                if row != records[key].latest:
                    changes.append(row)
                    self._apply(records[key], row)
            in_transaction = session is not None and session.in_transaction()
            if session is not None:
                members.session, members.thread = weakref.ref(session), threading.get_ident()
            changed_transaction = members.in_transaction != in_transaction
            members.in_transaction = in_transaction
            if not (builder.transition_events or builder.events or builder.sql or changes
                    or changed_transaction or builder.error):
                return
            records = builder.transition_records
            transitions = (
                tuple([record.key for record in records]),
                tuple([rows[record.key][1] if record.key in rows else record.label
                       for record in records]),
                tuple(builder.transition_events),
            )
            step = Step(
                index=len(self._history),
                call=builder.call,
                transition_columns=transitions,
                events=tuple(builder.events),
                sql=tuple(builder.sql),
                change_rows=tuple(changes),
                in_transaction=in_transaction,
                error=builder.error,
                session_key=session_key,
                calls=max(builder.calls, 1),
                session_label=self._session_label(session_key),
                thread=builder.thread,
            )
            self._history.append(step)
            for position, record in enumerate(records):
                record.last_step, record.last_position = step.index, position
        self._notify(step)

    def _session_label(self, session_key: int) -> str:
        label = self._session_labels.get(session_key)
        if label is None:
            label = self._session_labels[session_key] = f"session {len(self._session_labels) + 1}"
        return label

    def _notify(self, step: Step | None) -> None:
        with self._lock:
            listeners = list(self._listeners)
        for listener in listeners:
            listener(step)


class _Absent:
    """Marks a method the owner did not define itself (restored by deleting the wrapper)."""


_ABSENT = _Absent()
_HUB_ATTRIBUTE = "_session_visualizer_hub"
# what a hub listens to: SQLAlchemy event -> the tracker's handler
SESSION_EVENT_HANDLERS = {
    "after_begin": SessionTracker._on_begin,
    "after_flush": SessionTracker._on_flush,
    "after_flush_postexec": SessionTracker._on_flush_postexec,
    "after_commit": SessionTracker._on_commit,
    "after_soft_rollback": SessionTracker._on_rollback,
    "after_transaction_end": SessionTracker._on_transaction_end,
}
ENGINE_EVENT_HANDLERS = {"before_cursor_execute": SessionTracker._on_sql}


class _Hub:
    """The one call wrapper and the one set of event listeners on a hooked owner (a Session,
    a sessionmaker's private class, or an Engine), shared by the trackers attached to it.

    Trackers are held weakly: one nobody references any more (a notebook cell re-run made a new
    one) drops out once collected. The hub stays on its owner, costing one empty loop per call,
    until a tracker leaves with ``detach()`` and no other is attached: then the owner's methods
    and listeners are exactly as they were. (Removing it from the garbage collector's callback
    could change SQLAlchemy's listener lists while it iterates them.)
    """

    _lock = threading.RLock()  # attaching and leaving, across all hubs

    def __init__(self, owner: Any) -> None:
        self.owner = owner
        self.trackers: tuple[weakref.ref[SessionTracker], ...] = ()
        self.originals: dict[str, Any] = {}  # the wrapped methods as the owner had them
        self.listeners: list[tuple[str, Callable[..., None]]] = []

    @classmethod
    def join(cls, owner: Any, tracker: SessionTracker) -> _Hub:
        """The owner's hub, installed on first use, with ``tracker`` attached."""
        with cls._lock:
            hub = vars(owner).get(_HUB_ATTRIBUTE)
            if hub is None:
                hub = cls(owner)
                hub._install()
            if not any(ref() is tracker for ref in hub.trackers):
                hub.trackers += (weakref.ref(tracker, hub._drop),)
            return hub

    def leave(self, tracker: SessionTracker) -> None:
        """Detach ``tracker``; the last one to leave uninstalls the hub."""
        with self._lock:
            self.trackers = tuple(
                ref for ref in self.trackers if ref() is not tracker and ref() is not None
            )
            if not self.trackers and vars(self.owner).get(_HUB_ATTRIBUTE) is self:
                self._uninstall()

    def _drop(self, ref: weakref.ref[SessionTracker]) -> None:
        """A tracker was collected."""
        with self._lock:
            self.trackers = tuple(other for other in self.trackers if other is not ref)

    def _install(self) -> None:
        owner = self.owner
        if isinstance(owner, Engine):
            listeners = {name: self._listener(handler)
                         for name, handler in ENGINE_EVENT_HANDLERS.items()}
        else:
            listeners = {name: self._lifecycle_listener(name) for name in LIFECYCLE_EVENTS}
            listeners.update((name, self._listener(handler))
                             for name, handler in SESSION_EVENT_HANDLERS.items())
            for name in TRACKED_CALLS:
                self.originals[name] = vars(owner).get(name, _ABSENT)
                setattr(owner, name, self._wrapper(name, getattr(owner, name)))
        for name, listener in listeners.items():
            # raw: lifecycle listeners receive the InstanceState, without a wrapper per call
            event.listen(owner, name, listener, raw=name in LIFECYCLE_EVENTS)
            self.listeners.append((name, listener))
        setattr(owner, _HUB_ATTRIBUTE, self)

    def _uninstall(self) -> None:
        owner = self.owner
        for name, listener in self.listeners:
            event.remove(owner, name, listener)
        for name, original in self.originals.items():
            if original is _ABSENT:
                delattr(owner, name)
            else:
                setattr(owner, name, original)
        delattr(owner, _HUB_ATTRIBUTE)

    def _listener(self, handler: Callable[..., None]) -> Callable[..., None]:
        """An event listener that passes the event on to every attached tracker."""

        def listener(*args: Any) -> None:
            for ref in self.trackers:
                tracker = ref()
                if tracker is not None:
                    handler(tracker, *args)

        return listener

    def _lifecycle_listener(self, name: str) -> Callable[[Session, InstanceState], None]:
        """The listener of one lifecycle event: it runs once per object, so it is kept short."""

        def listener(session: Session, state: InstanceState) -> None:
            for ref in self.trackers:
                tracker = ref()
                if tracker is not None:
                    tracker._on_lifecycle(session, state, name)

        return listener

    def _wrapper(self, name: str, method: Callable[..., Any]) -> Callable[..., Any]:
        """``method`` reported to every attached tracker (each records it when it is the
        outermost tracked call of its thread)."""
        bound = not isinstance(self.owner, type)

        @functools.wraps(method)
        def call(*args: Any, **kwargs: Any) -> Any:
            refs = self.trackers
            if not refs:
                return method(*args, **kwargs)
            session = self.owner if bound else args[0]
            task = _current_task()
            started = []
            for ref in refs:
                tracker = ref()
                if tracker is not None and tracker._call_started(name, session, args, kwargs, task):
                    started.append(tracker)
            try:
                return method(*args, **kwargs)
            except BaseException as error:
                for tracker in started:
                    tracker._call_failed(error, task)
                raise
            finally:
                for tracker in started:
                    tracker._call_returned(name, task)

        return call


def _current_task() -> asyncio.Task | None:
    """The asyncio task running in this thread, if any: the key of its running calls.

    An AsyncSession runs each call of its Session in a greenlet of the task that awaits it, so
    a call's events arrive in that task.
    """
    loop = asyncio._get_running_loop()  # None outside asyncio, where current_task() would raise
    return None if loop is None else asyncio.current_task(loop)


def _forget(record: _Record) -> None:
    """The object was garbage-collected: its id may now be reused by another object."""
    record.gone_from = len(record.history)
    if record.records.get(record.object_id) is record:
        del record.records[record.object_id]


def _relabel(
    records: Iterable[_Record], identity_changed: bool = False, budget: int = LABEL_BUDGET
) -> int:
    """Label objects by their repr when that cannot load anything; keep fixed labels.

    ``repr()`` runs for at most ``budget`` objects per call, in the order given (tracker
    order: the objects views list first). The others keep their class-and-identity label, which
    is renewed only when ``identity_changed`` (a flush gave them their primary keys). Returns
    the budget left.
    """
    for record in records:
        if not budget and not identity_changed:
            return budget
        obj = record()
        if record.fixed_label or obj is None:
            continue
        insp = instance_state(obj)
        label = safe_label(obj, insp) if budget else None
        if label is not None:
            record.label, record.settled_label = label, True
            if not (insp.committed_state or record.flushed_change):
                record.clean_label = label
            budget -= 1
        elif identity_changed and (not budget or not record.settled_label):
            record.label, record.settled_label = fallback_label(insp), False
        # else: a repr would load expired attributes now; the last label stays
    return budget


def _end_transaction_labels(records: list[_Record], events: list[str]) -> None:
    """After a commit, the labels read are the database's; after a rollback, the clean ones are."""
    if "rollback" in events:
        for record in records:
            if not record.fixed_label and record.clean_label is not None:
                record.label = record.clean_label
            record.flushed_change = False
    elif "commit" in events:
        for record in records:
            if record.flushed_change:
                record.clean_label, record.flushed_change = record.label, False


def _row_position(step: Step, key: int) -> int | None:
    """Where an object's row is in a step's changes (kept in tracker order), or None."""
    rows = step.change_rows
    position = bisect.bisect_left(rows, key, key=_row_key)
    return position if position < len(rows) and rows[position][0] == key else None


def _row_key(row: tuple) -> int:
    return row[0]


def _record_key(record: _Record) -> int:
    return record.key


def _loaded_before_changes(kept: tuple, now: tuple) -> tuple:
    """An expired object's row at the end of a result's step, read after attributes were
    assigned since the call returned: ``kept`` (its row then) if nothing tells that reading the
    result loaded it; else the row ``now``, with the label and changes it had then."""
    assigned = set(now[ROW_MODIFIED]) - set(kept[ROW_MODIFIED])
    left_alone = set(kept[ROW_EXPIRED]) - assigned
    if not left_alone or left_alone & set(now[ROW_EXPIRED]):
        return kept
    row = list(now)
    row[ROW_LABEL], row[ROW_MODIFIED] = kept[ROW_LABEL], kept[ROW_MODIFIED]
    return tuple(row)


def _as_of(row: tuple, gone_from: int | None, index: int) -> tuple:
    """A row as it reads after step ``index``: gone if the object was collected by then."""
    return gone_row(row) if gone_from is not None and index >= gone_from else row


def _session_key(session: Session | int) -> int:
    """A session's ``hash_key`` (a view keeps the key, not the session: see SessionPanel)."""
    return session if isinstance(session, int) else session.hash_key


def _deleted_ids(session: Session | None) -> set[int]:
    return set() if session is None else {id(obj) for obj in session.deleted}


def _method_owner(target: object) -> Session | type[Session]:
    """Where to wrap the calls and listen: the Session, or a (sync) factory's private class.

    An AsyncSession runs every call in the Session it wraps (``sync_session``), so that is where
    its calls are wrapped; an async_sessionmaker is given a private Session class.
    """
    if isinstance(target, (scoped_session, async_scoped_session)):
        target = target.session_factory
    if isinstance(target, sessionmaker):
        # sessionmaker makes a private subclass of its class for itself: wrapping its methods
        # affects only this factory's sessions.
        return target.class_
    if isinstance(target, async_sessionmaker):
        return _private_sync_class(target)
    if isinstance(target, AsyncSession):
        return target.sync_session
    if isinstance(target, Session):
        return target
    raise TypeError(
        "SessionTracker needs a Session, a sessionmaker or a scoped_session (or an AsyncSession,"
        f" an async_sessionmaker or an async_scoped_session), not {type(target).__name__}"
    )


def _private_sync_class(factory: async_sessionmaker) -> type[Session]:
    """The Session class of ``factory``'s sessions, made private to it on first use.

    An async_sessionmaker has no private class of its own (unlike sessionmaker): it is given a
    subclass of the Session class its AsyncSessions wrap (its ``sync_session_class`` argument),
    so that wrapping that class's methods affects only this factory's sessions.
    """
    base = factory.kw.get("sync_session_class") or factory.class_.sync_session_class
    if vars(base).get(_PRIVATE_SYNC_CLASS):
        return base
    private = type(base.__name__, (base,), {_PRIVATE_SYNC_CLASS: True})
    factory.kw["sync_session_class"] = private
    return private


def _changes_whole_session(
    name: str, session: Session, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> bool:
    """Whether a call may change any object of the session without a lifecycle event: expiry,
    a merge, an ORM-enabled UPDATE or DELETE (it synchronizes the objects it matched), or a
    query with ``populate_existing`` (it overwrites the objects it returns)."""
    if name in WHOLE_SESSION_CALLS:
        return True
    if name not in QUERY_CALLS:
        return False
    if kwargs.get("populate_existing"):  # get(User, 1, populate_existing=True)
        return True
    positional = args[1:] if args and args[0] is session else args
    statement = positional[0] if positional else kwargs.get("statement")
    if not isinstance(statement, Executable):  # get()'s entity
        return False
    options = {**statement.get_execution_options(), **(kwargs.get("execution_options") or {})}
    load_options = options.get(LOAD_OPTIONS)  # Query.populate_existing()
    return bool(
        statement.is_dml or options.get("populate_existing")
        or getattr(load_options, "_populate_existing", False)
    )


def _call_name(name: str, kwargs: dict[str, Any]) -> str:
    """A step's name: ``"commit()"``; for ``execute()`` made by SQLAlchemy itself, who made it."""
    return _executed_by(sys._getframe(2), kwargs) if name == "execute" else f"{name}()"


def _executed_by(frame: FrameType | None, kwargs: dict[str, Any]) -> str:
    """The outermost legacy ``Query`` method among the SQLAlchemy calls that led to this
    ``execute()`` (``"Query.one()"``), or an attribute loaded on access, or ``"execute()"``.

    Only the frames of SQLAlchemy's and this file's functions are read: a student's own call
    stops the walk at once."""
    query_method = None
    while frame is not None and frame.f_code.co_filename.startswith(_LIBRARIES):
        if frame.f_code.co_filename == _QUERY_FILE:
            query_method = frame.f_code.co_qualname
        frame = frame.f_back
    if query_method == "Query.__iter__":
        return "iter(Query)"
    if query_method is not None:
        return f"{query_method}()"
    options = kwargs.get("execution_options")
    return LOAD_ON_ACCESS if options and LOAD_OPTIONS in options else "execute()"
