"""The four widgets driven by real sessions: pinned to their cell or live, the steps inside a
cell, their trait values, their deterministic text and HTML, and the messages they send.

Cells are real: an IPython ``InteractiveShell`` runs them one by one, so its ``pre_run_cell`` and
``post_run_cell`` hooks fire as in a notebook.
"""

from __future__ import annotations

import asyncio
import gc
import re
from html import escape
from textwrap import dedent

import ipywidgets
import pytest
from IPython.core.interactiveshell import InteractiveShell
from sqlalchemy import ForeignKey, String, create_engine, select
from sqlalchemy.ext.asyncio import async_scoped_session, async_sessionmaker, create_async_engine
from sqlalchemy.orm import (
    DeclarativeBase,
    Mapped,
    Session,
    mapped_column,
    relationship,
    sessionmaker,
)
from traitlets import TraitError
from traitlets.config import Config

from session_visualizer import (
    STATES,
    ObjectCard,
    ObjectSnapshot,
    SessionPanel,
    SessionTracker,
    StateDiagram,
    Step,
    Timeline,
    Transition,
    render,
)
from session_visualizer.cells import cell_clock

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(30))

    def __repr__(self) -> str:
        return f"User(id={self.id}, name={self.name!r})"


class Author(Base):
    """A parent whose books follow it everywhere: added, deleted, merged with it."""

    __tablename__ = "authors"
    id: Mapped[int] = mapped_column(primary_key=True)
    books: Mapped[list[Book]] = relationship(back_populates="author",
                                             cascade="all, delete-orphan")

    def __repr__(self) -> str:
        return f"Author(id={self.id})"


class Book(Base):
    __tablename__ = "books"
    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str]
    author_id: Mapped[int] = mapped_column(ForeignKey("authors.id"))
    author: Mapped[Author] = relationship(back_populates="books")

    def __repr__(self) -> str:
        return f"Book(id={self.id}, title={self.title!r})"


@pytest.fixture
def session():
    engine = create_engine("sqlite://")
    Base.metadata.create_all(engine)
    with Session(engine) as session:
        yield session
    engine.dispose()


@pytest.fixture
def sent(monkeypatch) -> list[tuple[ipywidgets.Widget, dict]]:
    """Every state message widgets send to the front end, captured at ``Widget._send``."""
    messages: list[tuple[ipywidgets.Widget, dict]] = []
    original = ipywidgets.Widget._send

    def capture(widget, msg, buffers=None):
        messages.append((widget, msg))
        return original(widget, msg, buffers=buffers)

    monkeypatch.setattr(ipywidgets.Widget, "_send", capture)
    return messages


@pytest.fixture
def shell(tmp_path, monkeypatch):
    """An IPython shell with a sessionmaker ``Session`` and a ``tracker`` on it (cell 1)."""
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path))
    config = Config()
    config.HistoryManager.hist_file = ":memory:"
    shell = InteractiveShell.instance(config=config)
    cell_clock(shell)  # what importing session_visualizer does in a notebook
    shell.push({"User": User, "Base": Base, "create_engine": create_engine,
                "sessionmaker": sessionmaker, "SessionTracker": SessionTracker,
                "ObjectCard": ObjectCard, "SessionPanel": SessionPanel,
                "StateDiagram": StateDiagram, "Timeline": Timeline})
    run(shell, """
        engine = create_engine("sqlite://")
        Base.metadata.create_all(engine)
        Session = sessionmaker(engine)
        tracker = SessionTracker(Session)
    """)
    yield shell
    InteractiveShell.clear_instance()


def run(shell: InteractiveShell, code: str) -> dict:
    """Run one cell (its hooks fire) and return the namespace."""
    result = shell.run_cell(dedent(code))
    result.raise_error()
    return shell.user_ns


def every_widget(tracker: SessionTracker, session: Session, user: User, live: bool) -> list:
    return [ObjectCard(tracker, user, live=live), SessionPanel(tracker, session, live=live),
            StateDiagram(tracker, user, live=live), Timeline(tracker, live=live)]


def controls(view: ipywidgets.Widget) -> list[ipywidgets.Widget]:
    """Every widget inside ``view``, depth first."""
    found = []
    for child in getattr(view, "children", ()):
        found += [child, *controls(child)]
    return found


