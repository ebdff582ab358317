"""Shared fixtures. Feature fixtures live in tests/fixtures/ and are listed in pytest_plugins."""

from __future__ import annotations

pytest_plugins: list[str] = ["tests.fixtures.kafka"]
