"""The server fixtures (real Redis prefix, migrated SQLite database, the app over HTTP), shared here."""

from tests.server.conftest import app_server, db_url, empty_db, prefix, settings  # noqa: F401
