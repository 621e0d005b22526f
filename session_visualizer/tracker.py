"""Record every state transition of every object of a Session, step by step.

A *step* is one public Session call (``add()``, ``commit()``, ``close()``...). The tracker wraps
those calls on the target's sessions only (the Session instance, or the private subclass a
``sessionmaker`` creates for itself), listens to SQLAlchemy's object-lifecycle and session events
and to the engine's ``before_cursor_execute``, and at the end of each call appends a ``Step`` to its
history. Results loaded after ``execute()``/``scalars()`` returned (rows are turned into objects
lazily, while the result is read) belong to that step: it stays open until the next call in that
thread, the end of the transaction, or until someone reads the tracker.

The tracker never loads an attribute in an event handler (it reads ``inspect(obj)`` only), holds
objects weakly, keeps per-thread bookkeeping in ``threading.local`` and guards its history with a
lock. It knows nothing of widgets: they call ``subscribe`` and read ``history``.
"""

from __future__ import annotations

import bisect
import functools
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import event, inspect
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, scoped_session, sessionmaker

from session_visualizer.snapshot import (
    GONE,
    LIFECYCLE_EVENTS,
    ObjectSnapshot,
    SessionSnapshot,
    Step,
    Transition,
    fallback_label,
    safe_label,
    state_name,
    take_snapshot,
)

# The public Session methods that make a step.
TRACKED_CALLS = (
    "add", "add_all", "delete", "delete_all", "expunge", "expunge_all", "merge", "merge_all",
    "flush", "commit", "rollback", "close", "reset", "execute", "scalars", "scalar", "get",
    "get_one", "refresh", "expire", "expire_all", "begin", "begin_nested",
)
# Calls that return a result whose rows become objects only when the result is read.
RESULT_CALLS = frozenset({"execute", "scalars"})
# Calls that may change every object of the session without a lifecycle event (expiry).
# Session events that can happen outside any call (the end of a ``with session.begin():`` block).
SESSION_EVENTS = frozenset({"begin", "flush", "commit", "rollback"})
WHOLE_SESSION_CALLS = frozenset({"commit", "rollback", "expire", "expire_all", "refresh", "merge"})

Listener = Callable[[Step], None]


@dataclass(eq=False)
class _Record:
    """What the tracker knows about one object: a weak reference and its snapshots."""

    key: int
    ref: weakref.ref
    label: str
    fixed_label: bool = False
    last_transition: tuple[Transition, str] | None = None  # and the call it happened in
    versions: list[tuple[int, ObjectSnapshot]] = field(default_factory=list)

    @property
    def latest(self) -> ObjectSnapshot | None:
        return self.versions[-1][1] if self.versions else None

    def at(self, index: int) -> ObjectSnapshot | None:
        """The snapshot valid after step ``index`` (None if the object was not known yet)."""
        position = bisect.bisect_right(self.versions, index, key=lambda version: version[0])
        return self.versions[position - 1][1] if position else None


@dataclass(eq=False)
class _StepBuilder:
    """The step being recorded in one thread."""

    call: str | None  # None: an implicit step, named after its first event
    session: Session | None
    lingering: bool = False  # the call returned but its result may still load objects
    transitions: list[tuple[_Record, str]] = field(default_factory=list)  # (object, event)
    events: list[str] = field(default_factory=list)
    sql: list[str] = field(default_factory=list)
    touched: dict[int, _Record] = field(default_factory=dict)
    error: str | None = None

    def mark(self, name: str) -> None:
        if not self.events or self.events[-1] != name:
            self.events.append(name)


@dataclass(eq=False)
class _SessionMembers:
    """The tracked objects currently in one session, and those that may change silently."""

    members: set[int] = field(default_factory=set)
    flagged: set[int] = field(default_factory=set)  # modified or expired: re-read every step
    in_transaction: bool = False


