"""Live visualizers of SQLAlchemy Session state: a tracker and ipywidgets on top of it.

``SessionTracker`` records every object's lifecycle step by step (no widget code); ``ObjectCard``,
``SessionPanel``, ``StateDiagram`` and ``Timeline`` show what it recorded, live in JupyterLab and as
deterministic text and HTML elsewhere.
"""

from session_visualizer.snapshot import STATES, ObjectSnapshot, SessionSnapshot, Step, Transition
from session_visualizer.tracker import SessionTracker
from session_visualizer.widgets import ObjectCard, SessionPanel, StateDiagram, Timeline

__all__ = [
    "STATES",
    "ObjectCard",
    "ObjectSnapshot",
    "SessionPanel",
    "SessionSnapshot",
    "SessionTracker",
    "StateDiagram",
    "Step",
    "Timeline",
    "Transition",
]
