"""Importing the processed features of the community trainers (JarodMica / AM lineage).

Those trainers store, per clip, the same three things our preprocessing computes, as ``.npy`` files:
``codes`` (int32 (T,), semantic codes), ``condition`` (float32 (32, D), the frozen base GPT's speaker
conditioning latents: our speaker latents) and ``emo_vec`` (float32 (D,), the emotion vector), plus
``text_ids`` from their tokenizer (never reused: our pipeline tokenizes the text itself).  Two kinds of
JSON-lines files point at them, paths relative to the file's folder unless absolute:

* processed manifests (``train_manifest.jsonl``, ``val_manifest.jsonl``): one row per clip with
  ``id``, ``codes_path``, ``condition_path``, ``emo_vec_path`` (and ``text``, ``audio_path``, ...);
* pair files (``GPT_pairs_*.jsonl``): one row per (prompt, target) pair; the target clip gets its
  codes (and its emotion vector when ``target_emo_vec_path`` is given), the prompt clip its condition
  and emotion vector.

Rows are merged by clip id across rows and files.  The features are never trusted blindly (one known
bug of those trainers: with a preprocessing batch size above one, the codes of the shorter clips of a
batch carry the batch-mates' padded tail and ``code_len`` records the padded length):

1. :func:`read_community_files` reads and merges the files; every unusable row is a reject row naming
   its ``file:line``, and clips lacking a part are reported as incomplete (they are recomputed).
2. :func:`import_features` recomputes a seeded sample of the clips with our models
   (:func:`spot_check`) and compares; only if every sampled clip matches are the features written, in
   the feature-set layout the normal preprocess writes (:func:`write_imported`: shards + unit records),
   so ``planning.plan`` sees them as done and computes only the rest.  Every written clip's code count
   is also checked against its audio's duration (a padded tail shows there even outside the sample).

Nothing here trains on or tokenizes anything; the caller resolves the audio (``audio_of``).  Reading the
files is :mod:`indextts_core.preprocess.community_files`.  (Some 440 lines: the spot check, the writing
of the units and the import share the tolerances and one report; split, they would pass both around.)
"""

from __future__ import annotations

import logging
import math
import os
import random
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from indextts_core.errors import InputError
from indextts_core.preprocess.community_files import (
    CommunityClip,
    FeatureFileError,
    community_reject,
    load_clip_features,
)
from indextts_core.preprocess.extract import Extract
from indextts_core.preprocess.planning import read_units, unit_name
from indextts_core.preprocess.settings import CODES_PER_SECOND
from indextts_core.preprocess.shards import ClipFeatures, write_shard_hashed
from indextts_core.utils.fileio import write_json

log = logging.getLogger(__name__)

# Spot-check tolerances.  Both the speaker latents and the emotion vector must satisfy both tests:
#
# * cosine similarity (over the flattened array) >= MIN_COSINE = 0.999, i.e. a relative L2 error of at
#   most ~4.5 %; and
# * largest absolute difference <= MAX_ABS_OF_RMS = 0.1 x the RMS of our own vector (scaled by the RMS
#   so the same number holds for the 1280-wide release and the tiny test models).
#
# What must pass: float16 storage rounds each value by at most 2^-11 (~5e-4) of itself, so even an
# outlier at 20 x the RMS moves by 1e-2 x RMS and the cosine by ~1e-7; fp16/TF32 kernels and another
# batch composition (with masked padding) move values by ~1e-3..1e-2 relative, still well inside.
# What must fail: latents of another base GPT (another release, a fine-tuned conditioner, random
# weights) or of other audio (another resampler, trimmed audio, uncropped > 15 s prompts) are different
# vectors: cosines far below 0.999 and differences of the order of the RMS itself.  A GPT whose
# conditioner differs by under ~1 % would pass; its features are then interchangeable with ours.
# Codes are discrete and must be identical (a different codec, Wav2Vec2-BERT or feature layer changes
# them outright).
MIN_COSINE = 0.999
MAX_ABS_OF_RMS = 0.1
#: Codes a clip may have beyond/below ``duration x 50`` (frame rounding; resampling differences).
CODE_LENGTH_SLACK = 3


