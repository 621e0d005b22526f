"""Pure functions from snapshots to deterministic text, HTML and SVG.

The widgets show these strings live and return them as their static representations, so a notebook
shows the same picture in JupyterLab, nbviewer, GitHub and nbgrader's feedback pages. Nothing here
reads a clock, an address or a session number. CSS classes ``sv-*`` and ``data-*`` attributes are
the hooks a browser test reads.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape

from session_visualizer.snapshot import (
    GONE,
    LIFECYCLE_EVENTS,
    STATES,
    ObjectSnapshot,
    SessionSnapshot,
    Step,
    Transition,
)

MAX_ITEMS = 8  # members, transitions or statements listed before "+N more"
MAX_SQL_CHARS = 160

# Every text/background pair below meets WCAG AA (contrast at least 4.5:1): white on each state
# colour, each state colour on white, muted text on the unlit background (tests/test_widgets.py).
WHITE = "#ffffff"
INK = "#222222"  # body text, on white
MUTED = "#595959"  # unlit lights' text, arrows and their labels, the database node
UNLIT = "#f2f2f2"  # unlit lights' background
HIGHLIGHT = "#c2185b"  # the last transition
STATE_COLORS = {
    "transient": "#5f6368",
    "pending": "#8a5300",
    "persistent": "#1e7b3a",
    "deleted": "#b3261e",
    "detached": "#2f62a8",
    GONE: "#4a4a4a",
}
BOX = f"background:{WHITE};color:{INK};padding:4px"  # views set their own colours (dark themes)

# The call that typically causes each lifecycle event: the labels of the state diagram's arrows
# (the lit one, the object's last transition, is labelled with the call that really caused it).
EVENT_CALLS = {
    "transient_to_pending": "add()",
    "pending_to_persistent": "flush()",
    "pending_to_transient": "expunge() / rollback()",
    "loaded_as_persistent": "query / get()",
    "persistent_to_transient": "rollback()",
    "persistent_to_deleted": "delete() + flush()",
    "deleted_to_detached": "commit()",
    "persistent_to_detached": "close() / expunge()",
    "detached_to_persistent": "add()",
    "deleted_to_persistent": "rollback()",
}


# ----------------------------------------------------------------------------- small pieces
def _bounded(items: Sequence[str], limit: int = MAX_ITEMS) -> list[str]:
    shown = list(items[:limit])
    if len(items) > limit:
        shown.append(f"+{len(items) - limit} more")
    return shown


def _list_text(items: Sequence[str]) -> str:
    return ", ".join(_bounded(items)) if items else "-"


def _sql_lines(statements: Sequence[str]) -> list[str]:
    """Statements on one line each, repeats collapsed (``3x INSERT ...``), long ones cut."""
    collapsed: list[list] = []
    for statement in statements:
        flat = " ".join(statement.split())
        if len(flat) > MAX_SQL_CHARS:
            flat = flat[: MAX_SQL_CHARS - 3] + "..."
        if collapsed and collapsed[-1][1] == flat:
            collapsed[-1][0] += 1
        else:
            collapsed.append([1, flat])
    return _bounded([text if count == 1 else f"{count}x {text}" for count, text in collapsed])


def _first_transitions(step: Step) -> tuple[list[Transition], int]:
    """The transitions a view lists, and how many more there are."""
    return list(step.first_transitions(MAX_ITEMS)), max(step.transition_count - MAX_ITEMS, 0)


def _transition_text(transition: Transition) -> str:
    return f"{transition.label}: {transition.before} -> {transition.after}"


# ----------------------------------------------------------------------------- object card
def object_card_text(snapshot: ObjectSnapshot) -> str:
    """``ObjectCard User(id=2, name='Mary'): transient . pending . [persistent] . ... | key ...``"""
    if snapshot.state == GONE:
        return f"ObjectCard {snapshot.label}: gone (garbage-collected)"
    lights = " . ".join(f"[{state}]" if state == snapshot.state else state for state in STATES)
    parts = [f"ObjectCard {snapshot.label}: {lights}"]
    parts.append(f"key {snapshot.identity}" if snapshot.identity else "no key")
    if snapshot.marked_deleted:
        parts.append("marked for deletion")
    if snapshot.modified:
        parts.append("changed " + ", ".join(snapshot.modified))
    if snapshot.expired:
        parts.append("expired " + ", ".join(snapshot.expired))
    return " | ".join(parts)


def _light(state: str, lit: bool) -> str:
    """One state as a pill: lit in its colour (white text, bold, ``aria-current``) or unlit."""
    background, color = (STATE_COLORS[state], WHITE) if lit else (UNLIT, MUTED)
    current = ' aria-current="true"' if lit else ""
    weight = ";font-weight:bold" if lit else ""
    return (
        f'<span class="sv-light{" sv-lit" if lit else ""}" data-light="{state}"{current} '
        'style="display:inline-block;margin-right:4px;padding:2px 8px;border-radius:10px;'
        f'border:1px solid {STATE_COLORS[state]};background:{background};color:{color}{weight}">'
        f"{state}</span>"
    )


def object_card_html(snapshot: ObjectSnapshot) -> str:
    """The card's body: the state named, a row of five lights (current one lit; a sixth, "gone",
    once the object was garbage-collected), identity, changed and expired."""
    gone = snapshot.state == GONE
    lights = "".join(_light(state, state == snapshot.state) for state in STATES)
    lights += _light(GONE, True) if gone else ""
    state = (
        f"<b>{GONE}</b>: garbage-collected, nothing refers to it any more" if gone
        else f"<b>{snapshot.state}</b>"
    )
    rows = [
        ("identity", "identity key", snapshot.identity or "none"),
        ("changed", "changed", ", ".join(snapshot.modified) or "-"),
        ("expired", "expired", ", ".join(snapshot.expired) or "-"),
    ]
    if snapshot.marked_deleted:
        rows.append(("marked-deleted", "delete()", "marked for deletion at the next flush"))
    details = "".join(
        f'<tr><th style="text-align:left;padding-right:8px">{title}</th>'
        f'<td class="sv-{css}"><code>{escape(value)}</code></td></tr>'
        for css, title, value in rows
    )
    return (
        f'<div class="sv-card-body" data-state="{snapshot.state}" style="{BOX}">'
        f'<div class="sv-label" style="font-weight:bold">{escape(snapshot.label)}</div>'
        f'<div class="sv-state">state: {state}</div>'
        f'<div class="sv-lights">{lights}</div>'
        f"<table>{details}</table></div>"
    )


# ----------------------------------------------------------------------------- session panel
SESSION_GROUPS = (("new", "new"), ("dirty", "dirty"), ("deleted", "deleted"),
                  ("identity_map", "identity map"))


def session_panel_text(snapshot: SessionSnapshot) -> str:
    """``SessionPanel: transaction open | new: ... | dirty: - | deleted: - | identity map: ...``"""
    transaction = "transaction open" if snapshot.in_transaction else "no transaction"
    groups = [f"{title}: {_list_text(getattr(snapshot, name))}" for name, title in SESSION_GROUPS]
    return " | ".join([f"SessionPanel: {transaction}", *groups])


def session_panel_html(snapshot: SessionSnapshot) -> str:
    """Four boxes (new, dirty, deleted, identity map) with their members, and the transaction.

    A member's label may hold a token wider than its box (``email='john@home.example',``): it
    wraps anywhere rather than spill over the next box."""
    boxes = []
    for name, title in SESSION_GROUPS:
        members = getattr(snapshot, name)
        items = "".join(f"<li><code>{escape(item)}</code></li>" for item in _bounded(members))
        boxes.append(
            f'<div class="sv-group" data-group="{name}" data-count="{len(members)}" '
            f'style="flex:1;min-width:140px;border:1px solid {MUTED};border-radius:4px;'
            'padding:4px;overflow-wrap:anywhere">'
            f"<b>{title}</b> ({len(members)})<ul style=\"margin:2px 0;padding-left:18px\">"
            f"{items}</ul></div>"
        )
    transaction = "open" if snapshot.in_transaction else "none"
    return (
        f'<div class="sv-panel-body" data-transaction="{transaction}" style="{BOX}">'
        f"<div>transaction: <b>{transaction}</b></div>"
        f'<div style="display:flex;gap:6px;flex-wrap:wrap">{"".join(boxes)}</div></div>'
    )


# ----------------------------------------------------------------------------- state diagram
NODE_POSITIONS = {
    "transient": (90, 50),
    "pending": (330, 50),
    "persistent": (330, 180),
    "deleted": (570, 180),
    "detached": (330, 310),
    "database": (90, 180),
}
NODE_HALF_WIDTH, NODE_HALF_HEIGHT = 58, 18
_STATE_PAIRS = frozenset(LIFECYCLE_EVENTS.values())


def _clip(x: float, y: float, dx: float, dy: float) -> tuple[float, float]:
    """Move from a node centre towards (dx, dy) to the edge of its box."""
    scale = min(
        NODE_HALF_WIDTH / abs(dx) if dx else math.inf,
        NODE_HALF_HEIGHT / abs(dy) if dy else math.inf,
    )
    return x + dx * scale, y + dy * scale


def _edge_svg(event_name: str, before: str, after: str, last_call: str | None) -> str:
    """One arrow: lit, and labelled with ``last_call``, if it is the object's last transition."""
    last = last_call is not None
    (x1, y1), (x2, y2) = NODE_POSITIONS[before], NODE_POSITIONS[after]
    dx, dy = x2 - x1, y2 - y1
    length = math.hypot(dx, dy)
    normal_x, normal_y = -dy / length, dx / length
    # Two opposite arrows between the same states run side by side.
    shift = 7 if (after, before) in _STATE_PAIRS else 0
    sx, sy = _clip(x1, y1, dx, dy)
    ex, ey = _clip(x2, y2, -dx, -dy)
    sx, sy = sx + normal_x * shift, sy + normal_y * shift
    ex, ey = ex + normal_x * shift, ey + normal_y * shift
    # The label sits beside its own arrow, on the arrow's outer side.
    label_x = (sx + ex) / 2 + normal_x * 8
    label_y = (sy + ey) / 2 + normal_y * 8 + 4
    anchor = "start" if normal_x > 0.3 else "end" if normal_x < -0.3 else "middle"
    color, width = (HIGHLIGHT, 3) if last else (MUTED, 1.2)
    marker = "sv-arrow-last" if last else "sv-arrow"
    return (
        f'<g class="sv-edge{" sv-last" if last else ""}" data-edge="{event_name}">'
        f'<line x1="{sx:.1f}" y1="{sy:.1f}" x2="{ex:.1f}" y2="{ey:.1f}" stroke="{color}" '
        f'stroke-width="{width}" marker-end="url(#{marker})"/>'
        f'<text x="{label_x:.1f}" y="{label_y:.1f}" font-size="10" text-anchor="{anchor}" '
        f'fill="{color}">{escape(last_call or EVENT_CALLS[event_name])}</text></g>'
    )


