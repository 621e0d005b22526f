"""nbgrader configuration for the course: run nbgrader commands from this folder."""

from pathlib import Path

from autograder.feedback import leak_free_feedback_config

c = get_config()  # noqa: F821 - provided by nbgrader when it loads this file

COURSE_ROOT = Path(__file__).resolve().parent

c.CourseDirectory.course_id = "sqlalchemy-sessions"
c.CourseDirectory.root = str(COURSE_ROOT)
c.CourseDirectory.source_directory = "source"
c.CourseDirectory.release_directory = "release"
c.CourseDirectory.db_url = f"sqlite:///{COURSE_ROOT / 'gradebook.db'}"

# A deleted test cell must not take its points with it: put it back before grading.
c.OverwriteCells.add_missing_cells = True

# Seconds one cell may run before it is interrupted.
c.Execute.timeout = 30

# A local exchange for a single user (nbgrader's default is a system folder).
c.Exchange.root = str(COURSE_ROOT / "exchange")

# Databases the assignment notebooks create when run in place are never released or collected.
c.CourseDirectory.ignore = [".ipynb_checkpoints", "*.pyc", "__pycache__", "feedback", "*.db"]

# Feedback shows results and teaching messages, never hidden tests or kernel output, by every
# route: `nbgrader generate_feedback`, formgrader's buttons and `course-grade grade`.
c.merge(leak_free_feedback_config())
