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

Nothing here trains on or tokenizes anything; the caller resolves the audio (``audio_of``).
"""

from __future__ import annotations

import json
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
from indextts_core.preprocess.extract import Extract
from indextts_core.preprocess.planning import read_units, unit_name
from indextts_core.preprocess.settings import CODES_PER_SECOND
from indextts_core.preprocess.shards import ClipFeatures, write_shard_hashed
from indextts_core.utils.fileio import write_json

log = logging.getLogger(__name__)

#: The three feature parts of a clip, by their attribute on :class:`CommunityClip`.
PARTS = ("codes_path", "condition_path", "emo_vec_path")
#: Speaker conditioning latents per clip (``condition_num_latent`` of the released GPT).
NUM_LATENTS = 32

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


class FeatureFileError(InputError):
    """A community feature file is missing, unreadable or holds the wrong thing; names the file."""

    def __init__(self, message: str, part: str | None = None, path: Path | None = None):
        super().__init__(message)
        self.part = part
        self.path = path

    def __reduce__(self):
        return (type(self), (str(self), self.part, self.path))


@dataclass
class CommunityClip:
    """One clip of the community files: where its features are (any may be None) and what they said of it."""

    id: str
    codes_path: Path | None = None
    condition_path: Path | None = None
    emo_vec_path: Path | None = None
    text: str | None = None
    audio: str | None = None
    speaker: str | None = None
    language: str | None = None
    source: str = ""  # "file:line" of the first row that named the clip
    sources: dict[str, str] = field(default_factory=dict)  # part -> "file:line" of the row that gave its path

    @property
    def missing(self) -> list[str]:
        """The parts no row gave (``codes_path``, ``condition_path``, ``emo_vec_path``)."""
        return [p for p in PARTS if getattr(self, p) is None]

    @property
    def complete(self) -> bool:
        return not self.missing


# --- reading the JSON-lines files ---------------------------------------------------------------

def _reject(source: str, clip_id: str | None, code: str, reason: str) -> dict[str, Any]:
    return {"source": source, "id": clip_id, "reason_code": code, "reason": reason}


def _as_id(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        return None
    text = str(value).strip()
    return text or None


def _resolve(raw: str, base: Path) -> Path:
    """A path of a row: backslashes (files written on Windows) become slashes; relative is against ``base``."""
    p = Path(raw.replace("\\", "/"))
    return Path(os.path.normpath(p if p.is_absolute() else base / p))


_PAIR_MARKERS = ("prompt_id", "target_id", "prompt_condition_path", "target_codes_path")


class _Merger:
    def __init__(self) -> None:
        self.clips: dict[str, CommunityClip] = {}
        self.rejects: list[dict[str, Any]] = []
        self._conflicted: set[tuple[str, str]] = set()

    def clip(self, clip_id: str, source: str) -> CommunityClip:
        c = self.clips.get(clip_id)
        if c is None:
            c = self.clips[clip_id] = CommunityClip(clip_id, source=source)
        return c

    def set_part(self, clip_id: str, part: str, raw: str, base: Path, source: str) -> None:
        c = self.clip(clip_id, source)
        if (clip_id, part) in self._conflicted:
            return
        path = _resolve(raw, base)
        old = getattr(c, part)
        if old is not None:
            if old != path:
                self.rejects.append(_reject(source, clip_id, "conflicting_paths",
                                            f"{part} is {path} here but {old} at {c.sources[part]}; "
                                            f"neither is used, the clip's features will be recomputed"))
                setattr(c, part, None)
                self._conflicted.add((clip_id, part))
            return
        if not path.is_file():
            self.rejects.append(_reject(source, clip_id, "missing_file", f"{part}: {path} does not exist"))
            return
        setattr(c, part, path)
        c.sources[part] = source

    def set_meta(self, clip_id: str, source: str, base: Path, **meta: Any) -> None:
        c = self.clip(clip_id, source)
        for name, value in meta.items():
            if getattr(c, name) is None and isinstance(value, str) and value.strip():
                setattr(c, name, str(_resolve(value, base)) if name == "audio" else value)


def _missing(row: dict[str, Any], names: Iterable[str]) -> list[str]:
    return [n for n in names if row.get(n) in (None, "")]


def _read_row(m: _Merger, row: dict[str, Any], base: Path, source: str) -> None:
    paired = any(k in row for k in _PAIR_MARKERS)
    if paired:
        required = ("prompt_id", "target_id", "target_codes_path", "prompt_condition_path", "prompt_emo_vec_path")
        optional = ("target_emo_vec_path",)
    else:
        required = ("id", "codes_path", "condition_path", "emo_vec_path")
        optional = ()
    row_id = _as_id(row.get("id")) or _as_id(row.get("target_id"))
    missing = _missing(row, required)
    if missing:
        kind = "pair row" if paired else "manifest row"
        m.rejects.append(_reject(source, row_id, "missing_field", f"{kind} lacks {', '.join(missing)}"))
        return
    bad = [n for n in required + optional if n.endswith("_path") and row.get(n) is not None
           and not (isinstance(row[n], str) and row[n].strip())]
    ids = {n: _as_id(row[n]) for n in (("prompt_id", "target_id") if paired else ("id",))}
    bad += [n for n, v in ids.items() if v is None]
    if bad:
        m.rejects.append(_reject(source, row_id, "bad_field", f"{', '.join(bad)}: expected a non-empty string"))
        return
    if not paired:
        cid = ids["id"]
        assert cid is not None
        m.clip(cid, source)
        for part in PARTS:
            m.set_part(cid, part, row[part], base, source)
        m.set_meta(cid, source, base, text=row.get("text"), audio=row.get("audio_path") or row.get("audio"),
                   speaker=row.get("speaker"), language=row.get("language"))
        return
    target, prompt = ids["target_id"], ids["prompt_id"]
    assert target is not None and prompt is not None
    m.clip(target, source)
    m.clip(prompt, source)
    m.set_part(target, "codes_path", row["target_codes_path"], base, source)
    if row.get("target_emo_vec_path"):
        m.set_part(target, "emo_vec_path", row["target_emo_vec_path"], base, source)
    m.set_part(prompt, "condition_path", row["prompt_condition_path"], base, source)
    m.set_part(prompt, "emo_vec_path", row["prompt_emo_vec_path"], base, source)
    m.set_meta(target, source, base, text=row.get("target_text"),
               audio=row.get("target_audio_path") or row.get("target_audio"), speaker=row.get("speaker"),
               language=row.get("target_language") or row.get("language"))
    m.set_meta(prompt, source, base, text=row.get("prompt_text"),
               audio=row.get("prompt_audio_path") or row.get("prompt_audio"), speaker=row.get("speaker"),
               language=row.get("prompt_language"))


def read_community_files(paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
                         base_dir: str | os.PathLike[str] | None = None,
                         ) -> tuple[dict[str, CommunityClip], list[dict[str, Any]]]:
    """Read processed manifests and/or pair files and merge them by clip id.

    Each row's format is told by its fields (a pair row names ``prompt_*``/``target_*`` fields).
    Paths are resolved against the file's folder (or ``base_dir`` when given) unless absolute.
    Returns ``({clip id: CommunityClip}, rejects)``; a reject is ``{"source": "file:line", "id",
    "reason_code", "reason"}`` for a row that is not JSON, lacks a field, names a file that is not
    there, or gives a clip's part a path another row gave differently (that part is then not used).
    Clips lacking a part after merging are returned with ``complete`` False: they are recomputed.
    A file that does not exist is an :class:`InputError`.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    m = _Merger()
    for path in map(Path, paths):
        if not path.is_file():
            raise InputError(f"{path}: community manifest / pair file not found")
        base = Path(base_dir) if base_dir is not None else path.parent
        rows = 0
        with open(path, "rb") as f:
            for lineno, raw in enumerate(f, start=1):
                source = f"{path}:{lineno}"
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    m.rejects.append(_reject(source, None, "malformed_json", f"not UTF-8: {e.reason}"))
                    continue
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    m.rejects.append(_reject(source, None, "malformed_json", f"invalid JSON: {e.msg}"))
                    continue
                if not isinstance(row, dict):
                    m.rejects.append(_reject(source, None, "malformed_json",
                                             f"expected a JSON object, got {type(row).__name__}"))
                    continue
                rows += 1
                _read_row(m, row, base, source)
        log.info("%s: %d rows", path, rows)
    incomplete = sum(not c.complete for c in m.clips.values())
    log.info("community files: %d clips (%d incomplete), %d rejects", len(m.clips), incomplete, len(m.rejects))
    return m.clips, m.rejects