@dataclass
class SpotCheck:
    """Our extraction against theirs on a sample: ``passed``, why (``reason``) and one row per clip."""

    passed: bool
    reason: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    tolerances: dict[str, float] = field(default_factory=dict)

    COLUMNS = ("id", "codes_ours", "codes_theirs", "codes_equal", "latent_cosine", "latent_max_abs_rms",
               "emo_cosine", "emo_max_abs_rms", "ok", "problem")

    def table(self) -> str:
        """The rows as a fixed-width text table (for a CLI)."""
        def cell(v: Any) -> str:
            if isinstance(v, float):
                return f"{v:.6f}" if abs(v) <= 1.5 else f"{v:.3g}"
            return "" if v is None else str(v)

        grid = [list(self.COLUMNS)] + [[cell(r.get(c)) for c in self.COLUMNS] for r in self.rows]
        widths = [max(len(row[i]) for row in grid) for i in range(len(self.COLUMNS))]
        lines = ["  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip() for row in grid]
        return "\n".join([lines[0], "  ".join("-" * w for w in widths)] + lines[1:])

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "reason": self.reason, "tolerances": dict(self.tolerances),
                "rows": [dict(r) for r in self.rows]}


def _compare(ours: np.ndarray, theirs: np.ndarray) -> tuple[float, float, float]:
    """(cosine, max abs difference, max abs difference / RMS of ours)."""
    a, b = ours.astype(np.float64).ravel(), theirs.astype(np.float64).ravel()
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if na == 0.0 or nb == 0.0:
        cos = 1.0 if na == nb else 0.0
    else:
        cos = float(np.dot(a, b) / (na * nb))
    max_abs = float(np.max(np.abs(a - b))) if a.size else 0.0
    rms = na / math.sqrt(a.size) if a.size else 0.0
    rel = max_abs / rms if rms > 0 else (0.0 if max_abs == 0.0 else math.inf)
    return cos, max_abs, rel


def _compare_clip(clip: CommunityClip, ours: tuple[np.ndarray, np.ndarray, np.ndarray],
                  theirs: tuple[np.ndarray, np.ndarray, np.ndarray], min_cosine: float,
                  latent_atol: float, emo_atol: float) -> dict[str, Any]:
    oc, ol, oe = np.asarray(ours[0]).astype(np.int64), np.asarray(ours[1]), np.asarray(ours[2])
    tc, tl, te = theirs
    n = min(len(oc), len(tc))
    prefix_equal = bool(np.array_equal(oc[:n], tc[:n]))
    row: dict[str, Any] = {"id": clip.id, "codes_ours": int(len(oc)), "codes_theirs": int(len(tc)),
                           "codes_diff": int(len(tc) - len(oc)),
                           "codes_equal": bool(prefix_equal and len(oc) == len(tc)),
                           "padded_tail": bool(prefix_equal and len(tc) > len(oc))}
    problems = []
    if row["padded_tail"]:
        problems.append(f"padded tail: {len(tc) - len(oc)} extra codes after {len(oc)} equal to ours")
    elif not row["codes_equal"]:
        first = int(np.argmax(oc[:n] != tc[:n])) if not prefix_equal else n
        problems.append(f"codes differ ({len(tc)} theirs, {len(oc)} ours, first difference at {first})")
    for name, o, t, atol in (("latent", ol, tl, latent_atol), ("emo", oe, te, emo_atol)):
        label = "speaker latents" if name == "latent" else "emotion vector"
        if o.shape != t.shape:
            row[f"{name}_cosine"] = row[f"{name}_max_abs"] = row[f"{name}_max_abs_rms"] = None
            row[f"{name}_ok"] = False
            problems.append(f"{label}: shape {t.shape} theirs, {o.shape} ours")
            continue
        cos, max_abs, rel = _compare(o, t)
        row[f"{name}_cosine"], row[f"{name}_max_abs"], row[f"{name}_max_abs_rms"] = cos, max_abs, rel
        row[f"{name}_ok"] = bool(cos >= min_cosine and rel <= atol)
        if not row[f"{name}_ok"]:
            problems.append(f"{label}: cosine {cos:.6f} (min {min_cosine}), "
                            f"max |diff| {rel:.3g} x RMS (max {atol})")
    row["ok"] = not problems
    row["problem"] = "; ".join(problems) or None
    return row


