"""The four widgets driven by real sessions: their trait values, their deterministic text and
HTML representations, and the number of messages they send."""

from __future__ import annotations

import asyncio
import gc
import re

import ipywidgets
import pytest
from sqlalchemy import String, create_engine, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from session_visualizer import ObjectCard, SessionPanel, SessionTracker, StateDiagram, Timeline

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(30))

    def __repr__(self) -> str:
        return f"User(id={self.id}, name={self.name!r})"


@pytest.fixture
def session():
    engine = create_engine("sqlite://")
    Base.metadata.create_all(engine)
    with Session(engine) as session:
        yield session
    engine.dispose()


@pytest.fixture
def sent(monkeypatch) -> list[dict]:
    """Every state message widgets send to the front end, captured at ``Widget._send``."""
    messages: list[dict] = []
    original = ipywidgets.Widget._send

    def capture(widget, msg, buffers=None):
        messages.append(msg)
        return original(widget, msg, buffers=buffers)

    monkeypatch.setattr(ipywidgets.Widget, "_send", capture)
    return messages


def every_widget(tracker: SessionTracker, session: Session, user: User) -> list:
    return [ObjectCard(tracker, user), SessionPanel(tracker, session),
            StateDiagram(tracker, user), Timeline(tracker)]


def test_object_card_follows_an_object_through_its_states(session):
    tracker = SessionTracker(session)
    mary = User(name="Mary")
    card = ObjectCard(tracker, mary)
    assert (card.state, card.identity, card.modified) == ("transient", None, ("name",))
    session.add(mary)
    assert card.state == "pending"
    session.commit()
    assert (card.state, card.identity, card.expired) == ("persistent", "(User, (1,))",
                                                        ("id", "name"))
    assert card.label == "User(id=1, name='Mary')"
    assert mary.name == "Mary"  # the refresh runs inside execute(): a step of its own
    session.get(User, 1)
    assert card.expired == ()
    mary.name = "Maria"
    session.flush()
    session.delete(mary)
    assert card.marked_deleted
    session.commit()
    assert (card.state, card.marked_deleted) == ("detached", False)
    assert card.text == (
        "ObjectCard User(id=1, name='Maria'): transient . pending . persistent . deleted"
        " . [detached] | key (User, (1,))"
    )


def test_session_panel_lists_the_collections_and_the_transaction(session):
    tracker = SessionTracker(session)
    panel = SessionPanel(tracker, session)
    assert (panel.new, panel.in_transaction) == ((), False)
    john, mary = User(name="John"), User(name="Mary")
    session.add_all([john, mary])
    assert panel.new == ("User(id=None, name='John')", "User(id=None, name='Mary')")
    assert panel.in_transaction
    session.flush()
    john.name = "Johnny"
    session.delete(mary)
    session.get(User, 2)  # any call makes a step; the panel reads it
    assert panel.new == ()
    assert panel.dirty == ("User(id=1, name='Johnny')",)
    assert panel.deleted == ("User(id=2, name='Mary')",)
    assert panel.identity_map == ("User(id=1, name='Johnny')", "User(id=2, name='Mary')")
    session.commit()
    assert (panel.identity_map, panel.in_transaction) == (("User(id=1, name='Johnny')",), False)
    assert panel.text == (
        "SessionPanel: no transaction | new: - | dirty: - | deleted: - "
        "| identity map: User(id=1, name='Johnny')"
    )


def test_state_diagram_lights_the_state_and_the_last_transition(session):
    tracker = SessionTracker(session)
    mary = User(name="Mary")
    diagram = StateDiagram(tracker, mary)
    assert (diagram.state, diagram.last_event) == ("transient", None)
    session.add(mary)
    session.commit()
    assert (diagram.state, diagram.last_event, diagram.last_call) == (
        "persistent", "pending_to_persistent", "commit()"
    )
    svg = diagram.static_html()
    assert re.findall(r'class="sv-node sv-current" data-node="(\w+)"', svg) == ["persistent"]
    assert re.findall(r'class="sv-edge sv-last" data-edge="(\w+)"', svg) == [
        "pending_to_persistent"
    ]
    assert svg.count('class="sv-edge') == 10
    assert 'data-state="persistent"' in svg
    assert diagram.text == (
        "StateDiagram User(id=1, name='Mary'): [persistent]"
        " | last pending -> persistent in commit()"
    )


