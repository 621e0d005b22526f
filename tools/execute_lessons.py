"""Re-execute lessons top to bottom and save them with outputs that nbval and students can use.

Usage: python tools/execute_lessons.py [notebooks/NN-name.ipynb ...]   (default: every lesson)

A widget's view output names a model id that exists only in the kernel that made it: reopened later,
it shows "model not found" instead of the widget. So the view output is dropped and the widget's
text and static HTML are kept; running the cell again in JupyterLab brings the live widget back.
Consecutive stream outputs are merged (where the kernel happened to flush differs from run to run).
Only the fields a reader needs are kept in the notebook's metadata.
"""

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbconvert.preprocessors import CoalesceStreamsPreprocessor
from postgres_server import postgres_for_the_course  # tools/ is the script's folder

from course_database import VARIABLE

LESSONS = Path(__file__).resolve().parents[1] / "notebooks"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


@contextmanager
def on_sqlite() -> Iterator[None]:
    """COURSE_DATABASE_URL unset while inside: the stored outputs of a lesson are SQLite's."""
    saved = os.environ.pop(VARIABLE, None)
    try:
        yield
    finally:
        if saved is not None:
            os.environ[VARIABLE] = saved


def execute_lesson(path: Path) -> None:
    """Run the notebook at ``path`` in a fresh kernel, in its own folder, and save it in place."""
    notebook = nbformat.read(path, as_version=4)
    in_its_folder = {"metadata": {"path": str(path.parent)}}
    tags = notebook.metadata.get("tags", [])
    # A lesson tagged `postgresql` stores PostgreSQL outputs: its kernel gets COURSE_DATABASE_URL.
    with postgres_for_the_course() if "postgresql" in tags else on_sqlite():
        NotebookClient(notebook, timeout=120, resources=in_its_folder).execute()
    notebook, _ = CoalesceStreamsPreprocessor().preprocess(notebook, {})
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            output.get("data", {}).pop(WIDGET_VIEW, None)
        cell.metadata.pop("execution", None)
    notebook.metadata = nbformat.from_dict(
        {
            "kernelspec": notebook.metadata["kernelspec"],
            "language_info": {"name": "python", "pygments_lexer": "ipython3"},
            **({"tags": tags} if tags else {}),
        }
    )
    nbformat.write(notebook, path)


if __name__ == "__main__":
    for name in sys.argv[1:] or sorted(LESSONS.glob("[0-9]*.ipynb")):
        print(f"executing {name}")
        execute_lesson(Path(name))