def spot_check(samples: Sequence[tuple[CommunityClip, np.ndarray]], extract: Extract, *, codebook_size: int,
               min_cosine: float = MIN_COSINE, latent_atol: float = MAX_ABS_OF_RMS,
               emo_atol: float = MAX_ABS_OF_RMS) -> SpotCheck:
    """Recompute the features of ``samples`` (clip, 16 kHz mono float32 wave) with ``extract`` and compare.

    ``extract`` has the signature of ``FeatureExtractor.__call__``; it is called one clip at a time.
    A clip passes when its codes are identical (length and values) and both its speaker latents and
    its emotion vector have cosine >= ``min_cosine`` and a largest absolute difference of at most
    ``latent_atol`` / ``emo_atol`` times the RMS of our vector (see the module constants for why
    those defaults).  The check passes when every clip passes; a clip whose files cannot be read
    fails it too.  A padded tail (theirs longer, the first codes equal to ours) is named as such.
    """
    tolerances = {"min_cosine": min_cosine, "latent_max_abs_rms": latent_atol, "emo_max_abs_rms": emo_atol}
    if not samples:
        return SpotCheck(False, "no clip to check: nothing can be imported without comparing", [], tolerances)
    rows = []
    for clip, wave in samples:
        try:
            theirs = load_clip_features(clip, codebook_size)
        except InputError as e:
            rows.append({"id": clip.id, "ok": False, "problem": f"unreadable: {e}"})
            continue
        (ours,) = extract([np.asarray(wave, dtype=np.float32)])
        rows.append(_compare_clip(clip, ours, theirs, min_cosine, latent_atol, emo_atol))
    bad = [r for r in rows if not r["ok"]]
    if not bad:
        worst = {k: min(r[k] for r in rows) for k in ("latent_cosine", "emo_cosine")}
        worst_rel = {k: max(r[k] for r in rows) for k in ("latent_max_abs_rms", "emo_max_abs_rms")}
        reason = (f"{len(rows)} clips match our extraction: codes identical; speaker latents cosine >= "
                  f"{worst['latent_cosine']:.6f}, max |diff| <= {worst_rel['latent_max_abs_rms']:.3g} x RMS; "
                  f"emotion vectors cosine >= {worst['emo_cosine']:.6f}, "
                  f"max |diff| <= {worst_rel['emo_max_abs_rms']:.3g} x RMS")
        return SpotCheck(True, reason, rows, tolerances)
    parts = []
    padded = [r for r in bad if r.get("padded_tail")]
    if padded:
        parts.append(f"padded tail in {len(padded)} of {len(rows)} clips ({_ids(padded)}): their codes continue past "
                     "codes equal to ours (the community preprocessing with batch size > 1 saved the batch-mates' "
                     "padding, and code_len counts it)")
    codes = [r for r in bad if "codes_equal" in r and not r["codes_equal"] and not r["padded_tail"]]
    if codes:
        parts.append(f"codes differ in {len(codes)} of {len(rows)} clips ({_ids(codes)}): another semantic codec, "
                     "Wav2Vec2-BERT, feature layer or audio")
    for name, label in (("latent", "speaker latents"), ("emo", "emotion vectors")):
        hit = [r for r in bad if r.get(f"{name}_ok") is False]
        if hit:
            known = [r[f"{name}_cosine"] for r in hit if r[f"{name}_cosine"] is not None]
            low = f", lowest cosine {min(known):.6f} (min {min_cosine})" if known else ""
            parts.append(f"{label} differ in {len(hit)} of {len(rows)} clips ({_ids(hit)}){low}: "
                         "another base GPT (its conditioning modules) or other audio")
    unreadable = [r for r in bad if (r["problem"] or "").startswith("unreadable")]
    if unreadable:
        parts.append(f"{len(unreadable)} clips unreadable ({_ids(unreadable)})")
    return SpotCheck(False, "; ".join(parts), rows, tolerances)