# --- loading and checking one clip's arrays -----------------------------------------------------

def _load_npy(clip: CommunityClip, part: str) -> np.ndarray:
    path = getattr(clip, part)
    if path is None:
        raise FeatureFileError(f"clip {clip.id}: no {part} (incomplete clip)", part)
    try:
        arr = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise FeatureFileError(f"{path}: {part} of clip {clip.id} not found", part, path) from None
    except (ValueError, OSError, EOFError) as e:  # pickled objects, .npz, truncated or not .npy at all
        raise FeatureFileError(f"{path}: {part} of clip {clip.id} is not a plain .npy array ({e})",
                               part, path) from None
    if not isinstance(arr, np.ndarray):  # an .npz archive
        raise FeatureFileError(f"{path}: {part} of clip {clip.id} is an .npz archive, not one .npy array",
                               part, path)
    return arr


def _squeeze_batch(arr: np.ndarray, ndim: int) -> np.ndarray:
    """Drop one leading batch axis of size 1 (some scripts save ``x[None]``)."""
    return arr[0] if arr.ndim == ndim + 1 and arr.shape[0] == 1 else arr


def _floats(clip: CommunityClip, part: str, arr: np.ndarray, what: str) -> np.ndarray:
    path = getattr(clip, part)
    if arr.dtype.kind != "f":
        raise FeatureFileError(f"{path}: {what} of clip {clip.id} has dtype {arr.dtype}, expected floats", part, path)
    if not np.all(np.isfinite(arr)):
        bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
        raise FeatureFileError(f"{path}: {what} of clip {clip.id} has {bad} non-finite values (NaN/inf)", part, path)
    return arr.astype(np.float32)


