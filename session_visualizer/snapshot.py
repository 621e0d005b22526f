"""Immutable records of what the tracker saw: objects, transitions, steps and session contents.

Everything here is read from ``sqlalchemy.inspect(obj)`` without ever loading an attribute, so it is
safe inside event handlers and on detached objects.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple

from sqlalchemy.orm import InstanceState, Mapper

STATES: tuple[str, ...] = ("transient", "pending", "persistent", "deleted", "detached")
GONE = "gone"  # the object was garbage-collected; the tracker never keeps objects alive

# SQLAlchemy's object-lifecycle events: name -> (state before, state after).
# A freshly loaded object comes from the database, not from another state.
LIFECYCLE_EVENTS: dict[str, tuple[str, str]] = {
    "transient_to_pending": ("transient", "pending"),
    "pending_to_persistent": ("pending", "persistent"),
    "pending_to_transient": ("pending", "transient"),
    "loaded_as_persistent": ("database", "persistent"),
    "persistent_to_transient": ("persistent", "transient"),
    "persistent_to_deleted": ("persistent", "deleted"),
    "deleted_to_detached": ("deleted", "detached"),
    "persistent_to_detached": ("persistent", "detached"),
    "detached_to_persistent": ("detached", "persistent"),
    "deleted_to_persistent": ("deleted", "persistent"),
}

# The events SQLAlchemy fires in a loop over a set of objects (a flush making a parent and its
# children persistent, a rollback detaching some and making others transient), in an order that
# changes from one run of a program to the next: a run of one group's events is listed in tracker
# order. The other events come in the caller's order (add) or the rows' (load) and keep it.
SET_ORDER_GROUPS: dict[str, str] = {
    "pending_to_persistent": "flush made persistent",
    "persistent_to_deleted": "flush deleted",
    "deleted_to_persistent": "rollback restored",
    **dict.fromkeys(
        ("persistent_to_transient", "pending_to_transient", "persistent_to_detached",
         "deleted_to_detached"),
        "detached",
    ),
}


def state_name(insp: InstanceState) -> str:
    """The lifecycle state of an inspected object: one of ``STATES``."""
    if insp.key is None:
        return "pending" if insp.pending else "transient"
    if insp.detached:
        return "detached"
    # attached with an identity: deleted by a flush, or else persistent
    return "deleted" if insp.was_deleted else "persistent"


def fallback_label(insp: InstanceState) -> str:
    """A label that needs no attribute: the class name and the primary key, if any."""
    identity_key = insp.key
    ident = "" if identity_key is None else ", ".join(map(repr, identity_key[1]))
    return f"{insp.class_.__name__}({ident})"


def safe_label(obj: object, insp: InstanceState) -> str | None:
    """``repr(obj)`` when it cannot trigger a load (nothing expired or unloaded), else None.

    A class without a ``__repr__`` of its own would show a memory address, different at every
    run: it gets ``User(id=2, name='Mary')`` from its column attributes instead.
    """
    if insp.expired_attributes:
        return None
    columns, column_set = _column_keys(insp.mapper)
    values = insp.dict
    if insp.key is not None and not values.keys() >= column_set:
        return None
    if type(obj).__repr__ is object.__repr__:
        shown = ", ".join(f"{name}={values.get(name)!r}" for name in columns)
        return f"{insp.class_.__name__}({shown})"
    return repr(obj)


@functools.cache
def _column_keys(mapper: Mapper) -> tuple[tuple[str, ...], frozenset[str]]:
    """A mapped class's column attributes, in order and as a set."""
    keys = tuple(mapper.column_attrs.keys())
    return keys, frozenset(keys)


class ObjectSnapshot(NamedTuple):
    """One tracked object as it was at the end of a step (a tuple: cheap to make and compare)."""

    key: int  # the tracker's own number for the object, in the order it first saw them
    label: str
    state: str  # one of STATES, or GONE
    class_name: str = ""
    primary_key: tuple | None = None  # from SQLAlchemy's identity key; None without one
    modified: tuple[str, ...] = ()
    expired: tuple[str, ...] = ()
    marked_deleted: bool = False  # in session.deleted: persistent, deleted at the next flush
    session_key: int | None = None  # internal only: never rendered

    @property
    def identity(self) -> str | None:
        """The identity key as text: ``(User, (2,))``."""
        return None if self.primary_key is None else f"({self.class_name}, {self.primary_key!r})"

    def categories(self) -> tuple[str, ...]:
        """The session collections this object belongs to (``new``, ``dirty``, ...)."""
        if self.state == "pending":
            return ("new",)
        if self.state != "persistent":
            return ()
        if self.marked_deleted:
            return ("identity_map", "deleted")
        if self.modified:
            return ("identity_map", "dirty")
        return ("identity_map",)