def _node_svg(state: str, current: bool) -> str:
    x, y = NODE_POSITIONS[state]
    if state == "database":
        fill, stroke, text_color = WHITE, MUTED, MUTED
    else:
        fill = STATE_COLORS[state] if current else WHITE
        stroke, text_color = STATE_COLORS[state], WHITE if current else STATE_COLORS[state]
    return (
        f'<g class="sv-node{" sv-current" if current else ""}" data-node="{state}">'
        f'<rect x="{x - NODE_HALF_WIDTH}" y="{y - NODE_HALF_HEIGHT}" width="{2 * NODE_HALF_WIDTH}" '
        f'height="{2 * NODE_HALF_HEIGHT}" rx="9" fill="{fill}" stroke="{stroke}" '
        f'stroke-width="{3 if current else 1.5}"/>'
        f'<text x="{x}" y="{y + 4}" font-size="13" text-anchor="middle" fill="{text_color}">'
        f"{state}</text></g>"
    )


def state_diagram_text(snapshot: ObjectSnapshot, last: tuple[Transition, str] | None) -> str:
    """``StateDiagram User(...): [persistent] | last pending -> persistent in commit()``"""
    head = f"StateDiagram {snapshot.label}: [{snapshot.state}]"
    if snapshot.state == GONE:
        head += " (garbage-collected)"
    if last is None:
        return f"{head} | no transition recorded"
    transition, call = last
    return f"{head} | last {transition.before} -> {transition.after} in {call}"


