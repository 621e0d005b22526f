"""The SessionTracker over real sessions: every lifecycle transition, the session events, SQL,
snapshots, weak references, threads, and detaching."""

from __future__ import annotations

import asyncio
import gc
import threading
import weakref

import pytest
from sqlalchemy import String, create_engine, inspect, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import (
    AsyncSession,
    async_scoped_session,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import (
    DeclarativeBase,
    Mapped,
    Session,
    make_transient_to_detached,
    mapped_column,
    scoped_session,
    sessionmaker,
)
from sqlalchemy.pool import StaticPool

from session_visualizer import STATES, SessionTracker


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(30), unique=True)

    def __repr__(self) -> str:
        return f"User(id={self.id}, name={self.name!r})"


@pytest.fixture
def engine():
    engine = create_engine(
        "sqlite://", poolclass=StaticPool, connect_args={"check_same_thread": False}
    )
    Base.metadata.create_all(engine)
    with Session(engine) as session:
        session.add(User(name="John"))
        session.commit()
    yield engine
    engine.dispose()


@pytest.fixture
def session(engine):
    with Session(engine) as session:
        yield session


def steps_with(tracker: SessionTracker, event_name: str) -> list[tuple[str, str]]:
    """(call, object label) of every transition named ``event_name``."""
    return [
        (step.title, transition.label)
        for step in tracker.history
        for transition in step.transitions
        if transition.event == event_name
    ]


# Each scenario drives a session to one lifecycle event; the expected step is the call that did it.
# Scenarios return their objects: the session's identity map alone would not keep them alive.
def add(session):
    mary = User(name="Mary")
    session.add(mary)
    return mary


def flush(session):
    mary = add(session)
    session.flush()
    return mary


def expunge_pending(session):
    mary = add(session)
    session.expunge(mary)
    return mary


def load(session):
    return session.scalars(select(User)).all()


def rollback_insert(session):
    mary = flush(session)
    session.rollback()
    return mary


def delete_flush(session):
    john = session.get(User, 1)
    session.delete(john)
    session.flush()
    return john


def delete_commit(session):
    john = delete_flush(session)
    session.commit()
    return john


def close(session):
    john = session.get(User, 1)
    session.close()
    return john


def add_detached(session):
    john = close(session)
    session.add(john)
    return john


def delete_rollback(session):
    john = delete_flush(session)
    session.rollback()
    return john


@pytest.mark.parametrize(
    ("scenario", "event_name", "call"),
    [
        (add, "transient_to_pending", "add()"),
        (flush, "pending_to_persistent", "flush()"),
        (expunge_pending, "pending_to_transient", "expunge()"),
        (load, "loaded_as_persistent", "scalars()"),
        (rollback_insert, "persistent_to_transient", "rollback()"),
        (delete_flush, "persistent_to_deleted", "flush()"),
        (delete_commit, "deleted_to_detached", "commit()"),
        (close, "persistent_to_detached", "close()"),
        (add_detached, "detached_to_persistent", "add()"),
        (delete_rollback, "deleted_to_persistent", "rollback()"),
    ],
)
def test_each_lifecycle_event_is_recorded_with_the_call_that_caused_it(
    session, scenario, event_name, call
):
    tracker = SessionTracker(session)
    kept = scenario(session)
    assert kept is not None
    assert [found_call for found_call, _label in steps_with(tracker, event_name)] == [call]


def test_states_follow_the_article_scenario(session):
    tracker = SessionTracker(session)
    mary = User(name="Mary")
    tracker.watch(mary)
    seen, expected = [], []

    def look() -> None:
        seen.append(tracker.state_of(mary))
        expected.append(next(state for state in STATES if getattr(inspect(mary), state)))

    look()
    for action in (
        lambda: session.add(mary),
        session.commit,
        lambda: session.delete(mary),
        session.flush,
        session.commit,
    ):
        action()
        look()
    assert seen == ["transient", "pending", "persistent", "persistent", "deleted", "detached"]
    assert seen == expected


