"""Fault tests: each reproduces a scenario of the fault campaign (hostile input, a bad day)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture(scope="session", autouse=True)
def prefect_api(prefect_harness: None) -> Iterator[None]:
    yield
