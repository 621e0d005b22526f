"""Visualizers of SQLAlchemy Session state: a tracker and ipywidgets on top of it.

``SessionTracker`` records every object's lifecycle step by step (no widget code); ``ObjectCard``,
``SessionPanel``, ``StateDiagram`` and ``Timeline`` show what it recorded, in JupyterLab and as
deterministic text and HTML elsewhere. Each shows the moment of the notebook cell that made it
(pinned to the end of that cell), or, with ``live=True``, every new step.
"""

from session_visualizer.cells import cell_clock
from session_visualizer.snapshot import STATES, ObjectSnapshot, SessionSnapshot, Step, Transition
from session_visualizer.tracker import SessionTracker
from session_visualizer.widgets import ObjectCard, SessionPanel, StateDiagram, Timeline

cell_clock()  # in IPython, start counting cells now: the notebook's next cell is the first

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
