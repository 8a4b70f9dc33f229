"""A transcript placed on VAD segments: sentences, the count match, CTC forced alignment on synthetic
emissions (known character frames), and the real path with a tiny random CTC model."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from indextts_core.curate.align import (
    align_characters,
    ctc_emissions,
    place_by_alignment,
    place_by_count,
    place_transcript,
    skipped_characters,
    split_sentences,
    tokens_for,
)
from indextts_core.curate.types import Segment
from indextts_core.errors import InputError
from indextts_core.evaluation.ctc import CTCTranscriber
from indextts_core.tiny import write_tiny_ctc

# ----------------------------------------------------------------------------------------- sentences


def test_split_sentences_amharic_paragraphs():
    text = ("ሰላም ነው።   እንዴት ነህ? በ1995 ዓ.ም. ተወለደ። ዋጋው 3.14 ብር ነው።\n\n"
            "አዲስ   አንቀጽ ነው፣ ግን አንድ ዓረፍተ ነገር ነው፤ አዎ።ቀጣዩ ተከተለ፧ \n  የመጨረሻ መስመር")
    assert split_sentences(text) == [
        "ሰላም ነው።", "እንዴት ነህ?", "በ1995 ዓ.ም. ተወለደ።", "ዋጋው 3.14 ብር ነው።",
        "አዲስ አንቀጽ ነው፣ ግን አንድ ዓረፍተ ነገር ነው፤ አዎ።", "ቀጣዩ ተከተለ፧", "የመጨረሻ መስመር"]


def test_split_sentences_english_abbreviations_and_numbers():
    text = ("Dr. Smith went home. He was born in 1995. Pi is 3.14 and e.g. U.S. stays whole... right?! "
            "She said \"yes.\" Then 1. is a list item.\r\nLast line without a stop")
    assert split_sentences(text) == [
        "Dr. Smith went home.", "He was born in 1995.",
        "Pi is 3.14 and e.g. U.S. stays whole... right?!", "She said \"yes.\"",
        "Then 1. is a list item.", "Last line without a stop"]


def test_split_sentences_drops_empty_and_keeps_cjk_marks():
    assert split_sentences("  \n\n ። \n") == ["።"]  # a lone mark is kept as what the text says
    assert split_sentences("") == []
    assert split_sentences("你好。再见！好吗？") == ["你好。", "再见！", "好吗？"]


# ----------------------------------------------------------------------------------------- by count


def test_place_by_count_both_ways():
    segs = [Segment(2.0, 3.0, speech_s=0.8), Segment(0.0, 1.5)]
    placed = place_by_count(segs, ["one.", "two."])
    assert placed == [Segment(0.0, 1.5, "one."), Segment(2.0, 3.0, "two.", 0.8)]  # in time order
    assert place_by_count(segs, ["one."]) is None
    assert place_by_count([], []) is None


# ----------------------------------------------------------------------------------------- synthetic alignment

VOCAB = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3, "|": 4, **{c: 5 + i for i, c in enumerate("abcdefgh")}}


def fake_transcriber(vocab: dict[str, int] = VOCAB) -> SimpleNamespace:
    tokenizer = SimpleNamespace(get_vocab=lambda: dict(vocab), pad_token_id=0, all_special_ids=[0, 1, 2, 3],
                                _word_delimiter_token="|")
    return SimpleNamespace(tokenizer=tokenizer)


def peaked(frames: int, peaks: list[tuple[int, int]], vocab: int = len(VOCAB)) -> torch.Tensor:
    """Log-probabilities that are blank everywhere except token ``id`` at frame ``f`` for each (f, id)."""
    logits = torch.full((frames, vocab), -8.0)
    logits[:, 0] = 8.0
    for frame, token in peaks:
        logits[frame, 0] = -8.0
        logits[frame, token] = 8.0
    return logits.log_softmax(-1)


def test_tokens_for_case_delimiter_and_skipped():
    asr = fake_transcriber()
    ids, where = tokens_for(asr, "Ab  c1. d")
    assert ids == [5, 6, 4, 7, 4, 8] and where == [0, 1, 2, 4, 7, 8]  # one delimiter per space run
    assert skipped_characters(asr, "Ab  c1. d") == {"1": 1, ".": 1}
    upper = fake_transcriber({"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3, "A": 5, "B": 6})
    assert tokens_for(upper, "ab b") == ([5, 6, 6], [0, 1, 3])  # no delimiter in that vocabulary
    assert tokens_for(asr, "  ") == ([], [])


def test_align_characters_finds_the_peaks():
    ids = [5, 6, 6, 7]  # a b b c: the repeated b needs a blank between
    frames = [3, 10, 14, 30]
    spans = align_characters(peaked(40, list(zip(frames, ids))), ids, blank=0)
    assert [s for s, _ in spans] == frames and all(s <= e for s, e in spans)
    assert align_characters(peaked(5, []), [], blank=0) == []
    with pytest.raises(InputError, match="need at least 5 frames"):
        align_characters(peaked(4, []), [5, 6, 6, 7], blank=0)


def _aligned(sentences: list[str], placements: list[tuple[float, float]], seconds: float = 0.02):
    """Synthetic emissions where each sentence's characters peak evenly across its (start, end) seconds;
    aligned back with align_characters into char_times for place_by_alignment."""
    asr = fake_transcriber()
    joined = " ".join(sentences)
    ids, where = tokens_for(asr, joined)
    starts, offset = [], 0
    for sentence, (start, end) in zip(sentences, placements):
        count = sum(1 for k, t in zip(where, ids) if offset <= k < offset + len(sentence) and t != 4)
        starts += list(np.linspace(start, end - seconds, count)) if count else []
        offset += len(sentence) + 1
    # the delimiters between sentences: halfway between their neighbours
    frames: list[int] = []
    it = iter(starts)
    for k, token in zip(where, ids):
        frames.append(-1 if token == 4 else int(round(next(it) / seconds)))
    for i, f in enumerate(frames):
        if f == -1:
            frames[i] = (frames[i - 1] + frames[i + 1]) // 2
    total = int(max(end for _, end in placements) / seconds) + 10
    spans = align_characters(peaked(total, list(zip(frames, ids))), ids, blank=0)
    assert [s for s, _ in spans] == frames
    times: list[tuple[float, float] | None] = [None] * len(joined)
    for (first, last), k in zip(spans, where):
        times[k] = (first * seconds, (last + 1) * seconds)
    return times


SEGS = [Segment(0.0, 2.0, speech_s=1.8), Segment(3.0, 5.0, speech_s=1.9), Segment(6.0, 8.0), Segment(9.0, 10.0)]


def test_place_by_alignment_each_sentence_in_its_segment_and_no_text():
    sentences = ["abc abc.", "de fa", "gh ha", "bad."]
    times = _aligned(sentences, [(0.2, 1.0), (1.1, 1.8), (3.2, 4.8), (6.1, 7.5)])
    placed, rejected = place_by_alignment(SEGS, sentences, times)
    assert placed == [Segment(0.0, 2.0, "abc abc. de fa", 1.8), Segment(3.0, 5.0, "gh ha", 1.9),
                      Segment(6.0, 8.0, "bad.")]
    assert [(s, r.reason) for s, r in rejected] == [(SEGS[3], "no_text")]


def test_place_by_alignment_straddling_merges_or_rejects():
    sentences = ["abc", "de fa gh", "bad"]
    placements = [(0.2, 1.0), (1.2, 4.0), (6.2, 7.8)]  # the second runs 0.8 s in the first segment, 1 s in the next
    times = _aligned(sentences, placements)
    placed, rejected = place_by_alignment(SEGS[:3], sentences, times, max_s=15.0)
    assert placed == [Segment(0.0, 5.0, "abc de fa gh", 3.7), Segment(6.0, 8.0, "bad")]
    assert rejected == []
    placed, rejected = place_by_alignment(SEGS[:3], sentences, times, max_s=4.0)
    assert placed == [Segment(6.0, 8.0, "bad")]
    assert [(s.start_s, s.text, r.reason) for s, r in rejected] == [
        (0.0, "abc", "text_straddles_cut"), (3.0, "de fa gh", "text_straddles_cut")]
    assert rejected[0][1].numbers["joined_s"] == 5.0
    # running 0.2 s past a cut is tolerated: no merge
    times = _aligned(sentences, [(0.2, 1.0), (1.8, 4.6), (6.2, 7.8)])
    placed, _ = place_by_alignment(SEGS[:3], sentences, times, max_s=4.0)
    assert [s.text for s in placed] == ["abc", "de fa gh", "bad"]


def test_place_by_alignment_reports_unaligned_and_outside_speech():
    sentences = ["abc", "123 !", "de", "fa"]
    times = _aligned(["abc", "de", "fa"], [(0.2, 1.0), (3.5, 4.0), (8.3, 8.8)])
    # put the unalignable sentence back in between (no character of it is in the vocabulary)
    times = times[:4] + [None] * 6 + times[4:]
    placed, rejected = place_by_alignment(SEGS, sentences, times)
    assert [s.text for s in placed] == ["abc", "de"]
    reasons = {r.reason: (s, r) for s, r in rejected}
    assert reasons["unaligned_text"][0].text == "123 !" and reasons["unaligned_text"][0].duration_s == 0
    assert 1.0 <= reasons["unaligned_text"][0].start_s <= 3.5
    assert reasons["text_outside_speech"][0].text == "fa"
    assert sorted(r.reason for _, r in rejected) == ["no_text", "no_text", "text_outside_speech", "unaligned_text"]
    with pytest.raises(InputError, match="char_times"):
        place_by_alignment(SEGS, sentences, times[:-1])


# ----------------------------------------------------------------------------------------- place_transcript


def test_place_transcript_count_match_and_no_aligner():
    segs = [Segment(0.0, 1.0), Segment(1.5, 2.5)]
    placed, rejected, info = place_transcript(segs, "One. Two.", "a.flac")
    assert [s.text for s in placed] == ["One.", "Two."] and rejected == [] and info["method"] == "count"
    for judge in (None, SimpleNamespace(name="whisper:tiny")):
        placed, rejected, info = place_transcript(segs, "One. Two. Three.", "a.flac", transcriber=judge)
        assert placed == [] and [r.reason for _, r in rejected] == ["no_aligner", "no_aligner"]
        assert "Whisper judge cannot align" in rejected[0][1].detail and "curate.asr_model" in rejected[0][1].detail
    placed, rejected, info = place_transcript(segs, "  \n", "a.flac")
    assert [r.reason for _, r in rejected] == ["no_text", "no_text"]


@pytest.fixture(scope="module")
def tiny_ctc(tmp_path_factory: pytest.TempPathFactory) -> CTCTranscriber:
    return CTCTranscriber(write_tiny_ctc(tmp_path_factory.mktemp("ctc") / "mms", seed=0, languages=["amh"]))


def _recording(seconds: float = 4.0) -> np.ndarray:
    rng = np.random.default_rng(7)
    wave = rng.standard_normal(int(16000 * seconds)).astype(np.float32) * 0.1
    wave[16000:24000] *= 0.01  # a quiet stretch, as between sentences
    return wave


def test_ctc_emissions_windows_join_like_one_pass(tiny_ctc: CTCTranscriber):
    wave = _recording(3.0)
    short, seconds = ctc_emissions(tiny_ctc, wave, "am", window_s=0.7)
    whole, _ = ctc_emissions(tiny_ctc, wave, "am", window_s=10.0)
    assert short.shape == whole.shape and short.shape[1] == len(tiny_ctc.tokenizer.get_vocab())
    assert seconds == pytest.approx(20 / 16000)  # the tiny model's conv strides 5 * 2 * 2
    assert short.shape[0] == pytest.approx(3.0 / seconds, abs=2)
    assert torch.allclose(short.exp().sum(-1), torch.ones(short.shape[0]), atol=1e-4)
    assert (short.argmax(-1) == whole.argmax(-1)).float().mean() > 0.9  # the context makes windows agree


def test_place_transcript_aligns_with_a_tiny_ctc(tiny_ctc: CTCTranscriber):
    wave = _recording(3.0)
    segs = [Segment(0.0, 0.9), Segment(1.1, 1.9), Segment(2.1, 3.0)]
    text = "ሰለ ሐመ። ሠረ ሰቀ በተ።\nሀለ ሐመ? ቀበ 1995 ተሰ ረ። ሀለ ሐመ ሠረ።"  # the tiny vocabulary's letters
    runs = [place_transcript(segs, text, "book/ch01.flac", tiny_ctc, wave, language="am", window_s=1.5)
            for _ in range(2)]
    placed, rejected, info = runs[0]
    assert runs[0] == runs[1]  # deterministic
    assert info["method"] == "alignment" and info["sentences"] == 5
    assert info["skipped"] == {"1": 1, "9": 2, "5": 1, "።": 4, "?": 1} and info["skipped_characters"] == 9
    assert placed and all(s.text for s in placed)
    sentences = split_sentences(text)
    # every sentence is placed (kept or rejected with its segment) or reported on its own
    found = " ".join(s.text for s in placed) + " " + " ".join(s.text or "" for s, _ in rejected)
    assert all(sentence in found for sentence in sentences)
    covered = [(s.start_s, s.end_s) for s in placed] + [(s.start_s, s.end_s) for s, r in rejected
                                                         if r.reason in ("no_text", "text_straddles_cut")]
    assert sum(e - b for b, e in covered) == pytest.approx(sum(s.duration_s for s in segs))
    assert {r.reason for _, r in rejected} <= {"no_text", "text_straddles_cut", "unaligned_text",
                                               "text_outside_speech"}


def test_place_transcript_limits(tiny_ctc: CTCTranscriber):
    wave = _recording(1.0)
    segs = [Segment(0.0, 0.4), Segment(0.5, 1.0)]
    with pytest.raises(InputError, match=r"book/ch02\.flac: too long to align.*subtitles.*chapters"):
        place_transcript(segs, "ሰለ። ሐመ። ሠረ።", "book/ch02.flac", tiny_ctc, wave, max_cells=1000)
    placed, rejected, info = place_transcript(segs, "ሰለ። ሐመ። " + "ሰ ለ " * 500, "book/ch02.flac", tiny_ctc,
                                              wave[:1600])
    assert placed == [] and {r.reason for _, r in rejected} == {"text_too_long"}
    with pytest.raises(InputError, match="needs the recording's audio"):
        place_transcript(segs, "ሰለ። ሐመ። ሠረ።", "book/ch02.flac", tiny_ctc, None)


def test_tokens_for_uses_the_language_vocabulary(tiny_ctc: CTCTranscriber):
    tiny_ctc._select("am")
    ids, where = tokens_for(tiny_ctc, "ሰላም abc")
    assert where == [0] and ids == [tiny_ctc.tokenizer.get_vocab()["ሰ"]]  # Latin letters: not in amh's vocabulary