# ----------------------------------------------------------------------------- pinned and live
def test_a_card_made_in_a_cell_keeps_that_cells_moment_and_a_live_one_follows(shell):
    ns = run(shell, """
        session = Session()
        mary = User(name="Mary")
        session.add(mary)
        card = ObjectCard(tracker, mary)
        live = ObjectCard(tracker, mary, live=True)
        panel = SessionPanel(tracker, session)
    """)
    card, live, panel = ns["card"], ns["live"], ns["panel"]
    pinned_text, pinned_html = card.text, card.static_html()
    assert card.state == live.state == "pending"
    run(shell, "session.commit()")
    assert (card.state, card.text, card.static_html()) == ("pending", pinned_text, pinned_html)
    assert card._repr_mimebundle_()["text/plain"] == pinned_text
    assert (panel.new, panel.in_transaction) == (("User(id=None, name='Mary')",), True)
    assert (live.state, live.identity) == ("persistent", "(User, (1,))")
    assert 'data-live="false" data-pinned="1"' in card._body.value
    assert 'data-live="true"' in live._body.value
    assert "<b>live</b>" in live._body.value and "<b>this cell</b>" in card._body.value
    card.moment = "now"  # the switch: the present, live
    assert (card.state, card._switch.value) == ("persistent", "now")
    run(shell, "session.close()")
    assert card.state == "detached"
    card._switch.value = "cell"  # a click on "this cell"
    assert (card.moment, card.state) == ("cell", "pending")


def test_run_all_gives_each_widget_the_moment_of_its_cell(shell):
    """Cells run one after another, as Run All runs them: each widget keeps its own cell's state,
    and its static picture (stored in the lesson) shows the same."""
    ns = run(shell, "session = Session(); david = User(name='David')")
    run(shell, "first = ObjectCard(tracker, david)")
    run(shell, "session.add(david); second = StateDiagram(tracker, david)")
    run(shell, "session.commit(); third = ObjectCard(tracker, david)")
    run(shell, "session.close(); fourth = StateDiagram(tracker, david)")
    run(shell, "whole = Timeline(tracker, david)")
    views = [ns[name] for name in ("first", "second", "third", "fourth")]
    assert [view.state for view in views] == ["transient", "pending", "persistent", "detached"]
    for view in views:
        bundle = view._repr_mimebundle_()
        assert f'data-state="{view.state}"' in bundle["text/html"]
        assert f"[{view.state}]" in bundle["text/plain"]
    assert (ns["whole"].total, ns["whole"].call) == (3, "close()")


def test_a_widget_displayed_by_its_cell_shows_the_end_of_that_cell(shell):
    ns = run(shell, """
        session = Session()
        ann = User(name="Ann")
        card = ObjectCard(tracker, ann)
        session.add(ann)
        session.flush()
        card
    """)
    assert ns["card"].state == "persistent"  # made before the flush, pinned after it
    assert ns["_"] is ns["card"]  # the displayhook showed it
    run(shell, "session.rollback()")
    assert ns["card"].state == "persistent"


def test_a_change_between_session_calls_at_the_end_of_a_cell_is_shown(shell):
    ns = run(shell, """
        session = Session()
        mary = User(name="Mary")
        session.add(mary)
        session.commit()
        mary.name
    """)
    ns = run(shell, "card = ObjectCard(tracker, mary); mary.name = 'Maria'")
    assert (ns["card"].modified, ns["card"].label) == (("name",), "User(id=1, name='Maria')")
    assert ns["tracker"].history[-1].call == "between calls"


def test_a_re_run_cell_pins_a_new_widget_and_leaves_the_old_one(shell):
    cell = "extras.append(User(name='Extra')); session.add_all(extras); session.flush()\n" \
           "panel = SessionPanel(tracker, session)"
    run(shell, "session = Session(); extras = []")
    first = run(shell, cell)["panel"]
    second = run(shell, cell)["panel"]
    assert (len(first.identity_map), len(second.identity_map)) == (1, 2)


