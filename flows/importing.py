"""``indextts-train import``: bring a community trainer's processed data into the pipeline.

The JarodMica / AM-lineage trainers leave ``processed_data/*_manifest.jsonl`` and
``GPT_pairs_*.jsonl`` pointing at per-clip ``.npy`` features (codes, speaker conditioning,
emotion vector).  This command

1. reads and merges those files (:mod:`indextts_core.preprocess.community`), every unusable row
   reported with its ``file:line``;
2. joins them with the raw rows (audio, text, speaker, language): from ``--manifest`` (the seed's
   ``dataset/manifest.jsonl``, any field names) or from the community rows themselves;
3. opens the base checkpoint the run uses (the download stage, as every command does), recomputes a
   seeded sample of clips with it and compares; only when they match are the community features
   written into the store's feature set of that checkpoint, in the layout the preprocess stage
   writes, so the next ``preprocess`` (or ``run``) reuses them and computes only the rest;
4. writes ``manifest.jsonl`` (our raw format, audio paths relative to it, so ``ingest`` carries the
   audio into the store as it does for any manifest) for ``ingest`` / ``run``, and
   ``import-report.json``.

Their pair files give features, not pairs: pairs are drawn again by the ``pairs`` stage (fresh
same-speaker prompts every epoch), and text is tokenized again by the extended tokenizer.
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from indextts_core.config import PipelineConfig
from indextts_core.data.manifest import RawRow, map_fields, read_manifest
from indextts_core.errors import InputError
from indextts_core.preprocess.community import ImportReport, import_features
from indextts_core.preprocess.community_files import CommunityClip, read_community_files
from indextts_core.preprocess.extract import decode_clip_audio
from indextts_core.store.objects import read_uri_bytes
from indextts_core.utils.fileio import sha256_bytes, write_json, write_jsonl

log = logging.getLogger(__name__)

RAW_FIELDS = ("audio", "text", "speaker", "language")


@dataclass
class ImportOutcome:
    report: ImportReport
    manifest: Path  # our raw manifest of the clips that have audio and text
    report_path: Path
    featureset: str
    rows: int  # rows in ``manifest``
    without_text: list[str]  # clip ids left out of ``manifest`` (no text anywhere)


def raw_rows(manifest: Path | None, fields: dict[str, str]) -> dict[str, dict[str, Any]]:
    """id -> {audio (absolute or URI), text, speaker, language} from a raw manifest (our names, theirs mapped)."""
    if manifest is None:
        return {}
    rows: dict[str, dict[str, Any]] = {}
    for raw in read_manifest(manifest):
        if raw.error is not None or raw.data is None:
            raise InputError(f"{raw.where}: {raw.error}")
        raw.field_map = dict(fields)
        map_fields(raw)
        data = raw.data
        if data.get("id") is None:
            raise InputError(f"{raw.where}: row has no id (the community files join on it)")
        rows[str(data["id"])] = {k: data.get(k) or raw.defaults.get(k) for k in RAW_FIELDS} | {
            "audio": _absolute(data.get("audio"), raw)}
    return rows


def _absolute(audio: Any, raw: RawRow) -> str | None:
    if not isinstance(audio, str) or not audio.strip():
        return None
    if "://" in audio or os.path.isabs(audio):
        return audio
    return os.path.abspath(os.path.join(raw.base_dir, audio))


def _join(clips: dict[str, CommunityClip], raw: dict[str, dict[str, Any]]) -> None:
    """Fill each clip's audio/text/speaker/language from the raw rows (the raw manifest wins)."""
    for cid, clip in clips.items():
        row = raw.get(cid, {})
        for name in RAW_FIELDS:
            if row.get(name):
                setattr(clip, name, str(row[name]))


