"""The course's one database switch: ``COURSE_DATABASE_URL``.

Unset, every lesson runs on an in-memory SQLite database, as it always has. Set to a database URL
(for example ``postgresql+psycopg://postgres@127.0.0.1:5432/postgres``), the lessons that use
``course_engine()`` run on that database instead. ``python tools/postgres_server.py`` starts a
throwaway PostgreSQL server and prints the line that sets it.
"""

import os

from sqlalchemy import Engine, create_engine

VARIABLE = "COURSE_DATABASE_URL"
DEFAULT_URL = "sqlite://"


def course_database_url() -> str:
    """The URL the course runs on: ``COURSE_DATABASE_URL`` if set, else in-memory SQLite."""
    return os.environ.get(VARIABLE) or DEFAULT_URL


def course_engine(**options: object) -> Engine:
    """An engine on the course's database; ``options`` go to ``create_engine()`` unchanged."""
    return create_engine(course_database_url(), **options)
