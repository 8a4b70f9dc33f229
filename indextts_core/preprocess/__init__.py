"""Preprocessing: text ids, semantic codes, speaker latents and emotion vectors for every clip.

Per clip: front-end text -> token ids; 16 kHz audio -> Wav2Vec2-BERT layer-17 features -> 50 Hz
semantic codes; the frozen base GPT's speaker latents (32 x D) and emotion vector (D), from at most
``cond_max_seconds`` of audio (inference crops prompts to 15 s).  Batches are sorted by length and
every output is trimmed to its clip (codes from length-masked features, latents with
``exact_padding``), so a clip gets the same numbers alone or in any batch.

Three phases, run the same way by the orchestrated flow and by a direct call:

* :func:`prepare` and :func:`plan_units` (``planning``): tokenize and gate the text, then find which
  audio still needs features.  Features are keyed by the audio file's sha256 inside a *feature set*
  named by the content digests of the model folders (:func:`featureset_id`, :func:`model_digests`:
  the store's digests of the model assets, or :func:`model_folder_digests` of local folders, the same
  value for the same files), so adding clips processes only the new audio, and nothing is recomputed
  for unchanged models.  Work is cut into units of ``unit_clips`` audio keys in a fixed order.
* :func:`run_unit` (``run``, over :func:`process_unit` in ``extract``): decode, gate (duration,
  silence, clipping), extract, write one shard of features plus a unit record (processed keys,
  rejected keys with reasons), both atomically and the record last, and keep them in the feature
  store (``features``: a local :class:`FeatureFolder` or the artifact store's :class:`StoredFeatures`).
  An interrupted run resumes at the first unit without a record.
* :func:`index_features` (``run``, over :func:`assemble` in ``index``): the index
  (``train_manifest.jsonl``, ``val_manifest.jsonl``), the text ids (``text_ids.safetensors``, int16),
  ``rejects.jsonl`` and the report.

:func:`preprocess` (``run``) does all three, the units through a runner (by default one after the
other in this process); the flow (``flows/preprocess.py``) runs them as Prefect tasks, units in
parallel on threads or Dask.  Settings come from the ``preprocess:`` config section
(:class:`~indextts_core.config.PreprocessConfig`, its "auto" values resolved in ``settings``) plus the
``ingest:`` duration limits, passed explicitly.  Clips come from ingested manifests (``clips``).

Every clip of the input ends up in exactly one place: an index row or a rejects line with a reason.
"""

from __future__ import annotations

from indextts_core.preprocess.clips import Clip, clips_for_manifest, clips_from_manifests
from indextts_core.preprocess.extract import (
    Extract,
    FeatureExtractor,
    UnitResult,
    decode_clip_audio,
    length_batches,
    probe_batch_seconds,
    process_unit,
)
from indextts_core.preprocess.features import FeatureFolder, FeatureStore, StoredFeatures, feature_prefix
from indextts_core.preprocess.index import PreprocessResult, assemble, checkpoint_files_sha256
from indextts_core.preprocess.planning import (
    Plan,
    Prepared,
    TextItem,
    UnitRecords,
    featureset_id,
    folder_digest,
    make_plan,
    model_digests,
    model_folder_digests,
    plan_units,
    prepare,
    read_units,
    tokenize,
    unit_name,
)
from indextts_core.preprocess.run import (
    Unit,
    UnitRunner,
    UnitWork,
    index_features,
    load_extraction,
    preprocess,
    run_in_process,
    run_unit,
)
from indextts_core.preprocess.settings import (
    CODES_PER_SECOND,
    CPU_BATCH_SECONDS,
    SAMPLE_RATE,
    STAGE_VERSION,
    batch_clips,
    batch_seconds_setting,
    decode_workers,
    resolved_device,
)

__all__ = [
    # settings
    "STAGE_VERSION", "SAMPLE_RATE", "CODES_PER_SECOND", "CPU_BATCH_SECONDS",
    "resolved_device", "batch_clips", "batch_seconds_setting", "decode_workers",
    # clips
    "Clip", "clips_from_manifests", "clips_for_manifest",
    # planning
    "TextItem", "Plan", "Prepared", "UnitRecords", "read_units", "unit_name", "featureset_id", "model_digests",
    "folder_digest", "model_folder_digests", "tokenize", "prepare", "make_plan", "plan_units",
    # where features live
    "FeatureStore", "FeatureFolder", "StoredFeatures", "feature_prefix",
    # extraction
    "FeatureExtractor", "Extract", "UnitResult", "decode_clip_audio", "length_batches", "probe_batch_seconds",
    "process_unit",
    # index
    "PreprocessResult", "assemble", "checkpoint_files_sha256",
    # the stage
    "Unit", "UnitWork", "UnitRunner", "load_extraction", "run_unit", "run_in_process", "index_features",
    "preprocess",
]
