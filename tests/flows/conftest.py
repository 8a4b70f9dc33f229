"""Flow tests run real Prefect (a temporary API server for the session) and real MLflow (sqlite)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture(scope="session", autouse=True)
def prefect_api(prefect_harness: None) -> Iterator[None]:
    yield