def test_session_events_and_sql_belong_to_their_step(session):
    tracker = SessionTracker(session)
    session.add(User(name="Mary"))
    session.commit()
    session.scalars(select(User).where(User.name == "Mary")).one()
    session.rollback()
    session.close()
    steps = {step.call: step for step in tracker.history}
    assert list(steps) == ["add()", "commit()", "scalars()", "rollback()", "close()"]
    assert steps["commit()"].events == ("begin", "flush", "commit")
    assert steps["commit()"].sql == ("INSERT INTO users (name) VALUES (?)",)
    assert steps["scalars()"].sql[0].startswith("SELECT users.id, users.name")
    assert steps["rollback()"].events == ("rollback",)
    assert steps["close()"].events == ("close",)
    assert steps["add()"].sql == ()


def test_snapshots_hold_identity_modified_and_expired_attributes(session):
    tracker = SessionTracker(session)
    john = session.get(User, 1)
    john.name = "Johnny"
    session.flush()
    session.commit()
    by_call = {step.call: step for step in tracker.history}
    assert tracker.session_at(by_call["get()"].index).identity_map == ("User(id=1, name='John')",)
    flushed = by_call["flush()"].changes
    assert [snap.identity for snap in flushed] == ["(User, (1,))"]
    assert flushed[0].modified == ()
    committed = by_call["commit()"].changes[0]
    assert committed.state == "persistent"
    assert committed.expired == ("id", "name")
    assert committed.label == "User(id=1, name='Johnny')"


def test_session_snapshot_lists_new_dirty_deleted_and_identity_map(session):
    tracker = SessionTracker(session)
    john = session.get(User, 1)
    mary = User(name="Mary")
    session.add(mary)
    john.name = "Johnny"
    session.flush()
    ann = User(name="Ann")
    session.add(ann)
    john.name = "Jo"
    session.delete(mary)
    panel = tracker.current_session(session)
    assert panel.new == ("User(id=None, name='Ann')",)
    assert panel.dirty == ("User(id=1, name='Jo')",)
    assert panel.deleted == ("User(id=2, name='Mary')",)
    assert panel.identity_map == ("User(id=1, name='Jo')", "User(id=2, name='Mary')")
    assert panel.in_transaction


def test_handlers_never_load_expired_attributes(session):
    tracker = SessionTracker(session)
    john = session.get(User, 1)
    session.commit()
    session.close()  # would raise DetachedInstanceError if a handler read john.name
    assert inspect(john).expired_attributes == {"id", "name"}
    assert tracker.history[-1].sql == ()
    assert tracker.state_of(john) == "detached"


def test_a_run_of_add_calls_is_one_step(session):
    tracker = SessionTracker(session)
    for name in ("Mary", "Ann", "Bob"):
        session.add(User(name=name))
    session.flush()
    assert [step.title for step in tracker.history] == ["add() x3", "flush()"]
    assert tracker.history[0].transition_count == 3


def test_results_loaded_after_the_call_returned_belong_to_its_step(session):
    tracker = SessionTracker(session)
    result = session.scalars(select(User))
    users = result.all()  # rows become objects here, after scalars() returned
    assert [step.call for step in tracker.history] == ["scalars()"]
    assert steps_with(tracker, "loaded_as_persistent") == [("scalars()", repr(users[0]))]


def test_a_commit_ending_a_begin_block_is_a_step_of_its_own(session):
    tracker = SessionTracker(session)
    mary = User(name="Mary")
    with session.begin():
        session.add(mary)
    steps = tracker.history
    # leaving the block commits: SessionTransaction.commit() flushes, then commits
    assert [step.call for step in steps] == ["begin()", "add()", "flush()", "commit"]
    assert steps[-1].events == ("commit",)
    assert steps_with(tracker, "pending_to_persistent") == [("flush()", "User(id=2, name='Mary')")]


def test_a_failing_call_records_its_error(session):
    tracker = SessionTracker(session)
    session.add(User(name="John"))  # the name is unique: the insert fails
    with pytest.raises(IntegrityError):
        session.commit()
    failed = tracker.history[-1]
    assert (failed.call, failed.error) == ("commit()", "IntegrityError")


def test_objects_are_held_weakly_and_shown_as_gone(session):
    tracker = SessionTracker(session)
    mary = User(name="Mary")
    key = tracker.watch(mary).key
    session.add(mary)
    session.expunge(mary)
    mary_ref = weakref.ref(mary)
    del mary
    gc.collect()
    assert mary_ref() is None
    assert tracker.snapshot_of(key).state == "gone"
    assert tracker.snapshot_of(key).label == "User(id=None, name='Mary')"