class SessionTracker:
    """Record the history of a Session, a sessionmaker's sessions or a scoped_session's sessions."""

    def __init__(self, target: Session | sessionmaker | scoped_session) -> None:
        self._lock = threading.RLock()
        self._local = threading.local()
        self._history: list[Step] = []
        self._records: dict[int, _Record] = {}  # by id(obj), only while the object lives
        self._all_records: list[_Record] = []
        self._sessions: dict[int, _SessionMembers] = {}
        self._listeners: list[Listener] = []
        self._engines: set[Engine] = set()
        self._event_target, self._method_owner = _resolve_target(target)
        self._wrapped: dict[str, Any] = {}
        self._handler_cache: dict[str, Callable[..., None]] = {}
        self._attached = True
        self._listen()
        self._wrap_calls()
        if isinstance(target, Session):
            for obj in list(target.new) + list(target.identity_map.values()):
                self.watch(obj)

    # ----------------------------------------------------------------- public API
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
        with self._lock:
            return self._history[index]

    def state_of(self, obj: object) -> str:
        """The object's state at the last step (one of ``STATES``)."""
        self.settle()
        record = self._record_of(obj)
        if record is None or record.latest is None:
            return state_name(inspect(obj))
        return record.latest.state

    def watch(self, obj: object, label: str | None = None) -> ObjectSnapshot:
        """Track ``obj`` from now on (even while transient) and return its current snapshot."""
        insp = inspect(obj)
        with self._lock:
            record = self._record_for(obj, insp)
            if label is not None:
                record.label, record.fixed_label = label, True
            elif not record.fixed_label:
                record.label = safe_label(obj, insp) or record.label
            snapshot = self._snapshot(record, deleted_ids=_deleted_ids(insp.session))
            if snapshot != record.latest:
                self._apply(record, snapshot, len(self._history) - 1)
            return snapshot

    def latest(self, obj: object) -> ObjectSnapshot:
        """The object's snapshot at the last step (``watch``-ing it if it is not tracked yet)."""
        self.settle()
        record = self._record_of(obj)
        if record is None or record.latest is None:
            return self.watch(obj)
        return record.latest

    def snapshot_of(self, key: int, index: int | None = None) -> ObjectSnapshot | None:
        """An object's snapshot (by its tracker key) after step ``index`` (default: the last)."""
        with self._lock:
            record = self._all_records[key]
            if index is not None:
                return record.at(index)
            latest = record.latest
            return _gone(latest) if latest is not None and record.ref() is None else latest

    def objects_at(self, index: int) -> list[ObjectSnapshot]:
        """Every tracked object's snapshot after step ``index``, in tracker order."""
        with self._lock:
            found = (record.at(index) for record in self._all_records)
            return [snapshot for snapshot in found if snapshot is not None]

    def session_at(self, index: int, session: Session | None = None) -> SessionSnapshot:
        """The session's collections after step ``index`` (default session: that of the step)."""
        with self._lock:
            step = self._history[index] if self._history else None
            session_key = session.hash_key if session is not None else getattr(
                step, "session_key", None
            )
            objects = [snap for snap in self.objects_at(index) if snap.session_key == session_key]
            last_for_session = next(
                (s for s in reversed(self._history[: index + 1]) if s.session_key == session_key),
                None,
            )
            in_transaction = bool(last_for_session and last_for_session.in_transaction)
            return SessionSnapshot.from_objects(objects, in_transaction)

    def current_session(self, session: Session) -> SessionSnapshot:
        """The session's collections after the last step."""
        self.settle()
        with self._lock:
            members = self._sessions.get(session.hash_key, _SessionMembers())
            objects = (self._all_records[key].latest for key in members.members)
            return SessionSnapshot.from_objects(
                (snap for snap in objects if snap is not None), members.in_transaction
            )

    def last_transition(self, key: int) -> tuple[Transition, str] | None:
        """An object's (by tracker key) last lifecycle transition and the call it happened in."""
        with self._lock:
            return self._all_records[key].last_transition

    def subscribe(self, listener: Listener) -> None:
        """Call ``listener(step)`` after every new step (from the thread that made the step)."""
        with self._lock:
            self._listeners.append(listener)

    def unsubscribe(self, listener: Listener) -> None:
        """Stop calling ``listener``."""
        with self._lock:
            if listener in self._listeners:
                self._listeners.remove(listener)

    def settle(self) -> None:
        """Close this thread's step if its call has returned (results read since then included)."""
        builder = getattr(self._local, "builder", None)
        if builder is not None and getattr(self._local, "depth", 0) == 0:
            self._finish()

    def detach(self) -> None:
        """Remove every event listener and call wrapper this tracker added."""
        if not self._attached:
            return
        self.settle()
        self._attached = False
        for name, handler in self._handlers():
            event.remove(self._event_target, name, handler)
        for engine in self._engines:
            event.remove(engine, "before_cursor_execute", self._on_sql)
        self._engines.clear()
        for name, original in self._wrapped.items():
            if original is _ABSENT:
                delattr(self._method_owner, name)
            else:
                setattr(self._method_owner, name, original)
        self._wrapped.clear()

    # ----------------------------------------------------------------- attaching
    def _handlers(self) -> list[tuple[str, Callable[..., None]]]:
        handlers = [(name, self._lifecycle_handler(name)) for name in LIFECYCLE_EVENTS]
        handlers += [
            ("after_begin", self._on_begin),
            ("after_flush", self._on_flush),
            ("after_flush_postexec", self._on_flush_postexec),
            ("after_commit", self._on_commit),
            ("after_soft_rollback", self._on_rollback),
            ("after_transaction_end", self._on_transaction_end),
        ]
        return handlers

    def _listen(self) -> None:
        for name, handler in self._handlers():
            event.listen(self._event_target, name, handler)

    def _lifecycle_handler(self, name: str) -> Callable[[Session, object], None]:
        if name not in self._handler_cache:
            def handler(session: Session, obj: object) -> None:
                self._on_transition(session, obj, name)

            self._handler_cache[name] = handler
        return self._handler_cache[name]

    def _wrap_calls(self) -> None:
        owner = self._method_owner
        for name in TRACKED_CALLS:
            self._wrapped[name] = vars(owner).get(name, _ABSENT)
            setattr(owner, name, self._wrapper(name, getattr(owner, name)))

    def _wrapper(self, name: str, method: Callable[..., Any]) -> Callable[..., Any]:
        bound = not isinstance(self._method_owner, type)

        @functools.wraps(method)
        def call(*args: Any, **kwargs: Any) -> Any:
            session = self._method_owner if bound else args[0]
            local = self._local
            depth = getattr(local, "depth", 0)
            if depth == 0:
                if getattr(local, "builder", None) is not None:
                    self._finish()
                local.builder = _StepBuilder(call=f"{name}()", session=session)
            local.depth = depth + 1
            try:
                return method(*args, **kwargs)
            except BaseException as exc:
                if depth == 0:
                    local.builder.error = type(exc).__name__
                raise
            finally:
                local.depth = depth
                if depth == 0:
                    if name in ("close", "reset"):
                        local.builder.mark("close")
                    if name in RESULT_CALLS:
                        local.builder.lingering = True
                    else:
                        self._finish()

        return call

    # ----------------------------------------------------------------- event handlers
    def _builder(self, session: Session | None, first_event: str) -> _StepBuilder:
        """This thread's open step; outside any call, an implicit step named ``first_event``.

        A session event (begin, flush, commit, rollback) outside any call does not belong to the
        result a returned ``execute()`` is still loading: it starts a step of its own.
        """
        local = self._local
        builder = getattr(local, "builder", None)
        outside_call = getattr(local, "depth", 0) == 0
        if builder is not None and outside_call and first_event in SESSION_EVENTS and (
            builder.call not in SESSION_EVENTS
        ):
            self._finish()
            builder = None
        if builder is None:
            builder = _StepBuilder(call=first_event, session=session, lingering=True)
            local.builder = builder
        elif builder.session is None:
            builder.session = session
        return builder

    def _on_transition(self, session: Session, obj: object, name: str) -> None:
        insp = inspect(obj)
        with self._lock:
            record = self._record_for(obj, insp)
        builder = self._builder(session, "load" if name == "loaded_as_persistent" else name)
        builder.transitions.append((record, name))
        builder.touched[record.key] = record

    def _on_begin(self, session: Session, transaction: Any, connection: Any) -> None:
        engine = connection.engine
        with self._lock:
            if engine not in self._engines:
                self._engines.add(engine)
                event.listen(engine, "before_cursor_execute", self._on_sql)
        self._builder(session, "begin").mark("begin")

    def _on_sql(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        builder = getattr(self._local, "builder", None)
        if builder is not None:
            builder.sql.append(statement)

    def _on_flush(self, session: Session, flush_context: Any) -> None:
        builder = self._builder(session, "flush")
        builder.mark("flush")
        with self._lock:
            for obj in list(session.dirty) + list(session.deleted):
                record = self._record_of(obj)
                if record is not None:
                    builder.touched[record.key] = record

    def _on_flush_postexec(self, session: Session, flush_context: Any) -> None:
        """Label flushed objects now: their ids are known and a commit has not expired them yet."""
        builder = self._builder(session, "flush")
        for record in builder.touched.values():
            obj = record.ref()
            if obj is not None and not record.fixed_label:
                record.label = safe_label(obj, inspect(obj)) or record.label

    def _on_commit(self, session: Session) -> None:
        self._builder(session, "commit").mark("commit")

    def _on_rollback(self, session: Session, previous_transaction: Any) -> None:
        self._builder(session, "rollback").mark("rollback")

    def _on_transaction_end(self, session: Session, transaction: Any) -> None:
        """An implicit step (e.g. the commit at the end of ``with session.begin():``) ends here."""
        local = self._local
        outside_call = getattr(local, "depth", 0) == 0
        if transaction.parent is None and outside_call and getattr(local, "builder", None):
            self._finish()

    # ----------------------------------------------------------------- records and steps
    def _record_of(self, obj: object) -> _Record | None:
        record = self._records.get(id(obj))
        return record if record is not None and record.ref() is obj else None

    def _record_for(self, obj: object, insp: Any) -> _Record:
        """The record of ``obj``, created on first sight (call with the lock held)."""
        record = self._record_of(obj)
        if record is None:
            key = len(self._all_records)
            object_id = id(obj)

            def forget(_ref: weakref.ref, object_id: int = object_id, key: int = key) -> None:
                current = self._records.get(object_id)
                if current is not None and current.key == key:
                    del self._records[object_id]

            label = safe_label(obj, insp) or fallback_label(insp)
            record = _Record(key=key, ref=weakref.ref(obj, forget), label=label)
            self._records[object_id] = record
            self._all_records.append(record)
        return record

    def _snapshot(self, record: _Record, deleted_ids: set[int]) -> ObjectSnapshot:
        obj = record.ref()
        if obj is None:
            return _gone(record.latest or ObjectSnapshot(record.key, record.label, GONE))
        insp = inspect(obj)
        if not record.fixed_label:
            record.label = safe_label(obj, insp) or record.label
        return take_snapshot(record.key, record.label, insp, id(obj) in deleted_ids)

    def _apply(self, record: _Record, snapshot: ObjectSnapshot, index: int) -> None:
        """Store a new snapshot and keep the per-session membership up to date."""
        previous = record.latest
        if previous is not None and previous.session_key is not None:
            members = self._sessions.get(previous.session_key)
            if members is not None:
                members.members.discard(record.key)
                members.flagged.discard(record.key)
        if snapshot.session_key is not None:
            members = self._sessions.setdefault(snapshot.session_key, _SessionMembers())
            members.members.add(record.key)
            if snapshot.modified or snapshot.expired:
                members.flagged.add(record.key)
        record.versions.append((index, snapshot))

    def _finish(self) -> None:
        """Close this thread's step: snapshot what changed, append it, notify listeners."""
        builder: _StepBuilder = self._local.builder
        self._local.builder = None
        session = builder.session
        with self._lock:
            candidates = dict(builder.touched)
            session_key = session.hash_key if session is not None else None
            members = self._sessions.get(session_key) if session_key is not None else None
            if members is not None:
                keys = members.members if builder.call.rstrip("()") in WHOLE_SESSION_CALLS else (
                    members.flagged
                )
                candidates.update((key, self._all_records[key]) for key in keys)
            if session is not None:
                for obj in list(session.dirty) + list(session.deleted):
                    record = self._record_of(obj)
                    if record is not None:
                        candidates[record.key] = record
            deleted_ids = _deleted_ids(session)
            index = len(self._history)
            changes = []
            for key in sorted(candidates):
                record = candidates[key]
                snapshot = self._snapshot(record, deleted_ids)
                if snapshot != record.latest:
                    changes.append(snapshot)
                    self._apply(record, snapshot, index)
            in_transaction = session.in_transaction() if session is not None else False
            if members is None and session_key is not None:
                members = self._sessions.setdefault(session_key, _SessionMembers())
            changed_transaction = members is not None and members.in_transaction != in_transaction
            if members is not None:
                members.in_transaction = in_transaction
            if not (builder.transitions or builder.events or builder.sql or changes
                    or changed_transaction or builder.error):
                return
            step = Step(
                index=index,
                call=builder.call,
                transitions=tuple(
                    Transition(record.key, record.label, name)
                    for record, name in builder.transitions
                ),
                events=tuple(builder.events),
                sql=tuple(builder.sql),
                changes=tuple(changes),
                in_transaction=in_transaction,
                error=builder.error,
                session_key=session_key,
            )
            self._history.append(step)
            for transition in step.transitions:
                self._all_records[transition.key].last_transition = (transition, step.call)
            listeners = list(self._listeners)
        for listener in listeners:
            listener(step)


class _Absent:
    """Marks a method the owner did not define itself (restored by deleting the wrapper)."""


_ABSENT = _Absent()


def _gone(snapshot: ObjectSnapshot) -> ObjectSnapshot:
    return ObjectSnapshot(snapshot.key, snapshot.label, GONE, identity=snapshot.identity)


def _deleted_ids(session: Session | None) -> set[int]:
    return set() if session is None else {id(obj) for obj in session.deleted}


def _resolve_target(target: object) -> tuple[Any, Any]:
    """(what to listen on, where to wrap the calls) for a Session, sessionmaker, scoped_session."""
    if isinstance(target, scoped_session):
        target = target.session_factory
    if isinstance(target, sessionmaker):
        # sessionmaker makes a private subclass of its class for itself: wrapping its methods
        # affects only this factory's sessions.
        return target, target.class_
    if isinstance(target, Session):
        return target, target
    raise TypeError(
        "SessionTracker needs a Session instance, a sessionmaker or a scoped_session, "
        f"not {type(target).__name__}"
    )
