"""The domain store: e-mail outbox, calendar events and AI jobs, with SQLAlchemy 2.

SQLite under DATA_DIR by default, PostgreSQL through DATABASE_URL; migrations with Alembic
(``celery ... db upgrade``). engine.py makes one engine per process and URL (never shared
across the prefork fork) and a session per unit of work.
"""
