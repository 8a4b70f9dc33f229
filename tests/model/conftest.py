"""The official tiny GPT and its golden cases (tests/fixtures/indextts2_gpt_tiny), shared by the parity tests."""

from __future__ import annotations

import pytest
import torch

from tests_support import FIXTURES

GPT_DIR = FIXTURES / "indextts2_gpt_tiny"


@pytest.fixture(scope="module")
def cases() -> dict:
    return torch.load(GPT_DIR / "cases.pt", map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def model():
    """The official tiny GPT, loaded strictly (each test module gets its own copy)."""
    from indextts_core.model.checkpoint import load_gpt

    torch.set_num_threads(2)
    return load_gpt(GPT_DIR).eval()