def test_a_timeline_is_pinned_to_its_cell_and_scoped_to_its_object(shell):
    ns = run(shell, """
        session = Session()
        john, mary = User(name="John"), User(name="Mary")
        session.add_all([john, mary])
        session.commit()
        mary.name = "Maria"
        session.flush()
        johns = Timeline(tracker, john)
        every = Timeline(tracker)
        tail = Timeline(tracker, steps=range(1, 10))
    """)
    johns, every, tail = ns["johns"], ns["every"], ns["tail"]
    assert [step.title for step in ns["tracker"].history] == [
        "add_all()", "commit()", "between calls", "flush()"  # Mary renamed, then flushed
    ]
    assert (johns.total, every.total, tail.total) == (2, 4, 3)
    run(shell, "session.delete(john); session.commit()")
    assert (johns.total, every.total, johns.call) == (2, 4, "commit()")
    johns.moment = "now"
    assert (johns.total, johns.step) == (4, 4)
    assert johns.text.startswith("Timeline step 4 of 4: commit() in session 1, thread MainThread")
    assert escape("the steps of User(id=1, name='John')") in johns._body.value
    johns.show(1)
    assert 'data-session="session 1" data-thread="MainThread"' in johns._body.value
    assert "John" in johns.text and "Mary" in johns.text  # add_all() added both


def test_outside_ipython_a_widget_is_pinned_when_made_until_pin(session):
    tracker = SessionTracker(session)
    mary = User(name="Mary")
    card = ObjectCard(tracker, mary)
    session.add(mary)
    session.commit()
    assert card.state == "transient"
    card.pin()
    assert (card.state, card.pinned) == ("persistent", 1)
    assert card.total == 2  # the steps since its previous pin: add(), commit()
    card.show(1)
    assert card.state == "pending"


def test_an_object_the_tracker_saw_before_any_step_shows_its_state(session):
    mary = User(name="Mary")
    session.add(mary)
    session.commit()
    assert mary.name == "Mary"  # loaded again: persistent, nothing expired
    tracker = SessionTracker(session)
    card = ObjectCard(tracker, mary)
    assert (card.pinned, card.state, card.label) == (-1, "persistent", "User(id=1, name='Mary')")


# ----------------------------------------------------------------------------- steps in a cell
def test_every_step_of_a_with_block_can_be_shown_with_the_label_it_had(shell):
    ns = run(shell, """
        john = User(name="John")
        with Session() as session:
            session.add(john)
            session.flush()
            john.name = "Jonathan"
            session.commit()
        card = ObjectCard(tracker, john)
        diagram = StateDiagram(tracker, john)
        panel = SessionPanel(tracker, session)
    """)
    card, diagram, panel = ns["card"], ns["diagram"], ns["panel"]
    seen = []
    for step in range(1, card.total + 1):
        card.step = diagram.step = step
        seen.append((card.label, card.state, card.modified, card.expired, diagram.last_call))
    assert seen == [
        ("User(id=None, name='John')", "pending", ("name",), (), "add()"),
        ("User(id=1, name='John')", "persistent", (), (), "flush()"),
        ("User(id=1, name='Jonathan')", "persistent", ("name",), (), "flush()"),  # between calls
        ("User(id=1, name='Jonathan')", "persistent", (), ("id", "name"), "flush()"),
        ("User(id=1, name='Jonathan')", "detached", (), ("id", "name"), "close()"),
    ]
    assert card.step == card.total == 5
    assert panel.total == 5
    panel.show(2)
    assert (panel.identity_map, panel.in_transaction) == (("User(id=1, name='John')",), True)
    assert panel.static_html().count('data-transaction="none"') == 1  # the pinned moment
    assert "sv-moment" in card._body.value and 'data-shown="2"' not in card._body.value


def test_a_cell_with_one_step_shows_no_stepper(shell):
    ns = run(shell, "session = Session(); mary = User(name='Mary'); session.add(mary)")
    ns = run(shell, "session.commit(); card = ObjectCard(tracker, mary)")
    assert (ns["card"].total, ns["card"]._stepper) == (1, None)
    assert ns["card"].children == (ns["card"]._switch, ns["card"]._body)
    ns = run(shell, "session.delete(mary); session.flush(); again = ObjectCard(tracker, mary)")
    assert ns["again"].total == 2
    assert ns["again"]._stepper in ns["again"].children
    assert ns["again"]._stepper.layout.display is None


