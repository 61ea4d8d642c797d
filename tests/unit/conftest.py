"""Fixtures shared by unit test modules (their helpers live in tests/support)."""

from tests.support.traffic import served  # noqa: F401 (a fixture: pytest finds it here)
