"""Medians, the share of bad items and failure counts per model and language; the worst items first."""

from indextts_core.evaluation.report import robust_tables
from indextts_core.evaluation.robust import robust_table, worst_first
from indextts_core.evaluation.speech import not_speech
import numpy as np


def _row(model, item, lang, cer=None, not_speech=None, stop=0.0, sim=None):
    return {"model": model, "id": item, "language": lang, "cer": cer, "not_speech": not_speech,
            "stop_failure": stop, "speaker_sim": sim}


ROWS = [
    _row("base", "a", "am", 0.1), _row("base", "b", "am", 0.2), _row("base", "c", "am", 3.0),
    _row("base", "d", "en", None, "silent"), _row("base", "e", "en", None, "runaway", stop=1.0),
    _row("base", "f", "en", 0.6),
    _row("tuned", "a", "am", 0.05), _row("tuned", "b", "am", 0.9), _row("tuned", "c", "am", None, "runaway", 1.0),
    _row("tuned", "d", "en", 0.3), _row("tuned", "e", "en", None, sim=0.4), _row("tuned", "f", "en", None, sim=0.1),
]


def test_robust_table_gives_medians_shares_and_failure_counts_per_model_and_language():
    table = {(e["model"], e["language"]): e for e in robust_table(ROWS, ["base", "tuned"])}
    am = table[("base", "am")]
    # a mean of 1.1 would hide that two of three items are fine: the median says so
    assert am["median_cer"] == 0.2 and am["over_half_cer"] == 1 / 3 and am["scored"] == 3
    en = table[("base", "en")]
    assert (en["silent"], en["runaway"], en["stop_failures"], en["items"], en["scored"]) == (1, 1, 1, 3, 1)
    everything = table[("base", "all")]
    assert everything["items"] == 6 and everything["median_cer"] == (0.2 + 0.6) / 2
    assert table[("tuned", "en")]["median_cer"] == 0.3 and table[("tuned", "am")]["runaway"] == 1
    # models in the order given, "all" after the languages
    assert [(e["model"], e["language"]) for e in robust_table(ROWS, ["base", "tuned"])][:3] == [
        ("base", "am"), ("base", "en"), ("base", "all")]


def test_no_score_gives_no_median_rather_than_a_zero():
    e = robust_table([_row("m", "x", "am", None, "silent")], ["m"])[0]
    assert e["median_cer"] is None and e["over_half_cer"] is None and e["silent"] == 1


def test_worst_items_first_not_speech_then_highest_cer_then_lowest_similarity():
    assert worst_first(ROWS, "tuned") == ["c", "b", "d", "a", "f", "e"]


def test_report_table_lists_every_model_and_language():
    [(title, header, rows)] = robust_tables({"robust": robust_table(ROWS, ["base", "tuned"])})
    assert "median CER" in header and "runaway" in header and len(rows) == 6
    assert rows[0][:5] == ["base", "am", "3", "3", "0.200"] and rows[0][5] == "33%"


def test_a_clip_under_0_3_s_is_not_speech():
    loud = 0.3 * np.sin(np.linspace(0, 2000, 16000))
    assert not_speech(loud[:4000]) == "silent"  # 0.25 s
    assert not_speech(loud[:8000]) is None
    assert not_speech(loud, stopped=False) == "runaway"
