"""Deterministic train/validation split, stratified by speaker and language."""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Sequence
from typing import Any


def _rank(seed: int, speaker: str, clip_id: str) -> str:
    return hashlib.sha256(f"{seed}\x00{speaker}\x00{clip_id}".encode()).hexdigest()


def split_by_speaker(
    rows: Sequence[dict[str, Any]],
    val_fraction: float,
    min_clips_for_val: int,
    seed: int,
    val_speakers: Sequence[str] = (),
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Split rows into (train, val).

    Speakers named in ``val_speakers`` are held out entirely: all their clips go to validation,
    so validation also measures speakers the model never trained on (zero-shot prompting).

    Rows are grouped by (speaker, language).  A group with at least ``min_clips_for_val`` clips
    puts ``max(1, round(n * val_fraction))`` of them in validation (never all of them); smaller
    groups stay in train, so a speaker with one clip is always in train.  Which clips go to
    validation depends only on the seed, the speaker and the clip ids (a hash ranking), not on
    row order, and adding clips to a group moves few existing clips.  Both outputs keep the
    input order.
    """
    held_out = set(val_speakers)
    val_ids: set[str] = {r["id"] for r in rows if r["speaker"] in held_out}
    if val_fraction <= 0:
        return [r for r in rows if r["id"] not in val_ids], [r for r in rows if r["id"] in val_ids]
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        if row["speaker"] not in held_out:
            groups[(row["speaker"], row["language"])].append(row)
    for (speaker, _lang), members in groups.items():
        n = len(members)
        if n < min_clips_for_val:
            continue
        k = min(max(1, round(n * val_fraction)), n - 1)
        ranked = sorted(members, key=lambda r: _rank(seed, speaker, r["id"]))
        val_ids.update(r["id"] for r in ranked[:k])
    train = [r for r in rows if r["id"] not in val_ids]
    val = [r for r in rows if r["id"] in val_ids]
    return train, val
