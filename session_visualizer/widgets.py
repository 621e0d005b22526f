"""ipywidgets views of a SessionTracker: object card, session panel, state diagram, timeline.

Each widget is a stock ``VBox`` of stock widgets (HTML, Play, IntSlider, Button), so it renders with
ipywidgets' own JavaScript. Its state lives in traitlets (``state``, ``text``...); the HTML it shows
comes from ``session_visualizer.render``, which also gives its static ``text/html`` and its
deterministic ``text/plain`` representation.

Updates are batched: the tracker reports once per step (one ``commit()`` of 10,000 objects is one
step), and inside a running event loop - a Jupyter kernel runs each cell inside one - a widget
refreshes once after the cell, however many steps the cell made.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from html import escape
from typing import Any, ClassVar

import ipywidgets as widgets
from sqlalchemy.orm import Session, scoped_session
from traitlets import Bool, Int, Tuple, Unicode

from session_visualizer import render
from session_visualizer.snapshot import Step
from session_visualizer.tracker import SessionTracker

MAX_LISTED_STEPS = 50  # steps listed in the timeline's static HTML


class _LiveView(widgets.VBox):
    """A VBox that re-renders itself from its tracker after each step."""

    kind: ClassVar[str]
    text = Unicode("", help="The deterministic plain-text representation.")

    def __init__(self, tracker: SessionTracker, controls: tuple[widgets.Widget, ...] = ()) -> None:
        self._body = widgets.HTML()
        super().__init__(children=[*controls, self._body])
        self.add_class(f"sv-{self.kind}")
        self._tracker = tracker
        self._schedule_lock = threading.Lock()
        self._scheduled = False
        try:
            self._loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            self._loop = None
        self._listener = _weak_listener(self)

    def _follow(self) -> None:
        """Show the tracker's state now and after every step (the subclass is set up)."""
        self._tracker.subscribe(self._listener)
        self.refresh()

    def refresh(self) -> None:
        """Read the tracker now and update the traits (and so the view)."""
        self._tracker.settle()
        self._update()

    def static_html(self) -> str:
        """The HTML shown where no widget JavaScript runs."""
        return self._body.value

    def _update(self) -> None:
        raise NotImplementedError

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
        self.refresh()

    def close(self) -> None:
        self._tracker.unsubscribe(self._listener)
        super().close()

    def __repr__(self) -> str:
        return self.text

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        self.refresh()
        data = super()._repr_mimebundle_(**kwargs) or {}
        data["text/plain"] = self.text
        data["text/html"] = f'<div class="sv-{self.kind}">{self.static_html()}</div>'
        return data


def _weak_listener(view: _LiveView) -> Any:
    """A tracker listener that does not keep the widget alive."""
    ref = weakref.ref(view)

    def listener(step: Step | None) -> None:
        alive = ref()
        if alive is not None:
            alive._on_step(step)

    return listener


class ObjectCard(_LiveView):
    """One object: its five states as lights (current one lit), identity key, changed, expired."""

    kind = "object-card"
    label = Unicode("")
    state = Unicode("", help="transient, pending, persistent, deleted, detached, or gone")
    identity = Unicode(None, allow_none=True)
    modified = Tuple()
    expired = Tuple()
    marked_deleted = Bool(False)

    def __init__(self, tracker: SessionTracker, obj: object, label: str | None = None) -> None:
        super().__init__(tracker)
        self._key = tracker.watch(obj, label).key
        self._follow()

    def _update(self) -> None:
        snapshot = self._tracker.snapshot_of(self._key)
        self.label, self.state = snapshot.label, snapshot.state
        self.identity = snapshot.identity
        self.modified, self.expired = snapshot.modified, snapshot.expired
        self.marked_deleted = snapshot.marked_deleted
        self.text = render.object_card_text(snapshot)
        self._body.value = render.object_card_html(snapshot)