# ----------------------------------------------------------------------------- gone
def test_a_collected_object_is_shown_as_gone_in_words(shell):
    ns = run(shell, """
        session = Session()
        john = User(name="John")
        session.add(john)
        session.commit()
        session.close()
        card = ObjectCard(tracker, john)
        live = ObjectCard(tracker, john, live=True)
        diagram = StateDiagram(tracker, john, live=True)
    """)
    run(shell, "john = User(name='Jonathan'); import gc; gc.collect()")
    card, live, diagram = ns["card"], ns["live"], ns["diagram"]
    assert card.state == "detached"  # its cell's moment
    live.refresh()
    diagram.refresh()
    assert live.state == diagram.state == "gone"
    assert live.text == "ObjectCard User(id=1, name='John'): gone (garbage-collected)"
    assert "[gone] (garbage-collected)" in diagram.text
    html = live._body.value
    assert re.findall(r'class="sv-light sv-lit" data-light="(\w+)"', html) == ["gone"]
    assert "<b>gone</b>: garbage-collected" in html
    card.moment = "now"
    assert card.state == "gone"


def test_a_collected_object_outside_ipython(session):
    tracker = SessionTracker(session)
    card = ObjectCard(tracker, User(name="Mary"), live=True)
    gc.collect()
    card.refresh()
    assert card.state == "gone"


# ----------------------------------------------------------------------------- traits
def test_mirrors_are_read_only_and_writable_traits_are_validated(session):
    tracker = SessionTracker(session)
    mary = User(name="Mary")
    card = ObjectCard(tracker, mary)
    timeline = Timeline(tracker, live=True)
    session.add(mary)
    session.commit()
    session.close()
    for name, value in [("state", "pending"), ("label", "x"), ("text", "x"), ("total", 9)]:
        with pytest.raises(TraitError, match="read-only"):
            setattr(card, name, value)
    with pytest.raises(TraitError, match=r"Timeline.step must be from 1 to 3 .* not 99"):
        timeline.step = 99
    with pytest.raises(TraitError, match=r"not 0"):
        timeline.step = 0
    with pytest.raises(TraitError):
        card.moment = "later"
    timeline.step = 2
    assert (timeline.call, timeline._stepper.slider.value) == ("commit()", 2)
    assert card.state == "transient"


def test_a_render_sends_at_most_one_message_per_widget(session, sent):
    tracker = SessionTracker(session)
    timeline = Timeline(tracker, live=True)
    for number in range(3):
        session.add(User(name=f"user {number}"))
        session.flush()
    sent.clear()
    timeline.show(2)
    senders = [id(widget) for widget, _msg in sent]
    assert senders and len(senders) == len(set(senders))
    sent.clear()
    timeline.moment = "cell"  # pinned when made: before any step
    senders = [id(widget) for widget, _msg in sent]
    assert senders and len(senders) == len(set(senders))
    assert (timeline.total, timeline.text) == (0, "Timeline: no step recorded yet")


# ----------------------------------------------------------------------------- accessibility
def relative_luminance(color: str) -> float:
    channels = [int(color[i:i + 2], 16) / 255 for i in (1, 3, 5)]
    linear = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def contrast(first: str, second: str) -> float:
    light, dark = sorted(map(relative_luminance, (first, second)), reverse=True)
    return (light + 0.05) / (dark + 0.05)


def test_the_contrast_function_matches_wcag():
    assert contrast("#ffffff", "#000000") == pytest.approx(21)
    assert contrast("#ffffff", "#e8a317") == pytest.approx(2.17, abs=0.01)  # the old pending


def test_every_text_and_background_colour_pair_meets_wcag_aa():
    """Every pair the pictures use: lights lit and unlit, diagram nodes current or not, arrow
    labels and the caption on the diagram's white, transitions' state names on white."""
    pairs = set()
    last = (Transition(0, "User(id=1)", "pending_to_persistent"), "commit()")
    for state in (*STATES, "gone"):
        snapshot = ObjectSnapshot(0, "User(id=1)", state, "User", (1,))
        pairs |= set(re.findall(r"background:(#\w{6});color:(#\w{6})",
                                render.object_card_html(snapshot)))
        svg = render.state_diagram_svg(snapshot, last)
        pairs |= set(re.findall(r'<rect [^>]*fill="(#\w{6})"[^>]*/><text [^>]*fill="(#\w{6})"',
                                svg))
        labels = re.findall(r'<line [^>]*/><text [^>]*fill="(#\w{6})"', svg)
        caption = re.findall(r'<text x="10" y="362" [^>]*fill="(#\w{6})"', svg)
        background = r'^<svg [^>]*><defs>.*</defs><rect width="660" height="370" fill="#ffffff"/>'
        assert re.search(background, svg)  # the white those are on
        pairs |= {("#ffffff", color) for color in labels + caption}
    step = Step(0, "commit()", ((0,), ("User(id=1)",), ("pending_to_persistent",)), (), (), (),
                False)
    timeline = render.timeline_html(step, 1, 1, None, "every step")
    pairs |= {("#ffffff", color) for color in re.findall(r'<span style="color:(#\w{6})"', timeline)}
    backgrounds = {background for background, _text in pairs}
    assert set(render.STATE_COLORS.values()) <= backgrounds  # every state was lit once
    assert {(render.UNLIT, render.MUTED), ("#ffffff", render.HIGHLIGHT)} <= pairs
    assert {(render.WHITE, render.STATE_COLORS[state]) for state in STATES} <= pairs
    failing = {pair: round(contrast(*pair), 2) for pair in pairs if contrast(*pair) < 4.5}
    assert not failing


