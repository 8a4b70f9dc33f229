"""The whole stage in one process: plan, process every unit, assemble (the flow runs units in parallel)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from indextts_core.config import PreprocessConfig
from indextts_core.model.bundle import ModelBundle
from indextts_core.preprocess.clips import Clip
from indextts_core.preprocess.extract import (
    Extract,
    FeatureExtractor,
    UnitResult,
    decode_clip_audio,
    probe_batch_seconds,
    process_unit,
)
from indextts_core.preprocess.index import PreprocessResult, assemble, checkpoint_files_sha256
from indextts_core.preprocess.planning import Plan, plan, read_units
from indextts_core.preprocess.settings import CPU_BATCH_SECONDS, batch_seconds_setting, resolved_device
from indextts_core.utils.fileio import sha256_file
from indextts_core.utils.oom import BackoffEvent


def preprocess(
    clips: Sequence[Clip],
    bundle: ModelBundle,
    tokenizer_path: Path,
    frontend: Any,
    out_dir: Path,
    feature_root: Path | None = None,
    cfg: PreprocessConfig | None = None,
    storage: Any | None = None,
    extract: Extract | None = None,
    on_backoff: Callable[[BackoffEvent], None] | None = None,
    *,
    min_duration_s: float,
    max_duration_s: float,
) -> PreprocessResult:
    """Plan, process every unit in this process, and assemble (the CLI's path; the flow parallelises units).

    ``cfg`` is the ``preprocess:`` section (default: its defaults); the duration limits come from
    the ``ingest:`` section.  Features go to ``feature_root/<feature set>/`` (default
    ``out_dir/features``); ``extract`` replaces the models (tests inject faults through it).
    """
    from indextts_core.text.encoder import open_text_encoder
    from indextts_core.text.extend_bpe import check_frontend

    cfg = cfg if cfg is not None else PreprocessConfig()
    started = time.monotonic()
    check_frontend(tokenizer_path, frontend.fingerprint())
    encoder = open_text_encoder(tokenizer_path, bundle.is_v25, frontend=frontend)
    root = Path(feature_root) if feature_root else Path(out_dir) / "features"
    p = plan(clips, encoder, bundle, root, cfg, storage)
    device = resolved_device(cfg)
    units: list[UnitResult] = []
    if p.units:
        extract = extract or FeatureExtractor(bundle, device, cfg.cond_max_seconds)
        batch_seconds = batch_seconds_setting(cfg) or _probe_on_longest(
            extract, p, cfg, device, storage, min_duration_s=min_duration_s, max_duration_s=max_duration_s)
        from indextts_core.utils.progress import track

        for unit in track(p.units, description="preprocessing"):
            units.append(process_unit(unit, extract, p.feature_dir, cfg, bundle.gpt_config.max_mel_tokens,
                                      batch_seconds, storage, on_backoff, min_duration_s=min_duration_s,
                                      max_duration_s=max_duration_s))
    ref = os.path.relpath(p.feature_dir, out_dir)
    return assemble(clips, p, read_units(p.feature_dir), Path(out_dir), tokenizer_path, frontend.fingerprint(), units,
                    ref, started, base_gpt_sha256=sha256_file(bundle.gpt_path),
                    base_files=checkpoint_files_sha256(bundle))


def _probe_on_longest(extract: Extract, p: Plan, cfg: PreprocessConfig, device: torch.device, storage: Any, *,
                      min_duration_s: float, max_duration_s: float) -> float:
    if device.type != "cuda":
        return CPU_BATCH_SECONDS
    uris = [uri for unit in p.units for _, uri in unit]
    longest = []
    for uri in uris[:64]:  # a sample is enough to find long clips; the probe uses the longest
        wave, _, _ = decode_clip_audio(uri, cfg, storage, min_duration_s=min_duration_s, max_duration_s=max_duration_s)
        if wave is not None:
            longest.append(wave)
    return probe_batch_seconds(extract, longest, device)
