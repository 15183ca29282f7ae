from __future__ import annotations

import pytest

from tests.fakes import FakeClock, ListChannel


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def channel() -> ListChannel:
    return ListChannel()
