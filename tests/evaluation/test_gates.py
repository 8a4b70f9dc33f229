"""The gates a candidate must pass whatever it gained: the base languages and the emotion transfer."""

from indextts_core.evaluation.gates import base_language_gate, by_language, emotion_gate


def _entry(lang, group, model, metric, mean, n):
    return {"language": lang, "group": group, "model": model, "metric": metric, "mean": mean, "n": n,
            "low": mean, "high": mean}


def test_by_language_pools_the_groups_weighted_by_their_items():
    table = [_entry("en", "seen", "base", "cer", 0.1, 3), _entry("en", "unseen", "base", "cer", 0.5, 1),
             _entry("all", "all", "base", "cer", 9.0, 4), _entry("am", "seen", "fine-tuned", "speaker_sim", 0.7, 2)]
    figures = by_language(table)
    assert abs(figures["en"]["base"]["cer"] - 0.2) < 1e-12 and figures["am"]["fine-tuned"]["speaker_sim"] == 0.7
    assert "all" not in figures


FIGURES = {"en": {"base": {"cer": 0.10, "speaker_sim": 0.80, "speaker_sim_verifier": 0.70},
                  "fine-tuned": {"cer": 0.20, "speaker_sim": 0.81, "speaker_sim_verifier": 0.69}},
           "zh": {"base": {"cer": 0.05, "speaker_sim": 0.8}, "fine-tuned": {"cer": 0.06, "speaker_sim": 0.79}}}


def test_a_base_language_regression_beyond_the_limit_refuses():
    gate = base_language_gate(FIGURES, ["zh", "en"], 0.05)
    assert not gate.passed and gate.measured and gate.status == "refused"
    assert gate.reason.startswith("base-language gate refused: en cer 0.200 vs base 0.100 (0.100 worse)")
    # the independent verifier's similarity is what the gate reads when the evaluation has it
    assert {c.metric for c in gate.checks if c.language == "en"} == {"cer", "speaker_sim_verifier"}
    assert {c.metric for c in gate.checks if c.language == "zh"} == {"cer", "speaker_sim"}
    assert base_language_gate(FIGURES, ["zh", "en"], 0.15).status == "passed"


def test_an_unreliable_judge_or_silent_outputs_are_not_measured_and_refuse_nothing():
    gate = base_language_gate(FIGURES, ["en"], 0.05, untrusted=["en"])
    assert gate.passed and gate.measured  # the similarity was still measured
    assert any(c.metric == "cer" and c.passed is None and "unreliable" in c.note for c in gate.checks)
    silent = {"en": {"base": {"speech_failure": 1.0}, "fine-tuned": {"speech_failure": 1.0}}}
    gate = base_language_gate(silent, ["zh", "en"], 0.05)
    assert gate.passed and not gate.measured and gate.status == "not measured"
    assert gate.reason.startswith("base-language gate not measured: en cer: not measured (no CER: outputs")
    nothing = base_language_gate({"am": FIGURES["en"]}, ["zh", "en"], 0.05)
    assert nothing.status == "not measured" and "none of zh, en was evaluated" in nothing.reason


def test_the_emotion_gate_refuses_a_candidate_that_lost_the_base_transfer():
    emotion = {"transfer_kept": {"fine-tuned": {"en": 0.4, "am": None, "all": 0.4}}}
    gate = emotion_gate(emotion, 0.5)
    assert gate.status == "refused" and "en transfer_kept 0.400" in gate.reason
    assert emotion_gate(emotion, 0.7).status == "passed"
    assert emotion_gate(None, 0.5).status == "not measured"
