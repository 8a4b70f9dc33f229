"""Reading the community trainers' processed files (JarodMica / AM lineage) into clips with feature files.

Processed manifests and pair files (see :mod:`indextts_core.preprocess.community`) are read and merged
by clip id (:func:`read_community_files`); every unusable row is a reject row naming its ``file:line``.
:func:`load_clip_features` loads one clip's ``.npy`` parts, checked for shape, type and range, each
problem a :class:`FeatureFileError` naming the file.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from indextts_core.errors import InputError

log = logging.getLogger(__name__)

#: The three feature parts of a clip, by their attribute on :class:`CommunityClip`.
PARTS = ("codes_path", "condition_path", "emo_vec_path")
#: Speaker conditioning latents per clip (``condition_num_latent`` of the released GPT).
NUM_LATENTS = 32



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

def community_reject(source: str, clip_id: str | None, code: str, reason: str) -> dict[str, Any]:
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
                self.rejects.append(community_reject(source, clip_id, "conflicting_paths",
                                            f"{part} is {path} here but {old} at {c.sources[part]}; "
                                            f"neither is used, the clip's features will be recomputed"))
                setattr(c, part, None)
                self._conflicted.add((clip_id, part))
            return
        if not path.is_file():
            self.rejects.append(community_reject(source, clip_id, "missing_file", f"{part}: {path} does not exist"))
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
        m.rejects.append(community_reject(source, row_id, "missing_field", f"{kind} lacks {', '.join(missing)}"))
        return
    bad = [n for n in required + optional if n.endswith("_path") and row.get(n) is not None
           and not (isinstance(row[n], str) and row[n].strip())]
    ids = {n: _as_id(row[n]) for n in (("prompt_id", "target_id") if paired else ("id",))}
    bad += [n for n, v in ids.items() if v is None]
    if bad:
        m.rejects.append(community_reject(source, row_id, "bad_field",
                                          f"{', '.join(bad)}: expected a non-empty string"))
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
                    m.rejects.append(community_reject(source, None, "malformed_json", f"not UTF-8: {e.reason}"))
                    continue
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    m.rejects.append(community_reject(source, None, "malformed_json", f"invalid JSON: {e.msg}"))
                    continue
                if not isinstance(row, dict):
                    m.rejects.append(community_reject(source, None, "malformed_json",
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

