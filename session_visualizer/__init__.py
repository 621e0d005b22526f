"""Live visualizers of SQLAlchemy Session state: a tracker and ipywidgets on top of it."""