def load_clip_features(clip: CommunityClip, codebook_size: int, *,
                       model_dim: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Load and check a clip's arrays: ``(codes int64 (T,), speaker latents float32 (32, D), emotion float32 (D,))``.

    ``np.load(allow_pickle=False)``; a single leading batch axis of size 1 is dropped.  Codes must be
    integers in ``[0, codebook_size)``, at least one; latents and emotion vector floats (float16 is
    widened), finite, of one width ``D`` (``model_dim`` when given).  Codes longer than the model's
    ``max_mel_tokens`` are returned: like ``process_unit``, :func:`write_imported` records them as
    ``codes_too_long``.  Anything wrong raises :class:`FeatureFileError` (an :class:`InputError`)
    naming the file and the problem.
    """
    codes = _squeeze_batch(_load_npy(clip, "codes_path"), 1)
    path = clip.codes_path
    if codes.dtype.kind not in "iu":
        raise FeatureFileError(f"{path}: codes of clip {clip.id} have dtype {codes.dtype}, expected integers",
                               "codes_path", path)
    if codes.ndim != 1 or codes.size == 0:
        raise FeatureFileError(f"{path}: codes of clip {clip.id} have shape {codes.shape}, expected (T,) with T >= 1",
                               "codes_path", path)
    lo, hi = int(codes.min()), int(codes.max())
    if lo < 0 or hi >= codebook_size:
        raise FeatureFileError(f"{path}: codes of clip {clip.id} range over [{lo}, {hi}], outside the codebook "
                               f"[0, {codebook_size - 1}] (another semantic codec?)", "codes_path", path)
    latents = _floats(clip, "condition_path", _squeeze_batch(_load_npy(clip, "condition_path"), 2), "condition")
    emo = _floats(clip, "emo_vec_path", _squeeze_batch(_load_npy(clip, "emo_vec_path"), 1), "emotion vector")
    wrong_width = model_dim is not None and latents.ndim == 2 and latents.shape[1] != model_dim
    if latents.ndim != 2 or latents.shape[0] != NUM_LATENTS or wrong_width:
        want = f"({NUM_LATENTS}, {model_dim if model_dim is not None else 'D'})"
        raise FeatureFileError(f"{clip.condition_path}: condition of clip {clip.id} has shape {latents.shape}, "
                               f"expected {want}", "condition_path", clip.condition_path)
    if emo.ndim != 1 or emo.shape[0] != latents.shape[1]:
        raise FeatureFileError(f"{clip.emo_vec_path}: emotion vector of clip {clip.id} has shape {emo.shape}, "
                               f"expected ({latents.shape[1]},)", "emo_vec_path", clip.emo_vec_path)
    return codes.astype(np.int64), latents, emo


# --- the spot check ------------------------------------------------------------------------------

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
            report.rejects.append(_reject(clip.sources.get(e.part or "", clip.source), clip.id, "bad_features", str(e)))
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
                report.rejects.append(_reject(clip.sources.get(e.part or "", clip.source), clip.id, "bad_features",
                                              str(e)))
                left["bad_features"] += shared[key]
                continue
            expected = seconds * CODES_PER_SECOND
            if abs(len(codes) - expected) > CODE_LENGTH_SLACK:
                tail = " (a padded tail?)" if len(codes) > expected else ""
                report.rejects.append(_reject(clip.sources.get("codes_path", clip.source), clip.id, "code_length",
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
