"""Clips to preprocess: the Clip row and reading clips from ingested manifests."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from indextts_core.store.objects import STORE_SCHEME

if TYPE_CHECKING:
    from indextts_core.config import IngestConfig


@dataclass(frozen=True)
class Clip:
    """One row to preprocess (from an ingested manifest)."""

    id: str
    audio: str
    text: str
    speaker: str
    language: str
    split: str  # "train" | "val"
    audio_sha256: str | None = None
    emotion: str | None = None


def reject_row(clip: Clip, code: str, reason: str) -> dict[str, Any]:
    """One line of ``rejects.jsonl``."""
    return {"id": clip.id, "audio": clip.audio, "split": clip.split, "reason_code": code, "reason": reason}


def clips_from_manifests(splits: dict[str, Path], language: str | None = None) -> list[Clip]:
    """Clips of ingested manifests, e.g. ``{"train": train.jsonl, "val": val.jsonl}``; a bad row names its line.

    Relative audio paths are resolved against the manifest's folder; ``s3://`` and ``store:`` URIs
    (audio in the run's artifact store, as ingest records it) are kept as they are.
    """
    from indextts_core.data.manifest import parse_row, read_jsonl_manifest
    from indextts_core.errors import ManifestError

    clips = []
    for split, path in splits.items():
        for raw in read_jsonl_manifest(path, language=language):
            try:
                row = parse_row(raw)
            except ValueError as e:
                raise ManifestError(f"{raw.where}: {e} (run 'indextts-train ingest' on raw manifests first)") from None
            audio = row.audio if row.audio.startswith(("s3://", STORE_SCHEME)) or Path(row.audio).is_absolute() \
                else str(Path(raw.base_dir) / row.audio)
            extra = row.model_extra or {}
            clips.append(Clip(id=row.id, audio=audio, text=row.text, speaker=row.speaker, language=row.language,
                              split=split, audio_sha256=extra.get("audio_sha256"), emotion=row.emotion))
    return clips


def clips_for_manifest(manifest: Path, ingest: IngestConfig, seed: int, language: str | None = None) -> list[Clip]:
    """Clips of one manifest with their train/val split.

    An ingested ``manifest.jsonl`` next to its ``train.jsonl`` and ``val.jsonl`` keeps that split;
    otherwise the split is computed the way ingest computes it (same ``ingest`` settings and
    ``seed``, same result).
    """
    from indextts_core.data.split import split_by_speaker

    train, val = manifest.parent / "train.jsonl", manifest.parent / "val.jsonl"
    if manifest.name == "manifest.jsonl" and train.is_file() and val.is_file():
        return clips_from_manifests({"train": train, "val": val}, language=language)
    clips = clips_from_manifests({"train": manifest}, language=language)
    rows = [{"id": c.id, "speaker": c.speaker, "language": c.language} for c in clips]
    _, val_rows = split_by_speaker(rows, ingest.val_fraction, ingest.val_min_speaker_clips, seed, ingest.val_speakers)
    val_ids = {r["id"] for r in val_rows}
    return [replace(c, split="val") if c.id in val_ids else c for c in clips]