def test_the_controls_are_focusable_widgets_with_names_and_no_play(shell):
    ns = run(shell, """
        session = Session()
        mary = User(name="Mary")
        session.add(mary)
        session.flush()
        card = ObjectCard(tracker, mary)
        timeline = Timeline(tracker)
    """)
    for view in (ns["card"], ns["timeline"]):
        inside = controls(view)
        assert not any(isinstance(widget, ipywidgets.Play) for widget in inside)
        interactive = [w for w in inside if isinstance(w, ipywidgets.DOMWidget)
                       and not isinstance(w, ipywidgets.Box | ipywidgets.HTML)]
        kinds = sorted(type(widget).__name__ for widget in interactive)
        assert kinds == ["Button", "Button", "IntSlider", "ToggleButtons"]
        assert all(not widget.disabled for widget in interactive)
        assert sorted(w.description for w in interactive if isinstance(w, ipywidgets.Button)) \
            == ["back", "forward"]
        assert view._switch.options == (("this cell", "cell"), ("now", "now"))
    timeline = ns["timeline"]
    back, slider, forward = timeline._stepper.children
    assert (timeline.step, timeline.total) == (2, 2)
    back.click()
    assert (timeline.step, slider.value, timeline.call) == (1, 1, "add()")
    back.click()
    assert timeline.step == 1  # no step 0
    slider.value = 2  # the keyboard's arrow keys move the slider
    assert timeline.call == "flush()"
    forward.click()
    assert timeline.step == 2


def edge_labels(svg: str) -> dict[str, tuple[bool, str]]:
    """Each arrow of a state diagram: whether it is lit, and its label."""
    return {
        edge: (lit == " sv-last", label)
        for lit, edge, label in re.findall(
            r'<g class="sv-edge( sv-last)?" data-edge="(\w+)">.*?<text [^>]*>([^<]*)</text></g>',
            svg,
        )
    }


@pytest.mark.parametrize(("code", "event", "call"), [
    # the usual cause of deleted -> detached is the commit; here it is an expunge()
    ("session.delete(mary); session.flush(); session.expunge(mary)", "deleted_to_detached",
     "expunge()"),
    ("session.reset()", "persistent_to_detached", "reset()"),
])
def test_the_lit_arrow_is_labelled_with_the_call_that_caused_it(session, code, event, call):
    tracker = SessionTracker(session)
    mary = User(name="Mary")
    session.add(mary)
    session.commit()
    exec(code, {"session": session, "mary": mary})
    diagram = StateDiagram(tracker, mary)
    assert (diagram.last_event, diagram.last_call) == (event, call)
    labels = edge_labels(diagram._body.value)
    assert labels[event] == (True, escape(call))
    unlit = {edge: label for edge, (lit, label) in labels.items() if not lit}
    assert unlit == {edge: escape(label) for edge, label in render.EVENT_CALLS.items()
                     if edge != event}  # the others keep their usual cause


# ----------------------------------------------------------------------------- live views
def test_live_views_follow_an_object_through_its_states(session):
    tracker = SessionTracker(session)
    mary = User(name="Mary")
    card = ObjectCard(tracker, mary, live=True)
    panel = SessionPanel(tracker, session, live=True)
    diagram = StateDiagram(tracker, mary, live=True)
    assert (card.state, card.identity, card.modified) == ("transient", None, ("name",))
    session.add(mary)
    assert (card.state, panel.new) == ("pending", ("User(id=None, name='Mary')",))
    session.commit()
    assert (card.state, card.identity, card.expired) == ("persistent", "(User, (1,))",
                                                        ("id", "name"))
    assert (diagram.state, diagram.last_event, diagram.last_call) == (
        "persistent", "pending_to_persistent", "commit()"
    )
    svg = diagram._body.value
    assert re.findall(r'class="sv-node sv-current" data-node="(\w+)"', svg) == ["persistent"]
    assert re.findall(r'class="sv-edge sv-last" data-edge="(\w+)"', svg) == [
        "pending_to_persistent"
    ]
    session.get(User, 1)
    mary.name = "Maria"
    session.flush()
    session.delete(mary)
    session.get(User, 1)
    assert card.marked_deleted and panel.deleted == ("User(id=1, name='Maria')",)
    session.commit()
    assert (card.state, card.marked_deleted, panel.identity_map) == ("detached", False, ())
    assert card.text == (
        "ObjectCard User(id=1, name='Maria'): transient . pending . persistent . deleted"
        " . [detached] | key (User, (1,))"
    )


