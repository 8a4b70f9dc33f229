"""What the console says about an evaluation: pace per language and the emotion transfer kept."""

from flows.printing import emotion_lines, forgetting_lines, pace_lines


def test_pace_lines_give_each_model_rate_and_drift_per_language():
    pace = {"reference": {"en": {"chars_per_s": 12.8, "n": 4}, "all": {"chars_per_s": 9.0, "n": 8}},
            "fine-tuned": {"en": {"chars_per_s": 14.08, "n": 4, "pace_drift": 0.1, "common": 4}}}
    assert pace_lines(pace) == ["pace en (chars/s, drift vs the recordings): reference 12.8, fine-tuned 14.1 (+10%)"]
    assert pace_lines(None) == []


def test_emotion_lines_say_what_share_of_the_base_transfer_was_kept():
    emotion = {"transfer_kept": {"fine-tuned": {"en": 0.5, "am": None, "all": 0.5}}}
    assert emotion_lines(emotion) == ["emotion transfer kept by fine-tuned (of the base's): am not measurable, "
                                      "en 0.50"]
    assert emotion_lines({}) == []


def test_forgetting_lines_name_the_replay_share_and_each_alarm():
    forgetting = {"en": {"baseline": 4.0, "last": 4.8, "worst_rise": 0.2, "alarm": True},
                  "zh": {"baseline": 4.0, "last": 3.8, "worst_rise": -0.05, "alarm": False}}
    assert forgetting_lines({"replay.token_share": 0.201}, forgetting) == [
        "replay: 20.1% of each epoch's tokens (mean over epochs)",
        "forgetting (worst rise of a base language's validation loss above step 0): en +20.0% ALARM, zh -5.0%"]
    assert forgetting_lines({}, None) == []
