"""The quality gates of a clip and the duplicate search: every rejection with its reason code, words and numbers.

:func:`check_clip` runs every gate on one clip and returns all that fail (an empty list: the clip is
kept): duration (``too_short``/``too_long``), full-scale samples (``clipping``, measured by
:func:`clipped_share` on the decoded recording before loudness normalisation, which would hide it),
non-speech share (``silence``, :func:`silence_share`), DNSMOS OVRL (``dnsmos``), round-trip CER between
the given text and the ASR transcript (``cer``), the text's script against the language (``script``,
:func:`script_share`) and a text with nothing to say (``no_text``).

:func:`find_duplicates` then looks at all clips of a run in order, the first of each kind kept: the same
written 16-bit PCM (:func:`pcm_digest`) is a ``duplicate``, the same normalised text with durations within
a tolerance a ``near_duplicate``.
:func:`to_pcm16` gives the samples to write, so that the digest is the written file's.
"""

from __future__ import annotations

import bisect
import hashlib
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from indextts_core.config import CurateConfig
from indextts_core.curate.types import Rejection
from indextts_core.evaluation.scoring import normalize_for_scoring

TOO_SHORT = "too_short"
TOO_LONG = "too_long"
CLIPPING = "clipping"
SILENCE = "silence"
DNSMOS = "dnsmos"
CER = "cer"
SCRIPT = "script"
DUPLICATE = "duplicate"
NEAR_DUPLICATE = "near_duplicate"
NO_TEXT = "no_text"
#: Every reason code of this module, in the order :func:`check_clip` reports them (duplicates last).
REASONS = (NO_TEXT, TOO_SHORT, TOO_LONG, CLIPPING, SILENCE, DNSMOS, CER, SCRIPT, DUPLICATE, NEAR_DUPLICATE)

#: A sample at or above this magnitude (of full scale 1.0) counts as clipped.
CLIP_LEVEL = 0.999
#: The least share of a text's letters that must be written in the language's script.
MIN_SCRIPT_SHARE = 0.8
#: Slack on duration comparisons, so that 1.15 - 1.0 is "within 0.15 s" despite floating point.
_EPS = 1e-9

#: Language (ISO 639-1, or 639-3 where no two-letter code is used) -> the scripts its text is written in.
SCRIPTS: dict[str, tuple[str, ...]] = {
    **dict.fromkeys(("am", "ti", "gez", "amh", "tir"), ("Ethiopic",)),
    **dict.fromkeys(("en", "fr", "de", "es", "it", "pt", "nl", "sv", "da", "no", "nb", "nn", "fi", "is", "pl",
                     "cs", "sk", "sl", "hr", "bs", "ro", "hu", "et", "lv", "lt", "tr", "az", "uz", "id", "ms",
                     "tl", "vi", "sw", "so", "ha", "yo", "ig", "om", "ca", "eu", "gl", "ga", "cy", "mt", "sq",
                     "af", "eo", "la"), ("Latin",)),
    **dict.fromkeys(("ru", "uk", "bg", "be", "mk", "kk", "ky", "mn", "tg"), ("Cyrillic",)),
    "ja": ("Hiragana", "Katakana", "Han"),
    "zh": ("Han",),
    "yue": ("Han",),
    "ko": ("Hangul",),
    **dict.fromkeys(("ar", "fa", "ur", "ps"), ("Arabic",)),
    **dict.fromkeys(("hi", "mr", "ne"), ("Devanagari",)),
    "el": ("Greek",),
    **dict.fromkeys(("he", "yi"), ("Hebrew",)),
    "th": ("Thai",),
}
#: ISO 15924 script subtags (``sr-Latn``) -> the script names above.
_SUBTAGS = {"latn": "Latin", "cyrl": "Cyrillic", "ethi": "Ethiopic", "arab": "Arabic", "deva": "Devanagari",
            "grek": "Greek", "hebr": "Hebrew", "thai": "Thai", "hang": "Hangul", "kore": "Hangul",
            "hans": "Han", "hant": "Han", "hani": "Han"}
#: First word(s) of a character's Unicode name that do not simply spell its script.
_NAME_PREFIXES = {"CJK": "Han", "IDEOGRAPHIC": "Han", "KATAKANA-HIRAGANA": "Katakana", "HALFWIDTH KATAKANA": "Katakana",
                  "HALFWIDTH HANGUL": "Hangul", "FULLWIDTH LATIN": "Latin"}


def clipped_share(samples: Any) -> float:
    """The share of samples at full scale (``|x| >= 0.999``), all channels together; 0.0 for no samples.

    Measure it on the decoded recording *before* loudness normalisation: scaling moves the clipped
    plateau away from full scale without repairing it.  Integer samples are read as fractions of their
    type's full scale (int16: /32768).
    """
    x = np.asarray(samples)
    if x.size == 0:
        return 0.0
    if np.issubdtype(x.dtype, np.integer):
        x = x.astype(np.float64) / float(-np.iinfo(x.dtype).min)
    return float(np.count_nonzero(np.abs(x) >= CLIP_LEVEL) / x.size)


