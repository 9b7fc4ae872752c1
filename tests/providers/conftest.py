from __future__ import annotations

import pytest

from tests.providers.common import NOW
from tests.support import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    """A hand-driven clock for the provider (and, when a test says so, the fake)."""
    return FakeClock(NOW)
