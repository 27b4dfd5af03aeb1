"""Utilities: error handling and dead letters, safe file cleanup, monitoring."""