def _ids(rows: Sequence[dict[str, Any]], limit: int = 5) -> str:
    ids = [str(r["id"]) for r in rows]
    return ", ".join(ids[:limit]) + (f", ... ({len(ids) - limit} more)" if len(ids) > limit else "")


# --- writing the features as the preprocess writes them -----------------------------------------

Entry = tuple[str, np.ndarray, np.ndarray, np.ndarray, float]  # (audio sha256, codes, latents, emotion, seconds)


def write_imported(feature_dir: str | os.PathLike[str], entries: Sequence[Entry], unit_clips: int, *,
                   max_mel_tokens: int) -> list[str]:
    """Write ``entries`` as the preprocess writes features: units of ``unit_clips`` keys (sorted), each one
    shard (:func:`write_shard_hashed`; its sha256 goes in the record) and, last and atomically, its unit
    record in ``process_unit``'s format.

    Codes longer than ``max_mel_tokens`` are recorded as the unit's rejects (``codes_too_long: ...``),
    as ``process_unit`` records them.  A unit whose record exists already is left as it is; a key given
    twice is written once.  Returns the names of the units written.
    """
    feature_dir = Path(feature_dir)
    if unit_clips < 1:
        raise ValueError(f"unit_clips must be >= 1, got {unit_clips}")
    by_key: dict[str, Entry] = {}
    for e in entries:
        by_key.setdefault(e[0], e)
    keys = sorted(by_key)
    written = []
    for i in range(0, len(keys), unit_clips):
        unit = keys[i:i + unit_clips]
        name = unit_name(unit)
        record_path = feature_dir / f"{name}.json"
        if record_path.is_file():
            continue
        rejected: dict[str, str] = {}
        stored: list[ClipFeatures] = []
        for key in unit:
            _, codes, latents, emo, duration = by_key[key]
            if len(codes) > max_mel_tokens:
                rejected[key] = f"codes_too_long: {len(codes)} codes > max_mel_tokens={max_mel_tokens}"
                continue
            stored.append(ClipFeatures(key, np.asarray(codes), np.asarray(latents), np.asarray(emo), float(duration)))
        shard, digest = write_shard_hashed(feature_dir, stored) if stored else (None, None)
        record = {"unit": name, "shard": shard.name if shard else None, "shard_sha256": digest,
                  "keys": [c.key for c in stored], "rejects": rejected,
                  "lengths": {c.key: [len(c.codes), round(c.duration, 4)] for c in stored},
                  "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
        feature_dir.mkdir(parents=True, exist_ok=True)
        write_json(record_path, record)  # last: the unit is now complete
        written.append(name)
    return written


# --- the whole import ----------------------------------------------------------------------------

AudioOf = Callable[[CommunityClip], tuple[str | None, np.ndarray | None, float]]


@dataclass
class ImportReport:
    """What an import did: counts, the spot check, every reject, and why clips are left to the preprocess."""

    read: int = 0  # clips in the community files
    complete: int = 0  # with all three parts
    incomplete: int = 0  # lacking a part: recomputed
    no_audio: int = 0  # complete, but ``audio_of`` gave no audio: not imported
    already_done: int = 0  # their audio has features (or a reject) in the feature set already
    imported: int = 0  # features written (clips; clips sharing audio count each)
    too_long: int = 0  # recorded as codes_too_long rejects, as the preprocess would
    recompute: int = 0  # left to the normal preprocess
    left_to_preprocess: dict[str, int] = field(default_factory=dict)  # recompute, by reason
    spot_check: SpotCheck | None = None
    units: list[str] = field(default_factory=list)
    rejects: list[dict[str, Any]] = field(default_factory=list)
    reason: str = ""

    @property
    def rejected(self) -> int:
        return len(self.rejects)

    def to_dict(self) -> dict[str, Any]:
        return {
            "read": self.read, "complete": self.complete, "incomplete": self.incomplete, "no_audio": self.no_audio,
            "already_done": self.already_done, "imported": self.imported, "too_long": self.too_long,
            "recompute": self.recompute, "rejected": self.rejected, "left_to_preprocess": dict(self.left_to_preprocess),
            "reason": self.reason, "spot_check": self.spot_check.to_dict() if self.spot_check else None,
            "units": list(self.units), "rejects": [dict(r) for r in self.rejects],
            "rejected_by_reason": dict(Counter(r["reason_code"] for r in self.rejects).most_common()),
        }


def _pick_samples(candidates: Sequence[tuple[CommunityClip, str, float]], seed: int) -> list[int]:
    """Indices: the shortest clip (most likely to carry a batch-mate's padding), the longest (prompt
    cropping, length limits), then a seeded random draw; ``candidates`` come sorted by clip id."""
    if not candidates:
        return []
    order = sorted(range(len(candidates)), key=lambda i: (candidates[i][2], candidates[i][0].id))
    first = [order[0], order[-1]] if len(order) > 1 else [order[0]]
    rest = [i for i in range(len(candidates)) if i not in first]
    random.Random(seed).shuffle(rest)
    return first + rest  # the caller takes the first n that load


def import_features(clips: Mapping[str, CommunityClip] | Iterable[CommunityClip], feature_dir: str | os.PathLike[str],
                    extract: Extract, *, audio_of: AudioOf, codebook_size: int, max_mel_tokens: int,
                    spot_checks: int = 8, seed: int = 0, unit_clips: int = 256,
                    rejects: Sequence[dict[str, Any]] = (), min_cosine: float = MIN_COSINE,
                    latent_atol: float = MAX_ABS_OF_RMS, emo_atol: float = MAX_ABS_OF_RMS) -> ImportReport:
    """Check a sample of ``clips`` against our extraction and, if it matches, write them into ``feature_dir``.

    ``feature_dir`` is the feature set of the models ``extract`` runs (``<feature_root>/<featureset>``).
    ``audio_of(clip) -> (audio sha256, 16 kHz mono float32 wave, seconds)`` resolves a clip's audio;
    it returns a None wave (or key) for audio it cannot find, and should do so for audio the preprocess
    gates would refuse (``decode_clip_audio``), so the normal preprocess rejects it with its reason.

    ``spot_checks`` clips are picked deterministically (``seed``) among the complete clips with audio:
    the shortest, the longest and a random draw.  If :func:`spot_check` fails nothing is written: the
    preprocess recomputes everything, and the report says why.  If it passes, every complete clip with
    audio is loaded, checked (:func:`load_clip_features`, and its code count against its duration:
    50 per second, within ``CODE_LENGTH_SLACK``) and written with :func:`write_imported` in units of
    ``unit_clips``; a clip that fails those checks is a reject row and left to the preprocess.
    ``rejects`` (from :func:`read_community_files`) are carried into the report.
    """
    if spot_checks < 1:
        raise ValueError("spot_checks must be >= 1: community features are never imported unchecked")
    feature_dir = Path(feature_dir)
    all_clips = sorted(clips.values() if isinstance(clips, Mapping) else clips, key=lambda c: c.id)
    report = ImportReport(read=len(all_clips), rejects=list(rejects))
    left: Counter[str] = Counter()
    existing = read_units(feature_dir)
    candidates: list[tuple[CommunityClip, str, float]] = []  # (clip, audio key, seconds), sorted by id
    for clip in all_clips:
        if not clip.complete:
            report.incomplete += 1
            left["incomplete"] += 1
            continue
        report.complete += 1
        key, wave, seconds = audio_of(clip)
        if key is None or wave is None:
            report.no_audio += 1
            left["no_audio"] += 1
            continue
        if key in existing.done or key in existing.rejects:
            report.already_done += 1
            continue
        candidates.append((clip, key, float(seconds)))
    if not candidates:
        report.reason = "nothing to import: no complete clip with audio that the feature set lacks"
        return _finish(report, left)

    samples: list[tuple[CommunityClip, np.ndarray]] = []
    broken: set[str] = set()
    for i in _pick_samples(candidates, seed):
        if len(samples) >= spot_checks:
            break
        clip = candidates[i][0]
        try:
            load_clip_features(clip, codebook_size)
        except FeatureFileError as e:
            report.rejects.append(community_reject(clip.sources.get(e.part or "", clip.source), clip.id, "bad_features",
                                                   str(e)))
            broken.add(clip.id)
            continue
        _, wave, _ = audio_of(clip)
        if wave is not None:
            samples.append((clip, wave))
    check = spot_check(samples, extract, codebook_size=codebook_size, min_cosine=min_cosine,
                       latent_atol=latent_atol, emo_atol=emo_atol)
    report.spot_check = check
    if not check.passed:
        report.reason = f"spot check failed, nothing imported (the preprocess computes every clip): {check.reason}"
        left["bad_features"] += len(broken)
        left["spot_check_failed"] += len(candidates) - len(broken)
        log.warning("community import: %s", report.reason)
        return _finish(report, left)

    width = load_clip_features(samples[0][0], codebook_size)[1].shape[1]  # ours: every imported clip must have it
    shared: dict[str, int] = Counter(key for _, key, _ in candidates)
    todo: dict[str, tuple[CommunityClip, float]] = {}
    for clip, key, seconds in candidates:
        if clip.id in broken:
            left["bad_features"] += 1
            shared[key] -= 1
        else:
            todo.setdefault(key, (clip, seconds))
    keys = sorted(todo)
    for start in range(0, len(keys), unit_clips):
        entries: list[Entry] = []
        for key in keys[start:start + unit_clips]:
            clip, seconds = todo[key]
            try:
                codes, latents, emo = load_clip_features(clip, codebook_size, model_dim=width)
            except FeatureFileError as e:
                report.rejects.append(community_reject(clip.sources.get(e.part or "", clip.source), clip.id,
                                                       "bad_features", str(e)))
                left["bad_features"] += shared[key]
                continue
            expected = seconds * CODES_PER_SECOND
            if abs(len(codes) - expected) > CODE_LENGTH_SLACK:
                tail = " (a padded tail?)" if len(codes) > expected else ""
                report.rejects.append(community_reject(
                    clip.sources.get("codes_path", clip.source), clip.id, "code_length",
                    f"{clip.codes_path}: {len(codes)} codes for {seconds:.2f} s of audio, "
                    f"expected {expected:.0f} +- {CODE_LENGTH_SLACK}{tail}"))
                left["code_length"] += shared[key]
                continue
            entries.append((key, codes, latents, emo, seconds))
            if len(codes) > max_mel_tokens:
                report.too_long += shared[key]
            else:
                report.imported += shared[key]
        report.units += write_imported(feature_dir, entries, unit_clips, max_mel_tokens=max_mel_tokens)
    report.reason = (f"spot check passed on {len(check.rows)} clips; imported {report.imported} clips "
                     f"({report.too_long} recorded as codes_too_long) into {feature_dir}")
    log.info("community import: %s", report.reason)
    return _finish(report, left)


def _finish(report: ImportReport, left: Counter[str]) -> ImportReport:
    report.left_to_preprocess = {k: v for k, v in left.most_common() if v}
    report.recompute = sum(report.left_to_preprocess.values())
    return report
