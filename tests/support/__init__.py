"""Test helpers: a private Redis server and real worker processes."""