def test_a_live_timeline_follows_new_steps_unless_an_old_one_is_shown(session):
    tracker = SessionTracker(session)
    timeline = Timeline(tracker, live=True)
    assert (timeline.step, timeline.total) == (0, 0)
    mary = User(name="Mary")
    session.add(mary)
    session.commit()
    session.close()
    assert (timeline.step, timeline.total, timeline.call) == (3, 3, "close()")
    timeline.show(2)
    assert timeline.text == (
        "Timeline step 2 of 3: commit() in session 1, thread MainThread | begin, flush, commit\n"
        "  User(id=1, name='Mary'): pending -> persistent\n"
        "  SQL: INSERT INTO users (name) VALUES (?)"
    )
    session.add(mary)
    mary.name = "Maria"
    session.flush()
    assert (timeline.step, timeline.total) == (2, 6)  # add(), the rename between calls, flush()


# ----------------------------------------------------------------------------- cascades
def test_a_cascade_shows_each_child_and_lists_them_in_tracker_order(session):
    """A parent and its children change in one step. Each child has its own card, and a step's
    transitions are listed in the order the tracker first saw the objects, within each run of
    one event: SQLAlchemy fires a flush's or a commit's events over a set of objects, in an
    order that changes with their memory addresses."""
    tracker = SessionTracker(session)
    books = [Book(title=f"book {number}") for number in range(12)]
    author = Author(books=books)
    session.add(author)  # the save-update cascade adds the books too
    assert [ObjectCard(tracker, book).state for book in books] == ["pending"] * 12
    session.commit()
    assert [ObjectCard(tracker, book).identity for book in books] == [
        f"(Book, ({number},))" for number in range(1, 13)
    ]
    assert Timeline(tracker).text.splitlines()[1:10] == [
        "  Author(id=1): pending -> persistent",
        *(f"  Book(id={number + 1}, title='book {number}'): pending -> persistent"
          for number in range(7)),
        "  +5 more",
    ]
    session.delete(author)  # the delete cascade: the books go with it
    session.commit()
    transitions = tracker.history[-1].transitions
    keys = [tracker.watch(obj).key for obj in (author, *books)]
    assert [(t.key, t.event) for t in transitions] == [
        *((key, "persistent_to_deleted") for key in keys),
        *((key, "deleted_to_detached") for key in keys),
    ]
    assert transitions[:1] == tracker.history[-1].first_transitions(1)


def test_a_cascade_outside_any_call_is_a_step_between_calls_not_the_querys(session):
    """A book appended to a loaded author's collection joins the session by the cascade,
    after the query returned: a step of its own, with the author as the query left him."""
    session.add(Author(books=[Book(title="first")]))
    session.commit()
    tracker = SessionTracker(session)
    author = session.scalars(select(Author)).one()
    books = author.books  # loads the collection: a call (load on access)
    spare = Book(title="spare")
    books.append(spare)  # the cascade makes it pending: no call
    card = ObjectCard(tracker, spare)
    assert [step.call for step in tracker.history] == [
        "scalars()", "load on access", "between calls"
    ]
    cascade = tracker.history[-1]
    assert [(t.label, t.event) for t in cascade.transitions] == [
        ("Book(id=None, title='spare')", "transient_to_pending")
    ]
    assert card.state == "pending"
    assert tracker.snapshot_at(tracker.watch(author).key, 0).modified == ()


