"""The evaluation set: round-robin across speakers, ids and digest, the paragraph probe."""

from __future__ import annotations

import random

import pytest

from indextts_core.evaluation.evalset import EvalItem, build_eval_set, end_sentence, round_robin


def _row(cid: str, speaker: str, lang: str = "am", text: str = "ሰላም", duration: float | None = 2.0,
         codes: int | None = 50) -> dict:
    return {"id": cid, "speaker": speaker, "language": lang, "text": text, "audio": f"/a/{cid}.wav",
            "duration": duration, "code_len": codes}


def _prolific() -> tuple[list[dict], list[dict]]:
    """Three trained speakers with 5, 1 and 1 held-out clips."""
    train = [_row(f"{s}_t", s) for s in ("big", "x", "y")]
    val = [_row(f"big_{i}", "big") for i in range(5)] + [_row("x_0", "x"), _row("y_0", "y")]
    return train, val


def test_round_robin_takes_one_clip_per_speaker_first():
    train, val = _prolific()
    for seed in range(5):
        s = build_eval_set(train, val, max_items=3, seed=seed)
        assert sorted(i.speaker for i in s.items) == ["big", "x", "y"]
        assert s.skipped == {"over_max_items": 4}
        assert s.speakers() == {"am/seen": 3} and s.counts() == {"am/seen": 3}


def test_round_robin_rounds_and_order():
    def item(cid: str, speaker: str) -> EvalItem:
        return EvalItem(id=cid, group="seen", language="am", speaker=speaker, text="t", prompt_id="p",
                        prompt_audio="/p.wav")

    cands = [item(f"a{i}", "a") for i in range(4)] + [item(f"b{i}", "b") for i in range(2)] + [item("c0", "c")]
    chosen = round_robin(cands, max_items=6, seed=3)
    first = [i.speaker for i in chosen[:3]]  # round 1: every speaker once, in the speakers' rank order
    assert sorted(first) == ["a", "b", "c"]
    assert [i.speaker for i in chosen[3:5]] == [x for x in first if x != "c"]  # round 2: c has no more
    assert chosen[5].speaker == "a"  # round 3, cut at max_items
    assert round_robin(cands, max_items=100, seed=3) == round_robin(cands[::-1], max_items=100, seed=3)
    assert len(round_robin(cands, max_items=100, seed=3)) == 7 and round_robin([], max_items=3, seed=0) == []


def test_deterministic_and_independent_of_row_order():
    train, val = _prolific()
    val += [_row(f"u{i}", f"spk{i % 3}") for i in range(9)]  # unseen speakers, three clips each
    a = build_eval_set(train, val, max_items=4, seed=11, paragraph_sentences=3)
    assert build_eval_set(train, val, max_items=4, seed=11, paragraph_sentences=3).items == a.items
    rng = random.Random(0)
    for _ in range(5):
        t2, v2 = train[:], val[:]
        rng.shuffle(t2)
        rng.shuffle(v2)
        b = build_eval_set(t2, v2, max_items=4, seed=11, paragraph_sentences=3)
        assert b.ids() == a.ids() and b.digest() == a.digest() and b.items == a.items
    assert len(a.digest()) == 16 and int(a.digest(), 16) >= 0
    assert a.speakers()["am/unseen"] == 3 and a.counts()["am/unseen"] == 4
    other = build_eval_set(train, val, max_items=3, seed=11)
    assert other.digest() != a.digest()


def test_a_new_speaker_moves_little():
    train, val = _prolific()
    before = build_eval_set(train, val, max_items=2, seed=1)
    after = build_eval_set(train + [_row("z_t", "z")], val + [_row("z_0", "z")], max_items=2, seed=1)
    assert len(set(before.ids()) ^ set(after.ids())) <= 2  # at most one item replaced


def test_paragraph_item():
    train = [_row("s1_t", "s1"), _row("e1_t", "e1", "en")]
    val = ([_row(f"s1_{i}", "s1", text=t) for i, t in enumerate(["ሰላም ነው", "ደህና ነህ?", "እሺ።"])]
           + [_row("u1_a", "u1", text="አዎ"), _row("u1_b", "u1", text="አይ")]
           + [_row("e1_0", "e1", "en", "Hello there", 1.5, 30), _row("e1_1", "e1", "en", "Fine!", 0.5, None)])
    s = build_eval_set(train, val, max_items=10, seed=2, sentences=[("am", "ሌላ")], paragraph_sentences=4)
    groups = [i.group for i in s.items]
    assert groups.index("paragraph") > max(i for i, g in enumerate(groups) if g in ("seen", "unseen"))
    assert groups[-1] == "sentences"
    am = next(i for i in s.items if i.id == "paragraph-am")
    held = [i for i in s.items if i.language == "am" and i.group in ("seen", "unseen")]
    assert [i.group for i in held] == ["seen"] * 3 + ["unseen"] * 2
    parts = held[:4]
    assert am.sentences == tuple(i.text if i.text[-1] in "?።" else i.text + "።" for i in parts)
    assert am.text == " ".join(am.sentences) and all(p in am.text for p in am.sentences)
    assert (am.speaker, am.prompt_id, am.prompt_audio) == (held[0].speaker, held[0].prompt_id, held[0].prompt_audio)
    assert am.reference_audio is None and am.reference_duration == pytest.approx(8.0) and am.reference_codes == 200
    en = next(i for i in s.items if i.id == "paragraph-en")
    held_en = [i for i in s.items if i.language == "en" and i.group == "seen"]
    assert en.sentences == tuple(end_sentence(i.text) for i in held_en)
    assert set(en.sentences) == {"Hello there.", "Fine!"}
    assert en.reference_duration == pytest.approx(2.0) and en.reference_codes is None  # one component has none
    assert s.counts()["am/paragraph"] == 1 and s.counts()["en/paragraph"] == 1
    assert s.speakers()["am/paragraph"] == 1
    assert next(i for i in s.items if i.group == "sentences").prompt_id == held[0].prompt_id


def test_paragraph_voice_falls_back_to_the_first_unseen_item():
    val = [_row("u1_a", "u1", text="አንድ"), _row("u1_b", "u1", text="ሁለት")]
    s = build_eval_set([], val, max_items=4, seed=0, paragraph_sentences=4)
    p = s.items[-1]
    assert p.group == "paragraph" and p.speaker == "u1" and p.prompt_id == s.items[0].prompt_id
    assert len(p.sentences) == 2


def test_no_paragraph_when_off_or_too_few_items():
    train = [_row("s1_t", "s1"), _row("e1_t", "e1", "en")]
    val = [_row("s1_0", "s1"), _row("s1_1", "s1"), _row("e1_0", "e1", "en", "Only one")]
    assert all(i.group != "paragraph" for i in build_eval_set(train, val, max_items=4, seed=0).items)
    s = build_eval_set(train, val, max_items=4, seed=0, paragraph_sentences=3)
    assert [i.id for i in s.items if i.group == "paragraph"] == ["paragraph-am"]  # en has a single item
    assert "en/paragraph" not in s.counts()


def test_end_sentence():
    assert end_sentence("Hello") == "Hello."
    assert end_sentence("Hello?") == "Hello?"
    assert end_sentence("“Hi.”") == "“Hi.”"
    assert end_sentence("ሰላም ነው") == "ሰላም ነው።"
    assert end_sentence("ሰላም ነው፧") == "ሰላም ነው፧"
