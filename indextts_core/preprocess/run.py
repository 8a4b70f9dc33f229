"""The stage: plan, run the units wherever a runner runs them, index; the same steps for the flow and for tests.

:func:`preprocess` runs :func:`~indextts_core.preprocess.planning.plan_units`, the units (each by
:func:`run_unit`, through the ``runner``: by default :func:`run_in_process`, one after the other here),
then :func:`index_features`.  The orchestrated flow (``flows/preprocess.py``) runs the very same steps as
Prefect tasks, because its index is the cached task of the stage: the plan task calls ``plan_units``,
each unit task calls :func:`load_extraction` (once per worker) and :func:`run_unit`, and the index task
calls :func:`index_features`.  What differs is injected: the feature store (the artifact store's
:class:`~indextts_core.preprocess.features.StoredFeatures`, or a local
:class:`~indextts_core.preprocess.features.FeatureFolder`), where units run, and the model digests that
name the feature set (:func:`~indextts_core.preprocess.planning.featureset_id`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from indextts_core.config import PreprocessConfig
from indextts_core.model.bundle import ModelBundle
from indextts_core.preprocess.extract import (
    Extract,
    FeatureExtractor,
    UnitResult,
    decode_clip_audio,
    probe_batch_seconds,
    process_unit,
)
from indextts_core.preprocess.features import FeatureStore
from indextts_core.preprocess.index import PreprocessResult, assemble, checkpoint_files_sha256
from indextts_core.preprocess.planning import Prepared, plan_units, unit_name
from indextts_core.preprocess.settings import CPU_BATCH_SECONDS, batch_seconds_setting, resolved_device
from indextts_core.utils.oom import BackoffEvent

#: One unit of work: (audio key, audio URI) pairs.
Unit = list[tuple[str, str]]
#: Processing probes the GPU batch budget on the longest of this many clips of the first unit it runs.
PROBE_CLIPS = 32


@dataclass(frozen=True)
class UnitWork:
    """What processing any unit of one stage run needs besides the unit itself.

    ``extract`` replaces the models (tests inject faults through it); without it, whoever runs units
    loads the bundle's models where they run (:func:`load_extraction`).
    """

    features: FeatureStore
    cfg: PreprocessConfig
    bundle: ModelBundle
    min_duration_s: float  # the ingest: duration limits
    max_duration_s: float
    storage: Any | None = None  # how store: and s3:// audio is read
    on_backoff: Callable[[BackoffEvent], None] | None = None
    extract: Extract | None = None


#: Runs the planned units (all of them, wherever it likes) and returns their results.
UnitRunner = Callable[[list[Unit], UnitWork], list[UnitResult]]


def load_extraction(work: UnitWork, sample: Unit) -> tuple[Extract, float]:
    """The models on the configured device and the padded audio seconds per batch: as configured; without a
    GPU ``CPU_BATCH_SECONDS``; else probed on the longest clips among the first ``PROBE_CLIPS`` of ``sample``."""
    cfg = work.cfg
    device = resolved_device(cfg)
    extract = work.extract or FeatureExtractor(work.bundle, device, cfg.cond_max_seconds)
    configured = batch_seconds_setting(cfg)
    if configured:
        return extract, configured
    if device.type != "cuda":
        return extract, CPU_BATCH_SECONDS
    decoded = (decode_clip_audio(uri, cfg, work.storage, min_duration_s=work.min_duration_s,
                                 max_duration_s=work.max_duration_s)[0] for _, uri in sample[:PROBE_CLIPS])
    return extract, probe_batch_seconds(extract, [w for w in decoded if w is not None], device)


def run_unit(unit: Unit, work: UnitWork, extract: Extract, batch_seconds: float) -> UnitResult:
    """Process one unit in the feature store's workspace (shard, then record), then keep it in the store."""
    name = unit_name([k for k, _ in unit])
    with work.features.workspace() as folder:
        result = process_unit(unit, extract, folder, work.cfg, work.bundle.gpt_config.max_mel_tokens, batch_seconds,
                              work.storage, work.on_backoff, min_duration_s=work.min_duration_s,
                              max_duration_s=work.max_duration_s)
        work.features.save_unit(folder, name)
    return result


def run_in_process(units: list[Unit], work: UnitWork) -> list[UnitResult]:
    """The default runner: the models loaded once, the units one after the other in this process."""
    from indextts_core.utils.progress import track

    extract, batch_seconds = load_extraction(work, units[0])
    return [run_unit(unit, work, extract, batch_seconds) for unit in track(units, description="preprocessing")]


def index_features(prep: Prepared, features: FeatureStore, out_dir: Path, units: Sequence[UnitResult],
                   started: float) -> PreprocessResult:
    """Write the index of ``prep``'s clips into ``out_dir`` from the finished units in ``features``.

    ``units``: the units this run processed (for the run's numbers); ``started``: when the run began.
    """
    p = plan_units(prep, features, unit_clips=1)  # the index needs the plan's texts, keys and records, not its units
    return assemble(prep.clips, p, p.records, Path(out_dir), prep.tokenizer, prep.frontend, units,
                    features.reference(Path(out_dir)), started, base_gpt_sha256=prep.gpt_sha256,
                    base_files=checkpoint_files_sha256(prep.bundle))


def preprocess(prep: Prepared, features: FeatureStore, out_dir: Path, cfg: PreprocessConfig, *,
               min_duration_s: float, max_duration_s: float, storage: Any | None = None,
               runner: UnitRunner = run_in_process, extract: Extract | None = None,
               on_backoff: Callable[[BackoffEvent], None] | None = None) -> PreprocessResult:
    """Plan the audio ``features`` lacks, process it through ``runner``, and index every clip into ``out_dir``.

    ``prep``: the inputs (:func:`~indextts_core.preprocess.planning.prepare`); ``cfg``: the ``preprocess:``
    section; the duration limits come from the ``ingest:`` section; ``extract`` and ``on_backoff`` as in
    :class:`UnitWork`.
    """
    started = time.monotonic()
    p = plan_units(prep, features, cfg.unit_clips)
    work = UnitWork(features=features, cfg=cfg, bundle=prep.bundle, min_duration_s=min_duration_s,
                    max_duration_s=max_duration_s, storage=storage, on_backoff=on_backoff, extract=extract)
    results = runner(p.units, work) if p.units else []
    return index_features(prep, features, out_dir, results, started)