def state_diagram_svg(snapshot: ObjectSnapshot, last: tuple[Transition, str] | None) -> str:
    """The five states and the ten lifecycle events as an SVG, current state and last arrow lit."""
    last_event, last_call = (None, None) if last is None else (last[0].event, last[1])
    edges = "".join(
        _edge_svg(name, before, after, last_call if name == last_event else None)
        for name, (before, after) in LIFECYCLE_EVENTS.items()
    )
    nodes = "".join(_node_svg(state, state == snapshot.state) for state in NODE_POSITIONS)
    caption = escape(state_diagram_text(snapshot, last).split(": ", 1)[1])
    markers = "".join(
        f'<marker id="{name}" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="9" '
        'markerHeight="9" markerUnits="userSpaceOnUse" orient="auto-start-reverse">'
        f'<path d="M0,0 L10,5 L0,10 z" fill="{color}"/></marker>'
        for name, color in (("sv-arrow", MUTED), ("sv-arrow-last", HIGHLIGHT))
    )
    return (
        f'<svg class="sv-diagram" data-state="{snapshot.state}" xmlns="http://www.w3.org/2000/svg"'
        ' width="660" height="370" viewBox="0 0 660 370" font-family="sans-serif">'
        f'<defs>{markers}</defs><rect width="660" height="370" fill="{WHITE}"/>'
        f'<text x="10" y="362" font-size="12" fill="{INK}">{escape(snapshot.label)}: '
        f"{caption}</text>{edges}{nodes}</svg>"
    )


