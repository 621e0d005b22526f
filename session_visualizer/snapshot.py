"""Immutable records of what the tracker saw: objects, transitions, steps and session contents.

Everything here is read from ``sqlalchemy.inspect(obj)`` without ever loading an attribute, so it is
safe inside event handlers and on detached objects.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy.orm import InstanceState

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


def state_name(insp: InstanceState) -> str:
    """The lifecycle state of an inspected object: one of ``STATES``."""
    if insp.transient:
        return "transient"
    if insp.pending:
        return "pending"
    if insp.persistent:
        return "persistent"
    if insp.deleted:
        return "deleted"
    return "detached"


def format_identity(identity_key: tuple | None) -> str | None:
    """``(User, (2,))`` for an identity key, or None for an object without one."""
    if identity_key is None:
        return None
    mapped_class, ident = identity_key[0], identity_key[1]
    return f"({mapped_class.__name__}, {ident!r})"


def fallback_label(insp: InstanceState) -> str:
    """A label that needs no attribute: the class name and the identity, if any."""
    name = type(insp.obj()).__name__ if insp.obj() is not None else insp.class_.__name__
    ident = "" if insp.key is None else ", ".join(repr(value) for value in insp.key[1])
    return f"{name}({ident})"


def safe_label(obj: object, insp: InstanceState) -> str | None:
    """``repr(obj)`` when it cannot trigger a load (nothing expired or unloaded), else None."""
    if insp.expired_attributes:
        return None
    if insp.key is not None and insp.unloaded & set(insp.mapper.column_attrs.keys()):
        return None
    return repr(obj)


@dataclass(frozen=True)
class ObjectSnapshot:
    """One tracked object as it was at the end of a step."""

    key: int  # the tracker's own number for the object, in the order it first saw them
    label: str
    state: str  # one of STATES, or GONE
    identity: str | None = None
    modified: tuple[str, ...] = ()
    expired: tuple[str, ...] = ()
    marked_deleted: bool = False  # in session.deleted: persistent, deleted at the next flush
    session_key: int | None = None  # internal only: never rendered

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


def take_snapshot(
    key: int, label: str, insp: InstanceState, marked_deleted: bool
) -> ObjectSnapshot:
    """Read an object's state from its ``InstanceState`` (never loads anything)."""
    return ObjectSnapshot(
        key=key,
        label=label,
        state=state_name(insp),
        identity=format_identity(insp.key),
        modified=tuple(sorted(insp.committed_state)),
        expired=tuple(sorted(insp.expired_attributes)),
        marked_deleted=marked_deleted,
        session_key=insp.session_id,
    )


@dataclass(frozen=True)
class Transition:
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
    """Everything that happened during one public Session call (or one implicit step).

    ``changes`` holds the snapshots of the objects that changed in this step; the tracker
    rebuilds the full picture at any step with ``objects_at`` and ``session_at``.
    """

    index: int
    call: str  # e.g. "commit()"; an implicit step (results loaded later) has no parentheses
    transitions: tuple[Transition, ...]
    events: tuple[str, ...]  # session events in order: begin, flush, commit, rollback, close
    sql: tuple[str, ...]
    changes: tuple[ObjectSnapshot, ...]
    in_transaction: bool
    error: str | None = None  # the exception class name, if the call raised
    session_key: int | None = None  # internal only: never rendered


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