def test_a_sessionmaker_is_tracked_and_detached(engine):
    factory = sessionmaker(engine)
    tracker = SessionTracker(factory)
    with factory() as first:
        first.add(User(name="Mary"))
        first.commit()
    assert [step.call for step in tracker.history] == ["add()", "commit()", "close()"]
    tracker.detach()
    assert not {"add", "commit", "close"} & set(vars(factory.class_))
    with factory() as second:
        second.add(User(name="Ann"))
        second.commit()
    assert len(tracker.history) == 3


def test_a_session_instance_is_detached(session):
    tracker = SessionTracker(session)
    tracker.detach()
    assert "add" not in vars(session)
    session.add(User(name="Mary"))
    session.commit()
    assert tracker.history == []


def test_a_scoped_session_used_from_two_threads(tmp_path):
    engine = create_engine(f"sqlite:///{tmp_path / 'threads.db'}")
    Base.metadata.create_all(engine)
    registry = scoped_session(sessionmaker(engine))
    tracker = SessionTracker(registry)
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def work(prefix: str) -> None:
        try:
            barrier.wait()
            for number in range(20):
                registry.add(User(name=f"{prefix}{number}"))
                registry.commit()
            registry.scalars(select(User)).all()
            registry.remove()
        except BaseException as error:  # reported below, in the test's thread
            errors.append(error)

    threads = [threading.Thread(target=work, args=(prefix,)) for prefix in "ab"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    engine.dispose()
    assert errors == []
    history = tracker.history
    assert [step.index for step in history] == list(range(len(history)))
    inserted = steps_with(tracker, "pending_to_persistent")
    assert sorted(label.split("'")[1] for _call, label in inserted) == sorted(
        f"{prefix}{number}" for prefix in "ab" for number in range(20)
    )
    assert {call for call, _label in inserted} == {"commit()"}
    sessions = {step.session_key for step in history}
    assert len(sessions) == 2
    # each step belongs to one thread's session: its transitions are of that thread's objects
    for step in history:
        if step.call == "commit()":
            assert len({t.label.split("'")[1][0] for t in step.transitions}) <= 1


class Note(Base):
    """A mapped class without a __repr__ of its own."""

    __tablename__ = "notes"
    id: Mapped[int] = mapped_column(primary_key=True)
    text: Mapped[str] = mapped_column(String(30))


def test_objects_without_a_repr_are_labelled_by_their_columns_not_their_address(session):
    tracker = SessionTracker(session)
    note = Note(text="hello")
    assert tracker.watch(note).label == "Note(id=None, text='hello')"
    session.add(note)
    session.flush()
    assert tracker.history[-1].changes[0].label == "Note(id=1, text='hello')"


def test_a_bad_target_is_refused_with_a_clear_message():
    with pytest.raises(TypeError, match="a Session, a sessionmaker or a scoped_session"):
        SessionTracker(Session)


READERS = {  # reader -> (how to read it with the add() step open, what it then reads)
    "snapshot_of": (lambda tracker, key, session: tracker.snapshot_of(key).state, "pending"),
    "snapshot_at": (lambda tracker, key, session: tracker.snapshot_at(key, 1).state, "pending"),
    "step_at": (lambda tracker, key, session: tracker.step_at(1).call, "add()"),
    "objects_at": (
        lambda tracker, key, session: [snap.state for snap in tracker.objects_at(1)],
        ["persistent", "pending"],
    ),
    "session_at": (
        lambda tracker, key, session: tracker.session_at(1).new,
        ("User(id=None, name='Mary')",),
    ),
    "session_snapshot_at": (
        lambda tracker, key, session: tracker.session_snapshot_at(session, 1).new,
        ("User(id=None, name='Mary')",),
    ),
    "current_session": (
        lambda tracker, key, session: tracker.current_session(session).new,
        ("User(id=None, name='Mary')",),
    ),
    "last_transition": (
        lambda tracker, key, session: tracker.last_transition(key)[0].event,
        "transient_to_pending",
    ),
    "last_transition_at": (
        lambda tracker, key, session: tracker.last_transition_at(key, 1)[0].event,
        "transient_to_pending",
    ),
    "steps_touching": (lambda tracker, key, session: tracker.steps_touching(key), [1]),
    "history": (lambda tracker, key, session: tracker.history[-1].call, "add()"),
    "step_count": (lambda tracker, key, session: tracker.step_count, 2),
}


@pytest.mark.parametrize("reader", list(READERS))
def test_every_public_reader_settles_the_open_step(session, reader):
    tracker = SessionTracker(session)
    john = session.get(User, 1)
    mary = User(name="Mary")
    key = tracker.watch(mary).key
    session.add(mary)  # the add() step stays open: more add() calls may join it
    read, expected = READERS[reader]
    assert read(tracker, key, session) == expected
    assert tracker.state_of(john) == "persistent"


def test_steps_name_their_session_and_thread(engine):
    factory = sessionmaker(engine)
    tracker = SessionTracker(factory)

    def work() -> None:
        with factory() as session:
            session.get(User, 1)

    with factory() as first:
        first.get(User, 1)
        worker = threading.Thread(target=work, name="worker")
        worker.start()
        worker.join(timeout=30)
        first.rollback()
    names = [(step.call, step.session_label, step.thread) for step in tracker.history]
    assert names == [
        ("get()", "session 1", "MainThread"),
        ("get()", "session 2", "worker"),
        ("close()", "session 2", "worker"),
        ("rollback()", "session 1", "MainThread"),
        ("close()", "session 1", "MainThread"),
    ]


def test_readers_at_each_step_of_a_with_block(engine):
    factory = sessionmaker(engine)
    tracker = SessionTracker(factory)
    mary = User(name="Mary")
    key = tracker.watch(mary).key
    with factory() as session, session.begin():
        session.add(mary)
        session.flush()
    calls = [step.call for step in tracker.history]
    assert calls == ["begin()", "add()", "flush()", "commit", "close()"]
    states = [tracker.snapshot_at(key, index) for index in range(-1, len(calls))]
    assert [(snap.state, snap.label, snap.expired) for snap in states] == [
        ("transient", "User(id=None, name='Mary')", ()),
        ("transient", "User(id=None, name='Mary')", ()),
        ("pending", "User(id=None, name='Mary')", ()),
        ("persistent", "User(id=2, name='Mary')", ()),
        ("persistent", "User(id=2, name='Mary')", ("id", "name")),
        ("detached", "User(id=2, name='Mary')", ("id", "name")),
    ]
    assert tracker.steps_touching(key) == [1, 2, 3, 4]
    assert [tracker.last_transition_at(key, index)[1] for index in range(1, 5)] == [
        "add()", "flush()", "flush()", "close()"
    ]
    assert tracker.last_transition_at(key, 0) is None
    panels = [tracker.session_snapshot_at(session, index) for index in range(5)]
    assert [(panel.new, panel.identity_map, panel.in_transaction) for panel in panels] == [
        ((), (), True),
        (("User(id=None, name='Mary')",), (), True),
        ((), ("User(id=2, name='Mary')",), True),
        ((), ("User(id=2, name='Mary')",), False),
        ((), (), False),
    ]


def test_labels_at_each_step_follow_a_rollback(engine):
    factory = sessionmaker(engine)
    tracker = SessionTracker(factory)
    with factory() as session:
        john = session.get(User, 1)
        key = tracker.watch(john).key
        john.name = "Jonathan"
        session.flush()
        session.rollback()
        session.expunge(john)  # detached and expired: nothing can re-read its name
    labels = [(step.call, tracker.snapshot_at(key, step.index).label) for step in tracker.history]
    assert labels == [
        ("get()", "User(id=1, name='John')"),
        ("between calls", "User(id=1, name='Jonathan')"),  # the rename, before the flush
        ("flush()", "User(id=1, name='Jonathan')"),
        ("rollback()", "User(id=1, name='John')"),
        ("expunge()", "User(id=1, name='John')"),
        ("close()", "User(id=1, name='John')"),
    ]


def test_changes_between_calls_are_caught_up_as_a_step(session):
    tracker = SessionTracker(session)
    john = session.get(User, 1)
    john.name = "Johnny"  # no Session call: no step yet
    assert tracker.current_session(session).dirty == ()
    tracker.catch_up()
    step = tracker.history[-1]
    assert (step.call, step.session_label) == ("between calls", "session 1")
    assert tracker.session_snapshot_at(session, step.index).dirty == ("User(id=1, name='Johnny')",)
    tracker.catch_up()  # nothing new: no step
    assert tracker.step_count == 2


JOHN, JOHNNY = "User(id=1, name='John')", "User(id=1, name='Johnny')"


@pytest.mark.parametrize(("rename_first", "john_at_each_step"), [
    (True, [("scalars()", JOHN, ()), ("between calls", JOHNNY, ("name",)),
            ("add()", JOHNNY, ("name",)), ("commit()", JOHNNY, ())]),
    (False, [("scalars()", JOHN, ()), ("add()", JOHN, ()),
             ("between calls", JOHNNY, ("name",)), ("commit()", JOHNNY, ())]),
])
def test_a_change_between_two_calls_is_a_step_of_its_own_not_the_earlier_calls(
    session, rename_first, john_at_each_step
):
    """A step shows the objects as its call left them, even a step kept open after its call
    returned (a result's rows load later; a run of add() may go on)."""
    tracker = SessionTracker(session)
    john = session.scalars(select(User).where(User.name == "John")).one()  # loaded after return
    david = User(name="David")
    if rename_first:
        john.name = "Johnny"
        session.add(david)
    else:
        session.add(david)
        john.name, david.name = "Johnny", "Dave"
    session.commit()
    key, david_key = tracker.watch(john).key, tracker.watch(david).key
    seen = [tracker.snapshot_at(key, step.index) for step in tracker.history]
    assert [(step.call, snap.label, snap.modified)
            for step, snap in zip(tracker.history, seen, strict=True)] == john_at_each_step
    load = tracker.history[0].transitions[0]
    assert (load.label, load.event) == (JOHN, "loaded_as_persistent")
    add = next(step for step in tracker.history if step.call == "add()")
    assert [snap.key for snap in add.changes] == [david_key]  # only what add() changed
    assert tracker.snapshot_at(david_key, add.index).label == "User(id=None, name='David')"


@pytest.mark.parametrize("reload", ["print", "query"])
def test_a_reload_shows_in_its_step_and_a_rename_after_it_in_the_next(session, reload):
    """The expired object a result loads, then renamed before the next call: the loading step
    shows it loaded as it was, the rename is a step of its own."""
    tracker = SessionTracker(session)
    john = session.get(User, 1)
    session.commit()  # expires John
    if reload == "print":
        print(john)  # loads him: a call (load on access)
    else:
        session.scalars(select(User)).all()  # loads him while the result is read
    john.name = "Johnny"
    session.flush()
    key = tracker.watch(john).key
    seen = [(tracker.step_at(index).call, tracker.snapshot_at(key, index))
            for index in tracker.steps_touching(key)]
    assert [(call, snap.label, snap.modified, snap.expired) for call, snap in seen] == [
        ("get()", JOHN, (), ()),
        ("commit()", JOHN, (), ("id", "name")),
        ("load on access" if reload == "print" else "scalars()", JOHN, (), ()),
        ("between calls", JOHNNY, ("name",), ()),
        ("flush()", JOHNNY, (), ()),
    ]


def test_an_object_collected_reads_as_gone_only_from_then_on(session):
    tracker = SessionTracker(session)
    mary = User(name="Mary")
    key = tracker.watch(mary).key
    session.add(mary)
    session.expunge(mary)
    session.get(User, 1)
    del mary
    gc.collect()
    session.rollback()
    assert [tracker.snapshot_at(key, index).state for index in range(4)] == [
        "pending", "transient", "transient", "gone"
    ]
    assert [snap.state for snap in tracker.objects_at(2)][0] == "transient"
    assert [snap.state for snap in tracker.objects_at(3)][0] == "gone"


TRACKED_METHODS = ("add", "commit", "close", "execute", "_session_visualizer_hub")


def methods_of(owner) -> dict[str, object]:
    """The tracked methods (and hub) the owner defines itself."""
    return {name: vars(owner)[name] for name in TRACKED_METHODS if name in vars(owner)}


def add_one(factory, name: str) -> None:
    with factory() as session:
        session.add(User(name=name))
        session.commit()


@pytest.mark.parametrize("first_leaves_first", [True, False])
def test_two_trackers_on_one_factory_attach_and_detach_in_either_order(engine, first_leaves_first):
    factory = sessionmaker(engine)
    before = methods_of(factory.class_)
    first, second = SessionTracker(factory), SessionTracker(factory)
    assert vars(factory.class_)["add"].__wrapped__ is Session.add  # one wrapper, shared
    add_one(factory, "Mary")
    leaving, staying = (first, second) if first_leaves_first else (second, first)
    leaving.detach()
    add_one(factory, "Ann")
    assert [step.call for step in leaving.history] == ["add()", "commit()", "close()"]
    assert [step.call for step in staying.history] == ["add()", "commit()", "close()"] * 2
    staying.detach()
    assert methods_of(factory.class_) == before == {}
    add_one(factory, "Bob")
    assert len(staying.history) == 6


def test_a_re_run_cell_never_nests_wrappers(engine):
    factory = sessionmaker(engine)
    tracker = SessionTracker(factory)
    old = weakref.ref(tracker)
    old_history = tracker.history
    tracker = SessionTracker(factory)  # the cell again; the old tracker is never detached
    gc.collect()
    assert old() is None  # nothing else held it: it stopped recording
    assert vars(factory.class_)["add"].__wrapped__ is Session.add
    hub = vars(factory.class_)["_session_visualizer_hub"]
    assert [ref() for ref in hub.trackers] == [tracker]
    add_one(factory, "Mary")
    assert [step.call for step in tracker.history] == ["add()", "commit()", "close()"]
    assert old_history == []
    tracker.detach()
    assert methods_of(factory.class_) == {}


def test_a_re_run_cell_on_a_session_instance(session):
    trackers = [SessionTracker(session) for _run in range(3)]
    assert vars(session)["add"].__wrapped__.__func__ is Session.add
    session.add(User(name="Mary"))
    assert [len(tracker.history) for tracker in trackers] == [1, 1, 1]
    for tracker in trackers:
        tracker.detach()
    assert methods_of(session) == {}


def test_one_tracker_follows_several_targets(engine, tmp_path):
    other_engine = create_engine(f"sqlite:///{tmp_path / 'other.db'}")
    Base.metadata.create_all(other_engine)
    first, second = sessionmaker(engine), scoped_session(sessionmaker(other_engine))
    tracker = SessionTracker(first)
    tracker.follow(second)
    tracker.follow(first)  # already followed: nothing changes
    assert len({ref() for ref in vars(first.class_)["_session_visualizer_hub"].trackers}) == 1
    add_one(first, "Mary")
    second.add(User(name="Ann"))
    second.commit()
    second.remove()
    steps = [(step.call, step.session_label) for step in tracker.history]
    assert steps == [
        ("add()", "session 1"), ("commit()", "session 1"), ("close()", "session 1"),
        ("add()", "session 2"), ("commit()", "session 2"), ("close()", "session 2"),
    ]
    assert tracker.history[4].sql == ("INSERT INTO users (name) VALUES (?)",)
    tracker.detach()
    assert methods_of(first.class_) == methods_of(second.session_factory.class_) == {}
    for hooked in (engine, other_engine):
        assert "_session_visualizer_hub" not in vars(hooked)
        assert len(hooked.dispatch.before_cursor_execute) == 0
    other_engine.dispose()


def test_a_session_of_a_followed_factory_is_not_recorded_twice(engine):
    factory = sessionmaker(engine)
    tracker = SessionTracker(factory)
    mary = User(name="Mary")
    with factory() as session:
        tracker.follow(session)
        session.add(mary)
        session.flush()
    assert [(step.call, step.transition_count) for step in tracker.history] == [
        ("add()", 1), ("flush()", 1), ("close()", 1)
    ]


@pytest.mark.filterwarnings("ignore::sqlalchemy.exc.LegacyAPIWarning")
def test_legacy_query_calls_are_named_as_such(session):
    tracker = SessionTracker(session)
    query = session.query(User)
    john = query.get(1)
    query.filter(User.name == "John").one()
    query.all()
    query.first()
    query.count()
    list(query)
    query.filter(User.name == "Nobody").update({"name": "Somebody"})
    session.execute(select(User))
    session.commit()
    assert john.name == "John"  # expired by the commit: loaded again on access
    assert [step.call for step in tracker.history] == [
        "Query.get()", "Query.one()", "Query.all()", "Query.first()", "Query.count()",
        "iter(Query)", "Query.update()", "execute()", "commit()", "load on access",
    ]


def test_readers_before_any_step(session):
    tracker = SessionTracker(session)
    mary = User(name="Mary")
    key = tracker.watch(mary).key
    session.add(mary)
    session.flush()
    for index in (-1, -2):
        assert tracker.snapshot_at(key, index).state == "transient"
        assert tracker.last_transition_at(key, index) is None
        assert tracker.objects_at(index) == []
        assert tracker.session_snapshot_at(session, index).new == ()


async def _async_engine():
    """An in-memory aiosqlite database with the users table (one connection: StaticPool)."""
    engine = create_async_engine("sqlite+aiosqlite://")
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
    return engine


def test_an_async_sessionmaker_is_tracked_through_the_sessions_it_wraps():
    async def scenario() -> tuple[SessionTracker, async_sessionmaker]:
        engine = await _async_engine()
        factory, other = async_sessionmaker(engine), async_sessionmaker(engine)
        tracker = SessionTracker(factory)
        assert SessionTracker(factory) is not None  # a re-run cell: no second private class
        mary = User(name="Mary")
        async with factory() as session:
            session.add(mary)
            await session.commit()
            assert await session.get(User, 1) is mary
        async with other() as session:  # a factory nobody follows
            session.add(User(name="Ann"))
            await session.commit()
        await engine.dispose()
        return tracker, factory

    tracker, factory = asyncio.run(scenario())
    assert [step.call for step in tracker.history] == ["add()", "commit()", "get()", "close()"]
    assert steps_with(tracker, "pending_to_persistent") == [("commit()", "User(id=1, name='Mary')")]
    assert tracker.history[1].sql == ("INSERT INTO users (name) VALUES (?)",)
    private = factory.kw["sync_session_class"]
    assert private.__bases__ == (Session,)
    tracker.detach()
    assert methods_of(private) == {}


def test_an_async_session_and_an_async_scoped_session_in_two_tasks():
    async def scenario() -> SessionTracker:
        engine = await _async_engine()
        single = AsyncSession(engine)
        registry = async_scoped_session(async_sessionmaker(engine), scopefunc=asyncio.current_task)
        tracker = SessionTracker(single, registry)
        users = [User(name=name) for name in ("Mary", "Ann", "Bob")]  # held: labelled when flushed
        single.add(users[0])
        await single.commit()
        await single.close()

        async def task(user: User) -> None:
            registry.add(user)
            await asyncio.sleep(0)  # the other task runs here
            await registry.commit()
            await registry.remove()

        await asyncio.gather(task(users[1]), task(users[2]))
        await engine.dispose()
        return tracker

    tracker = asyncio.run(scenario())
    steps = [(step.call, step.session_label, step.transition_count) for step in tracker.history]
    # the two tasks' calls interleave in one thread; each call is still a step of its own
    assert steps == [
        ("add()", "session 1", 1), ("commit()", "session 1", 1), ("close()", "session 1", 1),
        ("add()", "session 2", 1), ("add()", "session 3", 1),
        ("commit()", "session 2", 1), ("close()", "session 2", 1),
        ("commit()", "session 3", 1), ("close()", "session 3", 1),
    ]
    assert steps_with(tracker, "pending_to_persistent") == [
        ("commit()", "User(id=1, name='Mary')"), ("commit()", "User(id=2, name='Ann')"),
        ("commit()", "User(id=3, name='Bob')"),
    ]
    assert [step.sql for step in tracker.history if step.call == "commit()"] == [
        ("INSERT INTO users (name) VALUES (?)",)
    ] * 3


def test_an_object_marked_for_deletion_stays_marked_through_a_query_without_autoflush(engine):
    with Session(engine, autoflush=False) as session:
        tracker = SessionTracker(session)
        john = session.get(User, 1)
        session.delete(john)
        session.scalars(select(User)).all()  # no autoflush: John is still only marked
        assert list(session.deleted) == [john]
        assert tracker.current_session(session).deleted == ("User(id=1, name='John')",)
        assert [step.call for step in tracker.history] == ["get()", "delete()", "scalars()"]


def test_a_result_read_after_another_sessions_call_loads_into_its_own_session(engine):
    """Rows of one session's result, read after another session's call: never that call's."""
    tracker = SessionTracker(first := Session(engine), second := Session(engine))
    result = first.scalars(select(User).where(User.name == "John"))
    second.scalars(select(User).where(User.name == "Nobody")).all()
    john = result.one()  # loaded now, while the second session's step is open
    loads = [(step.call, step.session_label) for step in tracker.history
             if any(t.event == "loaded_as_persistent" for t in step.transitions)]
    assert loads == [("load", "session 1")]
    assert tracker.state_of(john) == "persistent"
    first.close()
    second.close()



def test_a_step_kept_open_does_not_keep_its_session_alive(engine):
    """A session dropped without close() is collected as without a tracker, though its add()
    step is still open: its pending object is transient again, free to join another session."""
    factory = sessionmaker(engine)
    tracker = SessionTracker(factory)
    first, mary = factory(), User(name="Mary")
    first.add(mary)  # the add() step stays open: more add() calls may join it
    first_ref = weakref.ref(first)
    del first
    gc.collect()
    assert first_ref() is None
    assert inspect(mary).transient
    with factory() as second:
        second.add(mary)
        assert tracker.state_of(mary) == "pending"
    steps = [(step.title, step.session_label, tracker.snapshot_at(0, step.index).state)
             for step in tracker.history]
    assert steps == [
        ("add()", "session 1", "pending"),
        ("add()", "session 2", "pending"),
        ("close()", "session 2", "transient"),
    ]



def rename_behind_the_sessions_back(session) -> None:
    """Rename John in the database only (Core: the session's objects are left alone)."""
    session.execute(update(User.__table__).where(User.id == 1).values(name="Johnny"))


SILENT_CHANGES = {  # a call that changes John in memory without a lifecycle event -> its step
    "ORM update": (
        lambda session: session.execute(update(User).where(User.id == 1).values(name="Johnny")),
        "execute()",
    ),
    "populate_existing option": (
        lambda session: session.scalars(
            select(User).execution_options(populate_existing=True)).all(),
        "scalars()",
    ),
    "get(populate_existing=True)": (
        lambda session: session.get(User, 1, populate_existing=True), "get()"
    ),
    "Query.populate_existing()": (
        lambda session: session.query(User).populate_existing().all(), "Query.all()"
    ),
    "merge_all(load=False)": (  # copies onto John without marking him modified
        lambda session: session.merge_all([detached(User(id=1, name="Johnny"))], load=False),
        "merge_all()",
    ),
}


def detached(user: User) -> User:
    make_transient_to_detached(user)
    return user


@pytest.mark.filterwarnings("ignore::sqlalchemy.exc.LegacyAPIWarning")
@pytest.mark.parametrize("change", list(SILENT_CHANGES))
def test_a_call_that_changes_objects_without_an_event_shows_it_in_its_own_step(session, change):
    """An ORM UPDATE synchronizes the objects in the session, populate_existing overwrites them,
    a merge copies onto them: that is the call's doing, not a change made between calls."""
    tracker = SessionTracker(session)
    john = session.get(User, 1)
    rename_behind_the_sessions_back(session)
    call, expected = SILENT_CHANGES[change]
    call(session)
    assert john.name == "Johnny"
    tracker.catch_up()
    steps = [(step.call, [snap.label for snap in step.changes]) for step in tracker.history]
    assert steps == [("get()", [JOHN]), ("execute()", []), (expected, [JOHNNY])]


def test_sql_of_another_connection_is_not_an_earlier_calls(session, engine):
    """A statement sent outside any Session call, on a connection of its own, after add()
    returned: not add()'s SQL (add() sends none), and the run of add() goes on."""
    tracker = SessionTracker(session)
    session.get(User, 1)  # the session's engine is listened to from here on
    session.add(User(name="Mary"))
    with engine.connect() as connection:
        connection.execute(text("SELECT 42"))
    session.add(User(name="Ann"))
    assert [(step.title, step.sql[-1:]) for step in tracker.history] == [
        ("get()", ("SELECT users.id, users.name \nFROM users \nWHERE users.id = ?",)),
        ("add() x2", ()),
    ]