# ----------------------------------------------------------------------------- moment and timeline
def step_place(step: Step) -> str:
    """Where a step happened: ``session 1, thread MainThread``."""
    place = [step.session_label] if step.session_label else []
    place += [f"thread {step.thread}"] if step.thread else []
    return ", ".join(place)


def _step_html(step: Step) -> str:
    place = step_place(step)
    return (
        f"step {step.index + 1} <code>{escape(step.title)}</code>"
        + (f" ({escape(place)})" if place else "")
    )


def moment_html(pinned: int, step: Step | None, live: bool) -> str:
    """What moment a view shows - the end of its cell or, ``live``, the present - and after which
    ``step``; ``pinned`` is the number (from 1; 0: before any step) of its cell's last step."""
    shown = "before any step" if step is None else f"after {_step_html(step)}"
    if live:
        head = "<b>live</b>: follows every new step"
    else:
        head = "<b>this cell</b>: as it was at the end of the cell that made it"
    return (
        f'<div class="sv-moment" data-live="{str(live).lower()}" data-pinned="{pinned}" '
        f'data-shown="{0 if step is None else step.index + 1}" style="{BOX};font-size:90%">'
        f"{head}; showing {shown}</div>"
    )


def timeline_text(step: Step | None, number: int, total: int) -> str:
    """Several lines: the step (number ``number`` of the timeline's ``total``), its call, session
    and thread, its transitions, its SQL."""
    if step is None:
        return "Timeline: no step recorded yet"
    head = f"Timeline step {number} of {total}: {step.title}"
    place = step_place(step)
    head += f" in {place}" if place else ""
    if step.events:
        head += " | " + ", ".join(step.events)
    if step.error:
        head += f" | raised {step.error}"
    lines = [head]
    shown, more = _first_transitions(step)
    lines += [f"  {_transition_text(transition)}" for transition in shown]
    lines += [f"  +{more} more"] if more else []
    lines += [f"  SQL: {text}" for text in _sql_lines(step.sql)]
    return "\n".join(lines)


def timeline_html(
    step: Step | None, number: int, total: int, session: SessionSnapshot | None, scope: str
) -> str:
    """The step's call, session and thread, events, transitions, the session panel at that step
    and its SQL; ``scope`` says which steps the timeline replays."""
    heading = f'<div class="sv-scope">{escape(scope)}</div>'
    if step is None:
        return f'<div class="sv-step" data-step="0" style="{BOX}">{heading}no step yet</div>'
    shown, more = _first_transitions(step)
    transitions = "".join(
        f'<li class="sv-transition" data-event="{t.event}"><code>{escape(t.label)}</code>: '
        f'<span style="color:{STATE_COLORS.get(t.before, MUTED)}">{t.before}</span> &rarr; '
        f'<span style="color:{STATE_COLORS[t.after]}">{t.after}</span></li>'
        for t in shown
    )
    transitions += f"<li>+{more} more</li>" if more else ""
    sql = "".join(f"<li><code>{escape(line)}</code></li>" for line in _sql_lines(step.sql))
    events = ", ".join(step.events) or "-"
    error = f' <span class="sv-error">raised {escape(step.error)}</span>' if step.error else ""
    panel = session_panel_html(session) if session is not None else ""
    place = escape(step_place(step)) or "-"
    return (
        f'<div class="sv-step" data-step="{number}" data-call="{escape(step.call)}" '
        f'data-session="{escape(step.session_label)}" data-thread="{escape(step.thread)}" '
        f'style="{BOX}">{heading}'
        f"<div><b>step {number} of {total}: <code>{escape(step.title)}</code></b>{error}</div>"
        f"<div>where: {place}</div><div>session events: {escape(events)}</div>"
        f'<div>transitions:<ul class="sv-transitions">{transitions or "<li>none</li>"}</ul></div>'
        f'{panel}<div>SQL:<ul class="sv-sql">{sql or "<li>none</li>"}</ul></div></div>'
    )


def step_list_html(steps: Sequence[Step], current: int, total: int) -> str:
    """A timeline's first steps as a numbered list, step number ``current`` marked, and how many
    of its ``total`` steps are not listed."""
    items = []
    for number, step in enumerate(steps, start=1):
        place = step_place(step)
        items.append(
            f'<li class="sv-listed-step{" sv-current" if number == current else ""}">'
            f"{escape(step.title)}{f' ({escape(place)})' if place else ''}</li>"
        )
    more = total - len(steps)
    items += [f"<li>+{more} more</li>"] if more > 0 else []
    return f'<ol class="sv-steps" style="{BOX}">{"".join(items)}</ol>'