class SessionPanel(_LiveView):
    """A session's new, dirty, deleted and identity map members; is a transaction open."""

    kind = "session-panel"
    new = Tuple()
    dirty = Tuple()
    deleted = Tuple()
    identity_map = Tuple()
    in_transaction = Bool(False)

    def __init__(self, tracker: SessionTracker, session: Session | scoped_session) -> None:
        self._session = session() if isinstance(session, scoped_session) else session
        super().__init__(tracker)
        self._follow()

    def _update(self) -> None:
        snapshot = self._tracker.current_session(self._session)
        self.new, self.dirty = snapshot.new, snapshot.dirty
        self.deleted, self.identity_map = snapshot.deleted, snapshot.identity_map
        self.in_transaction = snapshot.in_transaction
        self.text = render.session_panel_text(snapshot)
        self._body.value = render.session_panel_html(snapshot)


class StateDiagram(_LiveView):
    """An SVG of the five states; the object's current state and its last transition lit."""

    kind = "state-diagram"
    state = Unicode("")
    last_event = Unicode(None, allow_none=True, help="e.g. pending_to_persistent")
    last_call = Unicode(None, allow_none=True, help="the call it happened in, e.g. commit()")

    def __init__(self, tracker: SessionTracker, obj: object, label: str | None = None) -> None:
        super().__init__(tracker)
        self._key = tracker.watch(obj, label).key
        self._follow()

    def _update(self) -> None:
        snapshot = self._tracker.snapshot_of(self._key)
        last = self._tracker.last_transition(self._key)
        self.state = snapshot.state
        self.last_event, self.last_call = (last[0].event, last[1]) if last else (None, None)
        self.text = render.state_diagram_text(snapshot, last)
        self._body.value = render.state_diagram_svg(snapshot, last)


class Timeline(_LiveView):
    """Replay the tracker's history: a step slider with play, back and forward buttons."""

    kind = "timeline"
    step = Int(0, help="the step shown, counted from 1 (0: nothing recorded yet)")
    total = Int(0, help="the number of recorded steps")
    call = Unicode("")

    def __init__(self, tracker: SessionTracker, interval_ms: int = 800) -> None:
        self._slider = widgets.IntSlider(min=0, max=0, value=0, description="step",
                                         continuous_update=False)
        self._play = widgets.Play(min=0, max=0, value=0, interval=interval_ms)
        # Linked in the kernel, not the browser: a browser-side link echoes the Play button's stale
        # value back into the slider and pins the timeline to step 1.
        widgets.link((self._play, "value"), (self._slider, "value"))
        self._back = widgets.Button(description="", icon="step-backward", tooltip="back",
                                    layout=widgets.Layout(width="40px"))
        self._forward = widgets.Button(description="", icon="step-forward", tooltip="forward",
                                       layout=widgets.Layout(width="40px"))
        self._back.on_click(lambda _button: self.show(self.step - 1))
        self._forward.on_click(lambda _button: self.show(self.step + 1))
        controls = widgets.HBox([self._back, self._play, self._forward, self._slider])
        super().__init__(tracker, (controls,))
        self._slider.observe(lambda change: self.show(change["new"]), names="value")
        self._follow()

    def show(self, step: int) -> None:
        """Show step number ``step`` (counted from 1), clamped to the recorded range."""
        self.step = max(min(step, self.total), min(1, self.total))
        if self._slider.value != self.step:
            self._slider.value = self.step  # the slider's observer shows it
        else:
            self._render()

    def _update(self) -> None:
        following = self.step == self.total
        self.total = self._tracker.step_count
        low = min(1, self.total)
        for control in (self._slider, self._play):
            control.max = self.total
        self.show(self.total if following or self.step < low else self.step)
        for control in (self._slider, self._play):
            control.min = low  # after the value: a raised minimum would move the slider

    def _render(self) -> None:
        step = self._tracker.step_at(self.step - 1) if self.step else None
        session = self._tracker.session_at(self.step - 1) if step is not None else None
        self.call = step.call if step is not None else ""
        self.text = render.timeline_text(step, self.total)
        self._body.value = render.timeline_html(step, self.total, session)

    def static_html(self) -> str:
        calls = [step.title for step in self._tracker.history[:MAX_LISTED_STEPS]]
        items = "".join(
            f'<li class="sv-listed-step{" sv-current" if number == self.step else ""}">'
            f"{escape(call)}</li>"
            for number, call in enumerate(calls, start=1)
        )
        more = self.total - len(calls)
        items += f"<li>+{more} more</li>" if more > 0 else ""
        return f'{self._body.value}<ol class="sv-steps">{items}</ol>'

