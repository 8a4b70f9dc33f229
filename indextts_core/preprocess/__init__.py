"""Preprocessing: text ids, semantic codes, speaker latents and emotion vectors for every clip.

Per clip: front-end text -> token ids; 16 kHz audio -> Wav2Vec2-BERT layer-17 features -> 50 Hz
semantic codes; the frozen base GPT's speaker latents (32 x D) and emotion vector (D), from at most
``cond_max_seconds`` of audio (inference crops prompts to 15 s).  Batches are sorted by length and
every output is trimmed to its clip (codes from length-masked features, latents with
``exact_padding``), so a clip gets the same numbers alone or in any batch.

Three phases, each usable on its own (the orchestrated flow runs ``process_unit`` as parallel tasks):

* :func:`plan` (``planning``): tokenize and gate the text, then find which audio still needs
  features.  Features are keyed by the audio file's sha256 inside a *feature set* named by the
  hashes of every model file, so adding clips processes only the new audio, and nothing is
  recomputed for unchanged models.  Work is cut into units of ``unit_clips`` audio keys in a fixed
  order.
* :func:`process_unit` (``extract``): decode, gate (duration, silence, clipping), extract, write one
  shard of features plus a unit record (processed keys, rejected keys with reasons), both
  atomically and the record last: an interrupted run resumes at the first unit without a record.
* :func:`assemble` (``index``): the index (``train_manifest.jsonl``, ``val_manifest.jsonl``), the
  text ids (``text_ids.safetensors``, int16), ``rejects.jsonl`` and the report.

:func:`preprocess` (``run``) does all three in this process.  Settings come from the
``preprocess:`` config section (:class:`~indextts_core.config.PreprocessConfig`, its "auto" values
resolved in ``settings``) plus the ``ingest:`` duration limits, passed explicitly.  Clips come from
ingested manifests (``clips``).

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
from indextts_core.preprocess.index import PreprocessResult, assemble, checkpoint_files_sha256
from indextts_core.preprocess.planning import (
    Plan,
    TextItem,
    UnitRecords,
    bundle_models,
    featureset_id,
    make_plan,
    plan,
    read_units,
    tokenize,
    unit_name,
)
from indextts_core.preprocess.run import preprocess
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

#: The old private name of :func:`decode_clip_audio` (tasks/preprocess.py); to be removed.
_decode = decode_clip_audio

__all__ = [
    # settings
    "STAGE_VERSION", "SAMPLE_RATE", "CODES_PER_SECOND", "CPU_BATCH_SECONDS",
    "resolved_device", "batch_clips", "batch_seconds_setting", "decode_workers",
    # clips
    "Clip", "clips_from_manifests", "clips_for_manifest",
    # planning
    "TextItem", "Plan", "UnitRecords", "read_units", "unit_name", "featureset_id", "bundle_models", "tokenize",
    "make_plan", "plan",
    # extraction
    "FeatureExtractor", "Extract", "UnitResult", "decode_clip_audio", "_decode", "length_batches",
    "probe_batch_seconds", "process_unit",
    # index
    "PreprocessResult", "assemble", "checkpoint_files_sha256",
    # the whole stage
    "preprocess",
]