def test_a_rollback_lists_the_objects_it_makes_transient_in_tracker_order(session):
    """A rollback makes flushed and pending objects transient in one loop over a set: the two
    events interleave in an order that changes from run to run, and are listed in tracker order."""
    tracker = SessionTracker(session)
    users = [User(name=name) for name in "abcdefghij"]
    session.add_all(users[:5])
    session.flush()
    session.add_all(users[5:])
    session.rollback()
    assert Timeline(tracker).text.splitlines()[1:] == [
        *(f"  User(id={number}, name={name!r}): persistent -> transient"
          for number, name in enumerate("abcde", start=1)),
        *(f"  User(id=None, name={name!r}): pending -> transient" for name in "fgh"),
        "  +2 more",
    ]


def test_a_panel_of_two_classes_keeps_each_long_label_inside_its_box(session):
    """Labels of another class can hold a token wider than a box: each box wraps it anywhere."""
    tracker = SessionTracker(session)
    session.add(Author(books=[Book(title="a-title-far-wider-than-any-of-the-four-boxes")]))
    html = SessionPanel(tracker, session).static_html()
    boxes = re.findall(r'<div class="sv-group" data-group="(\w+)"[^>]*style="([^"]*)"', html)
    assert [name for name, _style in boxes] == ["new", "dirty", "deleted", "identity_map"]
    assert all("overflow-wrap:anywhere" in style for _name, style in boxes)
    assert "Book(id=None, title=&#x27;a-title-far-wider-than-any-of-the-four-boxes&#x27;)" in html


def test_a_panel_is_given_an_async_session_or_its_registry():
    """An AsyncSession (or an async_scoped_session) is shown through the Session it wraps."""
    async def scenario() -> list[tuple[str, ...]]:
        engine = create_async_engine("sqlite+aiosqlite://")
        async with engine.begin() as conn:
            await conn.run_sync(Base.metadata.create_all)
        registry = async_scoped_session(async_sessionmaker(engine), scopefunc=asyncio.current_task)
        tracker = SessionTracker(registry)
        registry.add(User(name="Mary"))
        panels = [SessionPanel(tracker, registry), SessionPanel(tracker, registry())]
        await registry.remove()
        await engine.dispose()
        return [panel.new for panel in panels]

    assert asyncio.run(scenario()) == [("User(id=None, name='Mary')",)] * 2


# ----------------------------------------------------------------------------- static pictures
def test_widgets_carry_their_dom_classes_and_data_hooks(session):
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
        assert bundle["text/html"].startswith(
            f'<div class="{css_class}"><div class="sv-moment" data-live="false" data-pinned="1"'
        )
        assert bundle["text/plain"] == view.text
        assert WIDGET_VIEW in bundle
    assert 'data-state="pending"' in views["sv-object-card"].static_html()
    assert 'data-state="pending"' in views["sv-state-diagram"].static_html()
    static = views["sv-timeline"].static_html()
    assert 'data-step="1" data-call="add()"' in static
    assert re.findall(r'<li class="sv-listed-step[^"]*">([^<]+)</li>', static) == [
        "add() (session 1, thread MainThread)"
    ]


def run_story() -> list[dict]:
    """One short story in a fresh database, its four widgets' static representations."""
    engine = create_engine("sqlite://")
    Base.metadata.create_all(engine)
    with Session(engine) as session:
        tracker = SessionTracker(session)
        mary = User(name="Mary")
        session.add(mary)
        session.commit()
        session.scalars(select(User)).all()
        views = every_widget(tracker, session, mary, live=False)
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


# ----------------------------------------------------------------------------- message counts
def bulk_story(count: int) -> None:
    engine = create_engine("sqlite://")
    Base.metadata.create_all(engine)
    with Session(engine) as session:
        tracker = SessionTracker(session)
        users = [User(name=f"user {number}") for number in range(count)]
        views = every_widget(tracker, session, users[0], live=True)
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
        views = every_widget(tracker, session, users[0], live=True)
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


def test_a_panel_does_not_keep_its_session_alive(shell):
    """A session dropped without close() is collected with a panel on it, as without one: its
    pending object is transient again and can be added to another session."""
    ns = run(shell, """
        import gc
        from sqlalchemy import inspect
        first = Session()
        mary = User(name="Mary")
        first.add(mary)
        panel = SessionPanel(tracker, first)
    """)
    run(shell, """
        first = Session()  # the first session is dropped, never closed
        gc.collect()
        state = "pending" if inspect(mary).pending else "transient"
        first.add(mary)
    """)
    assert ns["state"] == "transient"
    assert ns["panel"].new == ("User(id=None, name='Mary')",)
