"""ipywidgets views of a SessionTracker: object card, session panel, state diagram, timeline.

A view shows the moment of the cell that made it: it is *pinned* to the tracker's history at the
end of that cell (see ``session_visualizer.cells``), so what a student sees under a cell is what
the prose beside it describes, however the lesson is run. A "this cell / now" switch shows the
present instead, following every new step (``live=True`` starts there). A pinned view steps
through the steps of its cell (back, a slider, forward), each as it was at that step. Outside
IPython there are no cells: a view is pinned when made, and ``pin()`` moves the pin to now.

Each view is a stock ``VBox`` of stock widgets (ToggleButtons, Button, IntSlider, HTML), so it
renders with ipywidgets' own JavaScript and works from the keyboard. Its traits are its state:
mirrors of what it shows are read-only and set in one place (``_render``); the writable ones
(``moment``, ``step``) are validated and observed. Updates are batched with ``hold_sync``, and a
live view inside a running event loop (a Jupyter kernel runs each cell inside one) refreshes once
after the cell, however many steps the cell made. The HTML comes from ``session_visualizer.render``,
which also gives the static ``text/html`` and the deterministic ``text/plain`` of the pinned moment.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import ipywidgets as widgets
from sqlalchemy.orm import Session, scoped_session
from traitlets import Bool, Enum, Int, TraitError, Tuple, Unicode, observe, validate

from session_visualizer import render
from session_visualizer.cells import cell_clock
from session_visualizer.snapshot import GONE, ObjectSnapshot, Step
from session_visualizer.tracker import AsyncSession, SessionTracker, async_scoped_session

MAX_LISTED_STEPS = 50  # steps listed in the timeline's static HTML
MOMENTS = (("this cell", "cell"), ("now", "now"))


@dataclass
class Picture:
    """What a view shows at one moment: its mirror trait values, text and HTML."""

    traits: dict[str, Any]
    text: str
    html: str


class _View(widgets.VBox):
    """A view of a tracker, pinned to the end of the cell that made it, or live."""

    kind: ClassVar[str]
    text = Unicode("", read_only=True, help="What the view shows, as deterministic plain text.")
    moment = Enum(
        [value for _title, value in MOMENTS], default_value="cell",
        help='"cell": as it was at the end of the cell that made it (pinned); '
             '"now": live, following every new step',
    )
    pinned = Int(-1, read_only=True, help="the index of the step it is pinned to (-1: none yet)")
    step = Int(0, help="the position shown among the steps it offers, from 1 (0: none)")
    total = Int(0, read_only=True, help="how many steps it offers to step through")

    def __init__(self, tracker: SessionTracker) -> None:
        self._tracker = tracker
        self._first = 0  # the index of the first step of its cell
        self._waiting = False  # made by a cell that is still running: pinned when it ends
        self._offered: Sequence[int] = ()
        self._syncing = False  # the view itself is moving its switch
        self._switch = widgets.ToggleButtons(
            options=MOMENTS, value="cell", style={"button_width": "auto"},
            tooltips=["as it was at the end of the cell that made it", "live: every new step"],
        )  # fmt: skip
        self._stepper: _Stepper | None = None  # made once the view offers two steps or more
        self._body = widgets.HTML()
        super().__init__(children=[self._switch, self._body])
        self.add_class(f"sv-{self.kind}")
        self._switch.observe(self._switched, names="value")
        self._schedule_lock = threading.Lock()
        self._scheduled = False
        try:
            self._loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            self._loop = None
        self._listener = _weak_listener(self)

    def _start(self, live: bool) -> None:
        """Pin to the running cell (outside IPython: to now) and show; the subclass is set up."""
        clock = cell_clock()
        if clock is not None:
            self._first, self._waiting = clock.enlist(self, self._tracker), True
        self._pin(self._first)
        if live:
            self.moment = "now"
        else:
            self._reposition(to_last=True)

    # ----------------------------------------------------------------- public
    def pin(self, first_step: int | None = None) -> None:
        """Pin the view to the tracker's last step; it steps through those from index
        ``first_step`` on (default: the steps since its previous pin). The end of the cell that
        made a view calls this; outside IPython call it yourself."""
        self._waiting = False
        self._pin(self.pinned + 1 if first_step is None else first_step)
        self._reposition(to_last=True)

    def show(self, step: int) -> None:
        """Show position ``step`` (from 1) of the steps offered, clamped to the offered range."""
        self.step = max(min(step, self.total), min(1, self.total))

    def refresh(self) -> None:
        """Read the tracker again: a live view shows the last step, a pinned one its moment."""
        self._reposition(to_last=False)

    def static_html(self) -> str:
        """The HTML of the pinned moment, shown where no widget JavaScript runs."""
        return self._static().html

    def close(self) -> None:
        self._tracker.unsubscribe(self._listener)
        super().close()

    def __repr__(self) -> str:
        return self.text

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        if self._waiting:  # displayed by its own cell: the cell's moment so far
            self._pin(self._first)
            self._reposition(to_last=True)
        data = super()._repr_mimebundle_(**kwargs) or {}
        static = self._static()
        data["text/plain"] = static.text
        data["text/html"] = f'<div class="sv-{self.kind}">{static.html}</div>'
        return data

    # ----------------------------------------------------------------- what a subclass draws
    def _relevant(self, first: int, last: int) -> list[int]:
        """The indices of the steps from ``first`` to ``last`` that change what the view shows."""
        raise NotImplementedError

    def _draw(self, offered: Sequence[int], position: int, now: bool) -> Picture:
        """The picture at position ``position`` (from 1) of ``offered``; ``now``: the present."""
        raise NotImplementedError

    def _offer(self, moment: str) -> Sequence[int]:
        """The step indices the view steps through: its cell's relevant steps, ending with the
        pinned one; live, only the last step."""
        if moment == "now":
            return (self._tracker.step_count - 1,)
        last = self.pinned
        relevant = self._relevant(self._first, last)
        return relevant if relevant and relevant[-1] == last else [*relevant, last]

    # ----------------------------------------------------------------- the state, in one place
    def _pin(self, first: int) -> None:
        self._tracker.catch_up()
        self._first = first
        self.set_trait("pinned", self._tracker.step_count - 1)

    def _static(self) -> Picture:
        offered = self._offer("cell")
        picture = self._draw(offered, len(offered), now=False)
        shown = self._tracker.step_at(offered[-1]) if offered and offered[-1] >= 0 else None
        picture.html = render.moment_html(self.pinned + 1, shown, live=False) + picture.html
        return picture

    def _reposition(self, to_last: bool) -> None:
        """Recompute the steps offered and show the last one (``to_last``, or if it was shown)."""
        offered = self._offer(self.moment)
        following = to_last or self.step == self.total
        with self._batch():
            self._offered = offered
            self.set_trait("total", len(offered))
            step = len(offered) if following else min(max(self.step, 1), len(offered))
            if step == self.step:
                self._render()
            else:
                self.step = step  # observed: renders

    @validate("step")
    def _valid_step(self, proposal: dict[str, Any]) -> int:
        value, low = proposal["value"], min(1, self.total)
        if not low <= value <= self.total:
            raise TraitError(
                f"{type(self).__name__}.step must be from {low} to {self.total} "
                f"(the steps it offers), not {value}"
            )
        return value

    @observe("step")
    def _step_changed(self, change: dict[str, Any]) -> None:
        self._render()

    @observe("moment")
    def _moment_changed(self, change: dict[str, Any]) -> None:
        if change["new"] == "now":
            self._tracker.subscribe(self._listener)
        else:
            self._tracker.unsubscribe(self._listener)
        with self._batch():
            self._syncing = True
            self._switch.value = change["new"]
            self._syncing = False
            self._reposition(to_last=True)

    def _render(self) -> None:
        """Show position ``step`` of the steps offered: traits, text, HTML, controls."""
        now = self.moment == "now"
        picture = self._draw(self._offered, self.step, now)
        index = self._offered[self.step - 1] if self.step else -1
        shown = self._tracker.step_at(index) if index >= 0 else None
        with self._batch():
            for name, value in picture.traits.items():
                self.set_trait(name, value)
            self.set_trait("text", picture.text)
            self._body.value = render.moment_html(self.pinned + 1, shown, live=now) + picture.html
            if self.total > 1 and self._stepper is None:
                self._stepper = _Stepper(self.show)
                self.children = (self._switch, self._stepper, self._body)
            if self._stepper is not None:
                self._stepper.set(self.step, self.total)

    @contextlib.contextmanager
    def _batch(self) -> Iterator[None]:
        """One state message per widget for everything changed inside."""
        with contextlib.ExitStack() as stack:
            for widget in (self, self._switch, self._body):
                stack.enter_context(widget.hold_sync())
            yield

    def _switched(self, change: dict[str, Any]) -> None:
        if not self._syncing:
            self.moment = change["new"]

    # ----------------------------------------------------------------- following live
    def _on_step(self, step: Step | None) -> None:
        if self._loop is None:
            self.refresh()
            return
        with self._schedule_lock:
            if self._scheduled:
                return
            self._scheduled = True
        try:
            self._loop.call_soon_threadsafe(self._run_scheduled)
        except RuntimeError:  # the loop has closed since the widget was made
            self._loop, self._scheduled = None, False
            self.refresh()

    def _run_scheduled(self) -> None:
        with self._schedule_lock:
            self._scheduled = False
        if self.moment == "now":
            self.refresh()


class _Stepper(widgets.HBox):
    """Back, a step slider and forward over positions 1 to n: focusable, and the slider moves
    with the arrow keys."""

    def __init__(self, show: Callable[[int], None]) -> None:
        self._syncing = False
        self.back = widgets.Button(description="back", icon="step-backward",
                                   tooltip="the previous step", layout={"width": "auto"})
        self.slider = widgets.IntSlider(value=1, min=1, max=1, description="step",
                                        continuous_update=False)
        self.forward = widgets.Button(description="forward", icon="step-forward",
                                      tooltip="the next step", layout={"width": "auto"})
        super().__init__([self.back, self.slider, self.forward])
        self.back.on_click(lambda _button: show(self.slider.value - 1))
        self.forward.on_click(lambda _button: show(self.slider.value + 1))
        self.slider.observe(lambda change: self._syncing or show(change["new"]), names="value")

    def set(self, step: int, total: int) -> None:
        """Show position ``step`` of ``total``; hidden while there is nothing to step through."""
        with self.slider.hold_sync(), self.layout.hold_sync():
            self._syncing = True
            self.slider.max = max(total, 1)
            self.slider.value = max(step, 1)
            self._syncing = False
            self.layout.display = None if total > 1 else "none"


def _weak_listener(view: _View) -> Any:
    """A tracker listener that does not keep the widget alive."""
    ref = weakref.ref(view)

    def listener(step: Step | None) -> None:
        alive = ref()
        if alive is not None:
            alive._on_step(step)

    return listener


class _ObjectView(_View):
    """A view of one tracked object."""

    def __init__(self, tracker: SessionTracker, obj: object, label: str | None = None, *,
                 live: bool = False) -> None:
        super().__init__(tracker)
        watched = tracker.watch(obj, label)
        self._key = watched.key
        self._watched = (tracker.step_count - 1, watched)  # seen after that step, if in none
        self._start(live)

    def _relevant(self, first: int, last: int) -> list[int]:
        return [index for index in self._tracker.steps_touching(self._key)
                if first <= index <= last]

    def _snapshot_at(self, index: int) -> ObjectSnapshot:
        """The object after step ``index``; as it was when watched, if no step has its row yet
        (the tracker's steps do not hold the row it read when it first saw the object)."""
        snapshot = self._tracker.snapshot_at(self._key, index)
        seen_after, watched = self._watched
        touching = self._tracker.steps_touching(self._key)
        if snapshot.state != GONE and index >= seen_after and (not touching or touching[0] > index):
            return watched
        return snapshot


class ObjectCard(_ObjectView):
    """One object: its state named and shown as lights, identity key, changed, expired.

    ``ObjectCard(tracker, obj, label=None, *, live=False)``: ``label`` names the object in every
    view (default: its ``repr()``); ``live=True`` follows every new step instead of its cell's.
    """

    kind = "object-card"
    label = Unicode("", read_only=True)
    state = Unicode("", read_only=True,
                    help="transient, pending, persistent, deleted, detached, or gone")
    identity = Unicode(None, allow_none=True, read_only=True)
    modified = Tuple(read_only=True)
    expired = Tuple(read_only=True)
    marked_deleted = Bool(False, read_only=True)

    def _draw(self, offered: Sequence[int], position: int, now: bool) -> Picture:
        snapshot = (self._tracker.snapshot_of(self._key) if now
                    else self._snapshot_at(offered[position - 1]))
        traits = {
            "label": snapshot.label, "state": snapshot.state, "identity": snapshot.identity,
            "modified": snapshot.modified, "expired": snapshot.expired,
            "marked_deleted": snapshot.marked_deleted,
        }
        return Picture(traits, render.object_card_text(snapshot),
                       render.object_card_html(snapshot))


class SessionPanel(_View):
    """A session's new, dirty, deleted and identity map members; is a transaction open."""

    kind = "session-panel"
    new = Tuple(read_only=True)
    dirty = Tuple(read_only=True)
    deleted = Tuple(read_only=True)
    identity_map = Tuple(read_only=True)
    in_transaction = Bool(False, read_only=True)

    def __init__(self, tracker: SessionTracker,
                 session: Session | scoped_session | AsyncSession | async_scoped_session, *,
                 live: bool = False) -> None:
        if isinstance(session, scoped_session | async_scoped_session):
            session = session()  # the registry's current session
        # An AsyncSession does its work in the Session it wraps: that is the one the tracker saw.
        # Only its key is kept: a panel must not keep a session (and its pending objects) alive.
        sync_session = session.sync_session if isinstance(session, AsyncSession) else session
        self._session_key: int = sync_session.hash_key
        super().__init__(tracker)
        self._start(live)

    def _relevant(self, first: int, last: int) -> list[int]:
        key = self._session_key
        return [index for index in range(max(first, 0), last + 1)
                if self._tracker.step_at(index).session_key == key]

    def _draw(self, offered: Sequence[int], position: int, now: bool) -> Picture:
        key = self._session_key
        snapshot = (self._tracker.current_session(key) if now
                    else self._tracker.session_snapshot_at(key, offered[position - 1]))
        traits = {
            "new": snapshot.new, "dirty": snapshot.dirty, "deleted": snapshot.deleted,
            "identity_map": snapshot.identity_map, "in_transaction": snapshot.in_transaction,
        }
        return Picture(traits, render.session_panel_text(snapshot),
                       render.session_panel_html(snapshot))


class StateDiagram(_ObjectView):
    """An SVG of the five states; the object's state and its last transition lit.

    ``StateDiagram(tracker, obj, label=None, *, live=False)``, like ``ObjectCard``.
    """

    kind = "state-diagram"
    state = Unicode("", read_only=True)
    last_event = Unicode(None, allow_none=True, read_only=True,
                         help="e.g. pending_to_persistent")
    last_call = Unicode(None, allow_none=True, read_only=True,
                        help="the call it happened in, e.g. commit()")

    def _draw(self, offered: Sequence[int], position: int, now: bool) -> Picture:
        if now:
            snapshot = self._tracker.snapshot_of(self._key)
            last = self._tracker.last_transition(self._key)
        else:
            index = offered[position - 1]
            snapshot = self._snapshot_at(index)
            last = self._tracker.last_transition_at(self._key, index)
        traits = {
            "state": snapshot.state,
            "last_event": last[0].event if last else None,
            "last_call": last[1] if last else None,
        }
        return Picture(traits, render.state_diagram_text(snapshot, last),
                       render.state_diagram_svg(snapshot, last))


class Timeline(_View):
    """Replay a tracker's steps - all, one object's (``obj``), or a range of step indices
    (``steps``, counted from 0 like ``tracker.history``) - with the SQL each sent."""

    kind = "timeline"
    call = Unicode("", read_only=True, help="the call of the step shown, e.g. commit()")

    def __init__(self, tracker: SessionTracker, obj: object | None = None, *,
                 steps: range | None = None, live: bool = False) -> None:
        if steps is not None and steps.step != 1:
            raise ValueError(f"Timeline steps must be a range of consecutive indices, not {steps}")
        super().__init__(tracker)
        self._key = None if obj is None else tracker.watch(obj).key
        self._range = steps
        self._start(live)

    def _offer(self, moment: str) -> Sequence[int]:
        """Its steps up to the end of its cell (pinned), or up to now (live)."""
        end = self._tracker.step_count if moment == "now" else self.pinned + 1
        low, high = (0, end) if self._range is None else (
            max(self._range.start, 0), min(self._range.stop, end))
        if self._key is None:
            return range(low, max(high, low))
        return [index for index in self._tracker.steps_touching(self._key) if low <= index < high]

    def _scope(self, index: int) -> str:
        if self._key is not None:
            return f"the steps of {self._tracker.snapshot_at(self._key, index).label}"
        if self._range is not None:
            return f"steps {self._range.start + 1} to {self._range.stop} of the tracker"
        return "every step of the tracker"

    def _draw(self, offered: Sequence[int], position: int, now: bool) -> Picture:
        if not position:
            return Picture({"call": ""}, render.timeline_text(None, 0, 0),
                           render.timeline_html(None, 0, 0, None, self._scope(-1)))
        index = offered[position - 1]
        step = self._tracker.step_at(index)
        session = self._tracker.session_at(index)
        return Picture(
            {"call": step.call}, render.timeline_text(step, position, len(offered)),
            render.timeline_html(step, position, len(offered), session, self._scope(index)),
        )

    def _static(self) -> Picture:
        picture = super()._static()
        offered = self._offer("cell")
        steps = [self._tracker.step_at(index) for index in offered[:MAX_LISTED_STEPS]]
        picture.html += render.step_list_html(steps, len(offered), len(offered))
        return picture
