"""The judge is judged first: its CER on the real recordings per language decides whether its CER/WER are trusted;
every model's CER is also its excess over the recordings'.  Synthetic rows, no model: fast."""

from __future__ import annotations

import html
from typing import Any

import pytest

from indextts_core.config import EvaluateConfig
from indextts_core.evaluation.report import caveats, html_report, markdown_report
from indextts_core.evaluation.run import REFERENCE, judge_of, summarise

OPTIONS = EvaluateConfig(resamples=50)


def _row(model: str, item: str, language: str, cer: float | None) -> dict[str, Any]:
    return {"model": model, "id": item, "language": language, "group": "seen", "text": "x", "prompt_id": "p",
            "wav": f"audio/{model}/{item}.wav", "cer": cer, "wer": cer, "speaker_sim": 0.5, "not_speech": None,
            "speech_failure": 0.0, "duration_ratio": 1.0, "stop_failure": 0.0}


#: The judge reads the Amharic recordings badly (0.8, 0.66: mean 0.73) and the English ones well (0.1, 0.2).
REFERENCE_CER = {"a1": ("am", 0.8), "a2": ("am", 0.66), "e1": ("en", 0.1), "e2": ("en", 0.2)}
MODEL_CER = {"base": {"a1": 0.9, "a2": 0.9, "e1": 0.5, "e2": 0.6},
             "fine-tuned": {"a1": 0.85, "a2": 0.7, "e1": 0.2, "e2": 0.3}}


def _rows() -> list[dict[str, Any]]:
    rows = [_row(REFERENCE, i, lang, cer) for i, (lang, cer) in REFERENCE_CER.items()]
    for model, cers in MODEL_CER.items():
        rows += [_row(model, i, REFERENCE_CER[i][0], cer) for i, cer in cers.items()]
    return rows


def _summary(rows: list[dict[str, Any]], options: EvaluateConfig = OPTIONS) -> dict[str, Any]:
    summary = summarise(rows, ["base", "fine-tuned"], options, asr="ctc:tiny")
    return summary | {"models": ["base", "fine-tuned"], "asr": "ctc:tiny", "tiny_random": False, "not_speech": {},
                      "evalset": {"items": 4, "by_language_group": {"am/seen": 2, "en/seen": 2}}}


def test_the_judge_is_judged_on_the_real_recordings_per_language():
    summary = _summary(_rows())
    judge = summary["judge"]
    assert judge["name"] == "ctc:tiny" and judge["max_judge_cer"] == 0.25 and judge["unreliable"] == ["am"]
    assert judge["reference_cer"] == pytest.approx({"am": 0.73, "en": 0.15})
    # only English is trusted: its figures alone, for promotion to decide on
    trusted = judge["trusted"]
    assert trusted["languages"] == ["en"]
    assert trusted["headline"]["fine-tuned"]["cer"] == pytest.approx(0.25)
    assert trusted["headline"]["base"]["cer"] == pytest.approx(0.55)
    diff = next(d for d in trusted["differences"] if d["metric"] == "cer" and d["versus"] == "base")
    assert diff["mean"] == pytest.approx(-0.3) and diff["n"] == 2
    # ... never mixed into the tables, the headline or the differences over every item
    assert all(e["language"] in ("am", "en", "all") for e in summary["table"])
    assert all(d["language"] in ("am", "en", "all") for d in summary["differences"])
    assert summary["headline"]["fine-tuned"]["cer"] == pytest.approx(0.5125)

    # a stricter or a looser bar moves the verdict; a judge that reads both well leaves nothing to distrust
    assert _summary(_rows(), EvaluateConfig(resamples=50, max_judge_cer=0.1))["judge"]["unreliable"] == ["am", "en"]
    loose = _summary(_rows(), EvaluateConfig(resamples=50, max_judge_cer=0.8))["judge"]
    assert loose["unreliable"] == [] and "trusted" not in loose
    assert "trusted" not in _summary(_rows(), EvaluateConfig(resamples=50, max_judge_cer=0.1))["judge"]
    assert EvaluateConfig().key_fields()["max_judge_cer"] == 0.25  # it changes what the stage says: in the key


def test_no_judge_without_scored_recordings():
    rows = [r | {"cer": None, "wer": None} for r in _rows()]
    assert judge_of(rows, 0.25, None) is None
    summary = _summary(rows)
    assert summary["judge"] is None and caveats(summary) == []
    assert "cer_excess" not in summary["headline"]["fine-tuned"]
    assert "judge" not in markdown_report(summary)


def test_cer_is_also_reported_as_excess_over_the_recordings():
    summary = _summary(_rows())
    # per item: the model's CER minus the real recording's on the same item
    assert summary["headline"]["fine-tuned"]["cer_excess"] == pytest.approx((0.05 + 0.04 + 0.1 + 0.1) / 4)
    assert "cer_excess" not in summary["headline"][REFERENCE]
    cell = {(e["language"], e["model"], e["metric"]): e for e in summary["table"] if e["group"] != "all"}
    assert cell[("en", "base", "cer_excess")]["mean"] == pytest.approx(0.4)
    assert cell[("am", "fine-tuned", "cer_excess")]["n"] == 2
    assert not any(d["metric"] == "cer_excess" for d in summary["differences"])  # the CER difference says it
    # an item without a scored recording (a sentence from the sentences file) has a CER and no excess
    rows = [*_rows(), _row("fine-tuned", "s1", "en", 0.4)]
    en = {(e["model"], e["metric"]): e for e in _summary(rows)["table"] if e["language"] == "en"}
    assert en[("fine-tuned", "cer")]["n"] == 3 and en[("fine-tuned", "cer_excess")]["n"] == 2


def test_report_and_console_say_which_languages_the_judge_cannot_be_trusted_on():
    summary = _summary(_rows())
    said = ("judge unreliable for am: CER 0.73 on the real recordings (> 0.25); its CER/WER for am are not used "
            "to decide.")
    assert said in caveats(summary)
    assert caveats({"judge": summary["judge"]}) == [said]  # what the console prints from the stage's data
    md = markdown_report(summary)
    assert f"> {said}" in md
    assert ("The judge's CER on the real recordings: am 0.730 (unreliable), en 0.150 (trusted); trusted up to "
            "0.25.") in md
    sections = md.split("## ")
    am = next(s for s in sections if s.startswith("am / seen"))
    en = next(s for s in sections if s.startswith("en / seen"))
    every = next(s for s in sections if s.startswith("all items"))
    assert "| CER (lower is better) (judge unreliable) |" in am and "| WER (lower is better) (judge unreliable) |" in am
    assert "| CER excess over the recordings (lower is better) (judge unreliable) |" in am
    assert "| CER (lower is better) |" in en and "judge unreliable" not in en
    assert "| CER (lower is better) (includes judge-unreliable am) |" in every
    # the other metrics are the judge's business no more than before
    assert "speaker similarity (the model's own CAMPPlus) |" in am
    page = html_report(summary, _rows(), "t")
    assert f"<b>{html.escape(said)}</b>" in page and "am 0.730 (unreliable)" in page