def read_row(
    key: int, label: str, class_name: str, insp: InstanceState, marked_deleted: bool,
    open_session: int | None = None,
) -> tuple:
    """An ``ObjectSnapshot``'s fields as a plain tuple, read from ``InstanceState`` (no loading).

    ``open_session`` is the ``hash_key`` of a Session known to be alive: an object in it is
    attached, which then needs no look-up in SQLAlchemy's registry of sessions (the step's
    session: most objects a step reads are in it).

    The tracker stores rows, not snapshots: the garbage collector stops tracking plain tuples of
    plain values, so a history of many thousands of them costs it nothing.
    """
    identity_key = insp.key
    session_id = insp.session_id
    if session_id is not None and session_id == open_session:
        state = (
            "pending" if identity_key is None
            else "deleted" if insp.was_deleted else "persistent"
        )
    else:
        state = state_name(insp)
    return (
        key,
        label,
        state,
        class_name,
        None if identity_key is None else identity_key[1],
        tuple(sorted(insp.committed_state)) if insp.committed_state else (),
        tuple(sorted(insp.expired_attributes)) if insp.expired_attributes else (),
        marked_deleted,
        session_id,
    )


def gone_row(row: tuple) -> tuple:
    """The row of a garbage-collected object: its label and identity, state ``gone``."""
    return (row[0], row[1], GONE, row[3], row[4], (), (), False, None)


ROW_LABEL, ROW_STATE, ROW_MODIFIED, ROW_EXPIRED, ROW_SESSION = (
    ObjectSnapshot._fields.index(name)
    for name in ("label", "state", "modified", "expired", "session_key")
)


class Transition(NamedTuple):
    """One object-lifecycle event: which object went from which state to which."""

    key: int
    label: str
    event: str  # the SQLAlchemy event name, e.g. "pending_to_persistent"

    @property
    def before(self) -> str:
        return LIFECYCLE_EVENTS[self.event][0]

    @property
    def after(self) -> str:
        return LIFECYCLE_EVENTS[self.event][1]


@dataclass(frozen=True)
class Step:
    """Everything that happened during one public Session call, or a run of the same call.

    ``changes`` holds the snapshots of the objects that changed in this step; the tracker
    rebuilds the full picture at any step with ``objects_at`` and ``session_at``. Both are kept
    as plain tuples (see ``read_row``) and become named tuples when asked for.
    """

    index: int
    call: str  # e.g. "commit()"; outside any call "between calls", or its first event ("commit")
    # the transitions as three columns: object keys, labels, event names
    transition_columns: tuple[tuple[int, ...], tuple[str, ...], tuple[str, ...]]
    events: tuple[str, ...]  # session events in order: begin, flush, commit, rollback, close
    sql: tuple[str, ...]
    change_rows: tuple[tuple, ...]
    in_transaction: bool
    error: str | None = None  # the exception class name, if the call raised
    session_key: int | None = None  # internal only: never rendered
    calls: int = 1  # consecutive identical calls (add(), add(), ...) make one step
    session_label: str = ""  # "session 1", "session 2"...: in the order the tracker first saw them
    thread: str = ""  # the name of the thread that made the step

    @property
    def transitions(self) -> tuple[Transition, ...]:
        """The lifecycle events of this step, in the order they happened (see ``_listed``)."""
        return self.first_transitions(self.transition_count)

    def first_transitions(self, count: int) -> tuple[Transition, ...]:
        """The first ``count`` transitions (a view lists a few of a step's thousands)."""
        keys, labels, events = self.transition_columns
        return tuple(Transition(keys[i], labels[i], events[i]) for i in self._listed[:count])

    @functools.cached_property
    def _listed(self) -> list[int]:
        """The positions of the transitions in the order they are listed: as they happened,
        except that a run of events SQLAlchemy fires in one loop over a set of objects (see
        ``SET_ORDER_GROUPS``) is in tracker order."""
        keys, _labels, events = self.transition_columns
        listed: list[int] = []
        start, count = 0, len(events)
        while start < count:
            group, end = SET_ORDER_GROUPS.get(events[start]), start + 1
            while group is not None and end < count and SET_ORDER_GROUPS.get(events[end]) == group:
                end += 1
            listed += sorted(range(start, end), key=keys.__getitem__)
            start = end
        return listed

    @property
    def transition_count(self) -> int:
        return len(self.transition_columns[0])

    @property
    def changes(self) -> tuple[ObjectSnapshot, ...]:
        """The objects whose snapshot changed in this step, in tracker order."""
        return tuple(map(ObjectSnapshot._make, self.change_rows))

    @property
    def title(self) -> str:
        """The call, with the number of calls when several made the step: ``add() x3``."""
        return self.call if self.calls == 1 else f"{self.call} x{self.calls}"


@dataclass(frozen=True)
class SessionSnapshot:
    """The session's collections at one step, as labels in a stable order."""

    new: tuple[str, ...] = ()
    dirty: tuple[str, ...] = ()
    deleted: tuple[str, ...] = ()
    identity_map: tuple[str, ...] = ()
    in_transaction: bool = False

    @classmethod
    def from_objects(
        cls, objects: Iterable[ObjectSnapshot], in_transaction: bool
    ) -> SessionSnapshot:
        """Sort object snapshots into the session's collections (objects in tracker order)."""
        groups: dict[str, list[str]] = {"new": [], "dirty": [], "deleted": [], "identity_map": []}
        for snapshot in sorted(objects, key=lambda snap: snap.key):
            for category in snapshot.categories():
                groups[category].append(snapshot.label)
        return cls(**{name: tuple(labels) for name, labels in groups.items()},
                   in_transaction=in_transaction)