def silence_share(duration_s: float, speech_s: float) -> float:
    """The share of a clip that is not speech, in [0, 1] (1.0 for a clip of no duration)."""
    if duration_s <= 0:
        return 1.0
    return float(min(1.0, max(0.0, 1.0 - speech_s / duration_s)))


def _script_of_letter(ch: str) -> str:
    """The script of one letter, from the start of its Unicode name (``ETHIOPIC SYLLABLE HA`` -> Ethiopic)."""
    name = unicodedata.name(ch, "")
    for prefix, script in _NAME_PREFIXES.items():
        if name.startswith(prefix + " "):
            return script
    return name.split(" ", 1)[0].capitalize() if name else "Unknown"


def expected_scripts(language: str) -> tuple[str, ...] | None:
    """The scripts ``language``'s text is written in (a script subtag wins: ``sr-Latn``), None when not known."""
    parts = language.replace("_", "-").lower().split("-")
    for part in parts[1:]:
        if part in _SUBTAGS:
            return (_SUBTAGS[part],)
    return SCRIPTS.get(parts[0])


def script_share(text: str, language: str) -> tuple[float, str]:
    """The share of ``text``'s letters (Unicode category L*) written in ``language``'s script, and its name.

    Japanese counts Hiragana, Katakana and Han together (the name reads ``Hiragana+Katakana+Han``).
    A language not in the table gives ``(1.0, "unknown")``: the check passes and says it was not made;
    a text without letters (digits only) gives 1.0 too, as nothing in it is in another script.
    """
    scripts = expected_scripts(language)
    if scripts is None:
        return 1.0, "unknown"
    letters = [c for c in unicodedata.normalize("NFC", text) if unicodedata.category(c).startswith("L")]
    name = "+".join(scripts)
    if not letters:
        return 1.0, name
    wanted = set(scripts)
    return sum(_script_of_letter(c) in wanted for c in letters) / len(letters), name


def _pct(x: float) -> str:
    return f"{100 * x:.3g}%"


def check_clip(*, duration_s: float, speech_s: float | None, clipped: float | None, text: str | None,
               language: str, cfg: CurateConfig, dnsmos: float | None = None,
               cer: float | None = None) -> list[Rejection]:
    """Every gate ``cfg`` sets that the clip fails, in the order of :data:`REASONS` (empty: keep it).

    ``speech_s``: seconds of detected speech (None: the silence gate is not applied); ``clipped``: its
    :func:`clipped_share` (None: not measured); ``text``: the clip's text (None: not known yet, the text
    gates are not applied; a text with no letter or digit is ``no_text``); ``dnsmos``: its DNSMOS OVRL,
    checked against ``cfg.min_dnsmos`` when both are set; ``cer``: the CER between the given text and the
    ASR transcript (pass it only when the judge is reliable).  Each rejection names the measured value and
    the threshold it failed (``numbers["threshold"]``).
    """
    out: list[Rejection] = []
    if text is not None and not normalize_for_scoring(text).strip():
        out.append(Rejection(NO_TEXT, "the clip has no text to say (nothing left after normalisation)",
                             {"text": text}))
    d = round(float(duration_s), 3)
    if duration_s < cfg.min_duration_s - _EPS:
        out.append(Rejection(TOO_SHORT, f"{d:g} s < min_duration_s {float(cfg.min_duration_s)} s",
                             {"duration_s": d, "threshold": cfg.min_duration_s}))
    if duration_s > cfg.max_duration_s + _EPS:
        out.append(Rejection(TOO_LONG, f"{d:g} s > max_duration_s {float(cfg.max_duration_s)} s",
                             {"duration_s": d, "threshold": cfg.max_duration_s}))
    if clipped is not None and clipped > cfg.max_clipped_share:
        out.append(Rejection(CLIPPING, f"{_pct(clipped)} of samples at full scale > {_pct(cfg.max_clipped_share)}",
                             {"clipped_share": round(float(clipped), 6), "threshold": cfg.max_clipped_share}))
    if speech_s is not None:
        silent = silence_share(duration_s, speech_s)
        if silent > cfg.max_silence_share:
            out.append(Rejection(SILENCE, f"{_pct(silent)} not speech ({speech_s:.2f} s of speech in {d:g} s) > "
                                          f"{_pct(cfg.max_silence_share)}",
                                 {"silence_share": round(silent, 4), "speech_s": round(float(speech_s), 3),
                                  "duration_s": d, "threshold": cfg.max_silence_share}))
    if dnsmos is not None and cfg.min_dnsmos is not None and dnsmos < cfg.min_dnsmos:
        out.append(Rejection(DNSMOS, f"DNSMOS OVRL {dnsmos:.2f} < {float(cfg.min_dnsmos)}",
                             {"dnsmos": round(float(dnsmos), 3), "threshold": cfg.min_dnsmos}))
    if cer is not None and cer > cfg.max_cer:
        out.append(Rejection(CER, f"CER {cer:.2f} between the text and the ASR transcript > {float(cfg.max_cer)}",
                             {"cer": round(float(cer), 4), "threshold": cfg.max_cer}))
    if cfg.check_script and text:
        share, script = script_share(text, language)
        if share < MIN_SCRIPT_SHARE:
            out.append(Rejection(SCRIPT, f"{_pct(share)} of the letters in the {script} script of {language} "
                                         f"< {_pct(MIN_SCRIPT_SHARE)}",
                                 {"script_share": round(share, 4), "script": script, "language": language,
                                  "threshold": MIN_SCRIPT_SHARE}))
    return out


