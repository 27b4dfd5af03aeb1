"""Fixtures of the e-mail tests come from tests/conftest.py: ``certificate`` (TLS servers),
``sqlite_store`` and ``any_store`` (migrated stores; the claim queries differ between SQLite and
PostgreSQL)."""
