"""Stage constants, and what the "auto" values of the ``preprocess:`` config section resolve to."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from indextts_core.config import PreprocessConfig

#: Bump when the index changes for the same inputs (invalidates cached results).
STAGE_VERSION = "3"
#: Bump when the feature values change for the same audio and models (names a new feature set,
#: so every clip is processed again); kept apart from the index's version on purpose.
FEATURES_VERSION = "2"  # 2: the speaker-path reading, the half-padded frame kept
SAMPLE_RATE = 16000
CODES_PER_SECOND = 50
CPU_BATCH_SECONDS = 60.0  # padded audio seconds per batch without a GPU


def resolved_device(cfg: PreprocessConfig) -> torch.device:
    """The device to extract on: ``device: auto`` is CUDA when there is one, else the CPU."""
    if cfg.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(cfg.device)


def batch_clips(cfg: PreprocessConfig) -> int | None:
    """Most clips per batch; None (``batch_size: auto``): no cap, only the batch's audio seconds."""
    return None if cfg.batch_size == "auto" else cfg.batch_size


def batch_seconds_setting(cfg: PreprocessConfig) -> float | None:
    """Padded audio seconds per batch as configured; None (``max_batch_seconds: auto``): probe (CPU: 60)."""
    return None if cfg.max_batch_seconds == "auto" else cfg.max_batch_seconds


def decode_workers(cfg: PreprocessConfig) -> int:
    """Audio decoding threads: ``workers: auto`` (or 0) is one per CPU."""
    return (0 if cfg.workers == "auto" else cfg.workers) or os.cpu_count() or 1