def import_community(cfg: PipelineConfig, assets: dict[str, Any], files: list[Path], manifest: Path | None,
                     output_dir: Path, *, fields: dict[str, str] | None = None, spot_checks: int = 8) -> ImportOutcome:
    """Import ``files`` against the downloaded base checkpoint (``assets``: the download stage's refs)."""
    from flows.local_inputs import store_for
    from indextts_core.preprocess.extract import FeatureExtractor
    from indextts_core.preprocess.settings import resolved_device
    from tasks.artifacts import ArtifactRef
    from indextts_core.preprocess.features import feature_prefix
    from tasks.preprocess import checkpoint_bundle, featureset_for

    def ref(name: str) -> ArtifactRef | None:
        return ArtifactRef.model_validate(assets[name]) if assets.get(name) else None

    store = store_for(cfg)
    clips, rejects = read_community_files(files)
    if not clips and not rejects:
        raise InputError(f"{', '.join(map(str, files))}: no rows")
    _join(clips, raw_rows(manifest, fields or {}))
    checkpoint = ref("checkpoint")
    assert checkpoint is not None
    bundle = checkpoint_bundle(cfg, store, checkpoint, ref("w2v_bert"), ref("semantic_codec"))
    bundle.require_encoders()
    featureset = featureset_for(cfg, checkpoint, ref("w2v_bert"), ref("semantic_codec"), bundle.hidden_layer)
    prefix = feature_prefix(featureset)
    p, ing = cfg.preprocess, cfg.ingest

    def audio_of(clip: CommunityClip) -> tuple[str | None, Any, float]:
        if not clip.audio:
            return None, None, 0.0
        try:
            data = read_uri_bytes(clip.audio, cfg.storage)
        except (OSError, InputError):  # ObjectNotFoundError is both
            return None, None, 0.0
        wave, _code, _reason = decode_clip_audio(clip.audio, p, cfg.storage, min_duration_s=ing.min_duration_s,
                                                 max_duration_s=ing.max_duration_s, data=data)  # read once
        key = sha256_bytes(data)
        return key, wave, (len(wave) / 16000 if wave is not None else 0.0)

    extractor = FeatureExtractor(bundle, resolved_device(p), p.cond_max_seconds)
    with tempfile.TemporaryDirectory(prefix="indextts-import-") as tmp:
        local = Path(tmp) / featureset
        local.mkdir()
        before = set()
        for key in store.list(prefix):  # what the store's feature set already holds (records only)
            name = key.rsplit("/", 1)[-1]
            if name.startswith("unit-") and name.endswith(".json"):
                store.get_file(key, local / name)
                before.add(name)
        report = import_features(clips, local, extractor, audio_of=audio_of,
                                 codebook_size=bundle.codec_config.codebook_size,
                                 max_mel_tokens=bundle.gpt_config.max_mel_tokens, spot_checks=spot_checks,
                                 seed=cfg.run.seed, unit_clips=p.unit_clips, rejects=rejects)
        new = [f for f in sorted(local.iterdir()) if f.is_file() and f.name not in before]
        for f in sorted(new, key=lambda f: f.suffix == ".json"):  # shards first, each unit's record last
            store.put_file(f, f"{prefix}/{f.name}")
    output_dir.mkdir(parents=True, exist_ok=True)
    rows, without_text = [], []
    for cid, clip in sorted(clips.items()):
        if not clip.audio:
            continue
        if not clip.text:
            without_text.append(cid)
            continue
        audio = clip.audio if "://" in clip.audio else os.path.relpath(clip.audio, output_dir.resolve())
        rows.append({"id": cid, "audio": Path(audio).as_posix(), "text": clip.text,
                     **{k: getattr(clip, k) for k in ("speaker", "language") if getattr(clip, k)}})
    manifest_out = output_dir / "manifest.jsonl"
    write_jsonl(manifest_out, rows)
    report_path = output_dir / "import-report.json"
    write_json(report_path, {"featureset": featureset, "store": store.uri_for(prefix), "manifest_rows": len(rows),
                             "without_text": without_text, **report.to_dict()})
    return ImportOutcome(report, manifest_out, report_path, featureset, len(rows), without_text)