def to_pcm16(samples: Any) -> np.ndarray:
    """Float samples (full scale 1.0) as the 16-bit PCM a clip is written as: times 32768, rounded to nearest
    even, clipped to [-32768, 32767] (as libsndfile 1.2 writes 16-bit FLAC); int16 samples unchanged.

    Write this array (``soundfile.write(path, to_pcm16(x), sr, subtype="PCM_16")``) and the file holds
    exactly the samples :func:`pcm_digest` hashed, whatever the libsndfile version's own float conversion.
    """
    x = np.asarray(samples)
    if np.issubdtype(x.dtype, np.floating):
        return np.clip(np.rint(x * x.dtype.type(32768)), -32768, 32767).astype(np.int16)
    if x.dtype != np.int16:
        raise TypeError(f"16-bit PCM comes from int16 or float samples, not {x.dtype}")
    return x


def pcm_digest(samples: bytes | bytearray | memoryview | np.ndarray) -> str:
    """sha256 of the 16-bit PCM a clip is written as: compute it on the written samples (after resampling
    and loudness normalisation), so two clips with the same digest sound identical in the dataset.

    Bytes are hashed as they are (16-bit little-endian PCM, frames interleaved); samples (int16, or float
    quantised by :func:`to_pcm16`) as their little-endian bytes.  The digest of the float samples equals the
    digest of the FLAC written from ``to_pcm16`` of them, read back with ``soundfile.read(dtype="int16")``.
    """
    if isinstance(samples, (bytes, bytearray, memoryview)):
        return hashlib.sha256(samples).hexdigest()
    return hashlib.sha256(np.ascontiguousarray(to_pcm16(samples), dtype="<i2").tobytes()).hexdigest()


@dataclass(frozen=True)
class ClipKey:
    """What the duplicate search needs of a clip: its id, :func:`pcm_digest`, text and duration."""

    id: str
    digest: str
    text: str | None
    duration_s: float


def find_duplicates(clips: Sequence[ClipKey], near_tolerance_s: float) -> dict[str, Rejection]:
    """The clips to reject as duplicates, by id; in the order given, the first of each kind is kept.

    ``duplicate``: the same :func:`pcm_digest` as an earlier clip.  ``near_duplicate``: the same text after
    :func:`~indextts_core.evaluation.scoring.normalize_for_scoring` (a clip with no text is never one) as an
    earlier *kept* clip, with durations at most ``near_tolerance_s`` apart (the closest such clip is named).
    Kept clips of one text are held sorted by duration, so each clip costs a hash look-up and a bisection.
    """
    out: dict[str, Rejection] = {}
    first_by_digest: dict[str, str] = {}
    kept_by_text: dict[str, tuple[list[float], list[ClipKey]]] = {}
    for clip in clips:
        earlier = first_by_digest.get(clip.digest)
        if earlier is not None:
            out[clip.id] = Rejection(DUPLICATE, f"same audio as {earlier}", {"of": earlier})
            continue
        first_by_digest[clip.digest] = clip.id
        key = normalize_for_scoring(clip.text) if clip.text else ""
        if not key:
            continue
        durations, keys = kept_by_text.setdefault(key, ([], []))
        i = bisect.bisect_left(durations, clip.duration_s)
        near = [keys[j] for j in (i - 1, i) if 0 <= j < len(keys)
                and abs(keys[j].duration_s - clip.duration_s) <= near_tolerance_s + _EPS]
        if near:
            of = min(near, key=lambda k: abs(k.duration_s - clip.duration_s))
            diff = abs(of.duration_s - clip.duration_s)
            out[clip.id] = Rejection(
                NEAR_DUPLICATE,
                f"same text as {of.id}, duration {clip.duration_s:.2f} s vs {of.duration_s:.2f} s "
                f"(within {near_tolerance_s:g} s)",
                {"of": of.id, "duration_s": round(clip.duration_s, 3), "of_duration_s": round(of.duration_s, 3),
                 "difference_s": round(diff, 3), "tolerance_s": near_tolerance_s})
            continue
        durations.insert(i, clip.duration_s)
        keys.insert(i, clip)
    return out
