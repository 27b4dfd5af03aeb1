"""The personal-assistant backend (this distribution ships only its background workers)."""