def test_timeline_follows_new_steps_and_replays_old_ones(session):
    tracker = SessionTracker(session)
    timeline = Timeline(tracker)
    assert (timeline.step, timeline.total) == (0, 0)
    assert timeline.text == "Timeline: no step recorded yet"
    mary = User(name="Mary")
    session.add(mary)
    session.commit()
    session.close()
    assert (timeline.step, timeline.total, timeline.call) == (3, 3, "close()")
    timeline.show(2)
    assert timeline.call == "commit()"
    assert timeline.text == (
        "Timeline step 2 of 3: commit() | begin, flush, commit\n"
        "  User(id=1, name='Mary'): pending -> persistent\n"
        "  SQL: INSERT INTO users (name) VALUES (?)"
    )
    static = timeline.static_html()
    assert 'data-step="2" data-call="commit()"' in static
    assert re.findall(r'<li class="sv-listed-step[^"]*">([^<]+)</li>', static) == [
        "add()", "commit()", "close()"
    ]
    controls = timeline.children[0]
    back, play, forward, slider = controls.children
    assert play.value == slider.value == 2  # the play button starts from the step shown
    back.click()
    assert (timeline.step, slider.value, play.value) == (1, 1, 1)
    back.click()
    assert timeline.step == 1  # no step 0
    forward.click()
    forward.click()
    forward.click()
    assert timeline.step == 3
    play.value = 2  # what pressing play does
    assert (timeline.call, slider.value) == ("commit()", 2)
    assert (slider.max, play.max) == (3, 3)
    session.add(mary)  # while an old step is shown, new steps do not move the slider
    mary.name = "Maria"
    session.flush()
    assert (timeline.step, timeline.total) == (2, 5)


def test_widgets_carry_their_dom_classes_and_data_state(session):
    tracker = SessionTracker(session)
    mary = User(name="Mary")
    session.add(mary)
    views = {
        "sv-object-card": ObjectCard(tracker, mary),
        "sv-session-panel": SessionPanel(tracker, session),
        "sv-state-diagram": StateDiagram(tracker, mary),
        "sv-timeline": Timeline(tracker),
    }
    for css_class, view in views.items():
        assert css_class in view._dom_classes
        bundle = view._repr_mimebundle_()
        assert bundle["text/html"].startswith(f'<div class="{css_class}">')
        assert bundle["text/plain"] == view.text
        assert WIDGET_VIEW in bundle
    assert 'data-state="pending"' in views["sv-object-card"].static_html()
    assert 'data-state="pending"' in views["sv-state-diagram"].static_html()


def run_story() -> list[dict]:
    """One short story in a fresh database, its four widgets' static representations."""
    engine = create_engine("sqlite://")
    Base.metadata.create_all(engine)
    with Session(engine) as session:
        tracker = SessionTracker(session)
        mary = User(name="Mary")
        views = every_widget(tracker, session, mary)
        session.add(mary)
        session.commit()
        session.scalars(select(User)).all()
        bundles = [view._repr_mimebundle_() for view in views]
    engine.dispose()
    for view in views:
        view.close()
    return [{mime: bundle[mime] for mime in ("text/plain", "text/html")} for bundle in bundles]


def test_static_representations_are_deterministic():
    first, second = run_story(), run_story()
    assert first == second
    for bundle in first:
        for text in bundle.values():
            assert not re.search(r"0x[0-9a-f]{6,}|[0-9a-f]{32}", text)  # no address, no model id


def test_a_collected_object_is_shown_as_gone(session):
    tracker = SessionTracker(session)
    card = ObjectCard(tracker, User(name="Mary"))
    gc.collect()
    card.refresh()
    assert card.state == "gone"
    assert card.text == "ObjectCard User(id=None, name='Mary'): gone (garbage-collected)"


def bulk_story(count: int) -> None:
    engine = create_engine("sqlite://")
    Base.metadata.create_all(engine)
    with Session(engine) as session:
        tracker = SessionTracker(session)
        users = [User(name=f"user {number}") for number in range(count)]
        views = every_widget(tracker, session, users[0])
        session.add_all(users)
        session.commit()
        session.scalars(select(User)).all()
    for view in views:
        view.close()
    engine.dispose()


def test_messages_do_not_grow_with_the_number_of_objects(sent):
    bulk_story(10)
    few = len(sent)
    sent.clear()
    bulk_story(2_000)
    assert few > 0
    assert len(sent) == few


async def loop_story(count: int) -> None:
    """Like a notebook cell: one add() per object inside the kernel's running event loop."""
    engine = create_engine("sqlite://")
    Base.metadata.create_all(engine)
    with Session(engine) as session:
        tracker = SessionTracker(session)
        users = [User(name=f"user {number}") for number in range(count)]
        views = every_widget(tracker, session, users[0])
        for user in users:
            session.add(user)
            session.flush()
        session.commit()
    await asyncio.sleep(0)  # the loop runs the widgets' refresh, once each
    assert views[0].state == "detached"
    assert views[3].total == 2 * count + 2
    for view in views:
        view.close()
    engine.dispose()


def test_in_an_event_loop_a_cell_costs_one_refresh_per_widget(sent):
    asyncio.run(loop_story(5))
    few = len(sent)
    sent.clear()
    asyncio.run(loop_story(300))
    assert len(sent) == few
