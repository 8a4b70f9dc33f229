"""Which measured clips make the dataset: the judge judged first, then every gate, then duplicates.

Runs over the unit records of all the run's recordings (:mod:`~indextts_core.curate.process`), so it sees what
one recording cannot: how far the ASR judge's transcripts are from the given text across every clip that
has both (:func:`judge_verdict`), and duplicates across recordings.  A judge that cannot read the language
is not trusted: its CER gate is off and the clips that would need its transcript are rejected, each with
that reason, instead of entering the dataset with invented text.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from indextts_core.config import CurateConfig
from indextts_core.curate.quality import ClipKey, check_clip, find_duplicates
from indextts_core.curate.types import Rejection
from indextts_core.evaluation.scoring import char_error_rate, normalize_for_scoring

#: Clips with both a given text and a transcript the judge's reliability needs, at least.
MIN_JUDGE_CLIPS = 3


@dataclass(frozen=True)
class JudgeVerdict:
    """How far the ASR judge's transcripts are from the given text: ``trusted`` decides its use."""

    present: bool
    clips: int  # clips with both texts
    cer: float | None  # median CER over them
    trusted: bool
    note: str


def clip_cers(records: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Clip id -> CER of the judge's transcript against the given text, for every clip that has both."""
    return {c["id"]: char_error_rate(c["text_given"], c["transcript"]) for r in records for c in r["clips"]
            if c.get("text_given") and normalize_for_scoring(c["text_given"]) and c.get("transcript") is not None}


def judge_verdict(records: Sequence[dict[str, Any]], cfg: CurateConfig, cers: dict[str, float]) -> JudgeVerdict:
    """The judge's median CER on every clip with both a given text and a transcript (``cers``, from
    :func:`clip_cers`), and whether to trust it.

    Trusted when it is at most ``cfg.max_judge_cer`` over at least :data:`MIN_JUDGE_CLIPS` clips; with no
    clip to check it on (only bare recordings) it is used, and the note says it was not checked.
    """
    if not any("transcript" in c for r in records for c in r["clips"]):
        return JudgeVerdict(False, 0, None, False, "no ASR judge: clips without given text cannot be transcribed, "
                            "and given text is not checked against the audio")
    pairs = list(cers.values())
    if not pairs:
        return JudgeVerdict(True, 0, None, True, "the ASR judge was not checked (no clip has given text to check "
                            "it on): its transcripts are used as they are")
    cer = statistics.median(pairs)
    if len(pairs) < MIN_JUDGE_CLIPS:
        return JudgeVerdict(True, len(pairs), cer, False, f"the ASR judge's CER ({cer:.2f}) is measured on only "
                            f"{len(pairs)} clip(s), fewer than {MIN_JUDGE_CLIPS}: not trusted")
    if cer > cfg.max_judge_cer:
        return JudgeVerdict(True, len(pairs), cer, False, f"the ASR judge cannot read this language: median CER "
                            f"{cer:.2f} on {len(pairs)} clips with given text, above curate.max_judge_cer "
                            f"{cfg.max_judge_cer}: no CER gate, and clips without given text are rejected")
    return JudgeVerdict(True, len(pairs), cer, True, f"ASR judge median CER {cer:.2f} on {len(pairs)} clips with "
                        "given text: CER gate on")


def decide(records: Sequence[dict[str, Any]], cfg: CurateConfig, language: str
           ) -> tuple[list[tuple[dict, dict]], list[tuple[dict, dict, Rejection]], JudgeVerdict]:
    """Kept ``(record, clip)`` pairs (with ``clip["text"]`` and ``clip["cer"]`` set), rejected
    ``(record, clip, first rejection)`` (every failing gate is in ``clip["reasons"]``), and the judge verdict.

    Records are taken in the order given (sorted by recording name), clips by time: the first of two
    duplicates is kept.
    """
    cers = clip_cers(records)
    judge = judge_verdict(records, cfg, cers)
    passed: list[tuple[dict, dict]] = []
    rejected: list[tuple[dict, dict, Rejection]] = []
    for record in records:
        for clip in record["clips"]:
            clip = dict(clip)
            given, heard = clip.get("text_given"), clip.get("transcript")
            cer = cers.get(clip["id"])
            clip["cer"] = round(cer, 4) if cer is not None else None
            text = given or (heard if judge.trusted else None)
            failures = check_clip(duration_s=clip["duration"], speech_s=clip["speech_s"], clipped=clip["clipped"],
                                  text=text, language=language, cfg=cfg, dnsmos=clip.get("dnsmos"),
                                  cer=cer if judge.trusted else None)
            if not text or not normalize_for_scoring(text):
                why = ("no text: the ASR judge is not trusted for this language (see the report's judge note)"
                       if heard is not None and not judge.trusted else "no text: no subtitle, transcript or ASR judge")
                failures.insert(0, Rejection("no_text", why, {"method": record["method"]}))
            clip["text"] = text
            if failures:
                clip["reasons"] = [f.reason for f in failures]
                rejected.append((record, clip, failures[0]))
            else:
                passed.append((record, clip))
    if not cfg.dedupe:
        return passed, rejected, judge
    dups = find_duplicates([ClipKey(c["id"], c["pcm_sha256"], c["text"], c["duration"]) for _, c in passed],
                           cfg.near_duplicate_s)
    kept = []
    for record, clip in passed:
        if clip["id"] in dups:
            clip["reasons"] = [dups[clip["id"]].reason]
            rejected.append((record, clip, dups[clip["id"]]))
        else:
            kept.append((record, clip))
    return kept, rejected, judge
