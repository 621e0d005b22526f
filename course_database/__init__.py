"""The course's one database switch: ``COURSE_DATABASE_URL``.

Unset, every lesson runs on an in-memory SQLite database, as it always has. Set to a database URL
(for example ``postgresql+psycopg://postgres@127.0.0.1:5432/postgres``), the lessons that use
``course_engine()`` run on that database instead. ``python tools/postgres_server.py`` starts a
throwaway PostgreSQL server and prints the line that sets it.
"""

import os

from sqlalchemy import Engine, create_engine, event

VARIABLE = "COURSE_DATABASE_URL"
DEFAULT_URL = "sqlite://"


def course_database_url() -> str:
    """The URL the course runs on: ``COURSE_DATABASE_URL`` if set, else in-memory SQLite."""
    return os.environ.get(VARIABLE) or DEFAULT_URL


def course_engine(schema: str | None = None, **options: object) -> Engine:
    """An engine on the course's database; ``options`` go to ``create_engine()`` unchanged.

    On PostgreSQL, ``schema`` names a schema of the lesson's own, made empty here and first on
    every connection's search_path: each run of a lesson starts from no tables, and leaves the
    server's other tables alone. (In-memory SQLite starts empty anyway: it is ignored there.)
    """
    engine = create_engine(course_database_url(), **options)
    if schema is None or engine.dialect.name != "postgresql":
        return engine
    quoted = engine.dialect.identifier_preparer.quote_identifier(schema)

    @event.listens_for(engine, "connect")
    def search_path(dbapi_connection, connection_record) -> None:
        autocommit = dbapi_connection.autocommit
        dbapi_connection.autocommit = True  # SET SESSION outlives the transaction it is sent in
        with dbapi_connection.cursor() as cursor:
            cursor.execute(f"SET SESSION search_path TO {quoted}")
        dbapi_connection.autocommit = autocommit

    with engine.begin() as connection:
        connection.exec_driver_sql(f"DROP SCHEMA IF EXISTS {quoted} CASCADE")
        connection.exec_driver_sql(f"CREATE SCHEMA {quoted}")
    return engine
