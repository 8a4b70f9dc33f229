"""SRT/WebVTT parsing and fitting cues to the clip duration limits."""

from __future__ import annotations

import pytest

from indextts_core.curate.subtitles import Cue, fit_cues, parse_subtitles, split_sentences
from indextts_core.errors import InputError

SRT = """\ufeff1
00:00:01,000 --> 00:00:03,500
<i>Hello</i> <font color="#ff0000">there</font>,
  <b>world</b> &amp; friends

2
00:00:04,000 --> 00:00:06,000
{\\an8}Second&nbsp;cue

3
00:00:07,000 --> 00:00:08,000
<i></i>

4
00:00:05,500 --> 00:00:09,000
Third line\\Nsplit
"""


def test_srt_markup_multiline_entities_sorted_and_empty_dropped():
    dropped: list[Cue] = []
    cues = parse_subtitles(SRT.replace("\n", "\r\n"), "talk.srt", dropped=dropped)
    assert [c.text for c in cues] == ["Hello there, world & friends", "Second cue", "Third line split"]
    assert [(c.index, c.start_s, c.end_s, c.line) for c in cues] == [
        (1, 1.0, 3.5, 2), (2, 4.0, 6.0, 7), (4, 5.5, 9.0, 15)]
    assert [(d.index, d.line, d.text) for d in dropped] == [(3, 11, "")]
    assert parse_subtitles(SRT, "talk.srt") == cues


def test_srt_blank_line_inside_cue_and_missing_separator():
    text = "1\n00:00:01,000 --> 00:00:02,000\nfirst\n\nmore of it\n2\n00:00:03,000 --> 00:00:04,000\nsecond\n"
    cues = parse_subtitles(text, "a.srt")
    assert [(c.text, c.line) for c in cues] == [("first more of it", 2), ("second", 7)]


@pytest.mark.parametrize(("text", "line", "what"), [
    ("1\n00:00:01,000 --> 00:00:02,000\nok\n\n2\n00:00:03,000 --> 00:0x:04,000\nbad\n", 6, "malformed timing"),
    ("1\n00:00:01,000 --> 00:00:02,000\nok\n\n2\n00:00:03,000 -> 00:00:04,000\nbad\n", 6, "malformed timing"),
    ("1\n00:00:05,000 --> 00:00:04,000\nbackwards\n", 2, "at or before its start"),
    ("1\n00:00:05,000 --> 00:00:05,000\nempty span\n", 2, "at or before its start"),
    ("1\n00:00:01,000 --> 00:01:75,000\nsixty\n", 2, "below 60"),
    ("1\nhello\n", 2, "expected the timing line of cue 1"),
    ("just text\n", 1, "expected a cue"),
])
def test_bad_timing_names_file_and_line(text: str, line: int, what: str):
    with pytest.raises(InputError, match=rf"^bad\.srt:{line}: .*{what}"):
        parse_subtitles(text, "bad.srt")


VTT = """WEBVTT - a test
Kind: captions

NOTE this is a comment
00:00:00.000 --> 00:00:01.000 is not a cue

STYLE
::cue { color: yellow }

intro
00:01.000 --> 00:03.000 align:start position:10%
<v Roger Bingham>We are <c.yellow>in</c> New York</v>

00:00:03.500 --> 00:00:05.250 line:0
<v.loud Anna><00:00:03.600>Hi <00:00:04.000>there &lt;3

REGION
id:fred
"""


def test_vtt_header_note_style_settings_voice_and_timestamp_tags():
    cues = parse_subtitles(VTT, "clip.vtt")
    assert [(c.start_s, c.end_s, c.text, c.line) for c in cues] == [
        (1.0, 3.0, "We are in New York", 11), (3.5, 5.25, "Hi there <3", 14)]
    assert [c.text for c in parse_subtitles(VTT, "clip.txt")] == ["We are in New York", "Hi there <3"]  # header


def test_vtt_by_suffix_without_header():
    cues = parse_subtitles("00:02.5 --> 00:04.000\nshort fraction\n", "x.vtt")
    assert (cues[0].start_s, cues[0].end_s) == (2.5, 4.0)


def _cue(i: int, start: float, end: float, text: str = "") -> Cue:
    return Cue(i, start, end, text or f"cue{i}", 10 * i)


def test_overlaps_cut_previous_end_and_reject_contained():
    cues = [_cue(1, 0, 4), _cue(2, 3, 7), _cue(3, 4, 5), _cue(4, 8, 10), _cue(5, 8, 11)]
    kept, rejected = fit_cues(cues, 1.0, 15.0, max_gap_s=0.0)
    assert [(s.start_s, s.end_s, s.text) for s in kept] == [(0, 3, "cue1"), (3, 7, "cue2"), (8, 11, "cue5")]
    assert all(s.speech_s is None for s in kept)
    assert [(seg.start_s, seg.end_s, r.reason, r.numbers["cues"], r.numbers["inside_cue"]) for seg, r in rejected] == [
        (4, 5, "overlap", [3], 2), (8, 10, "overlap", [4], 5)]
    assert rejected[0][1].numbers["lines"] == [30] and rejected[0][1].numbers["duration_s"] == 1.0


def test_short_cues_merged_with_following_then_preceding():
    cues = [_cue(1, 0.0, 0.4, "a"), _cue(2, 0.6, 0.9, "b"), _cue(3, 1.0, 1.3, "c"),  # chain into one
            _cue(4, 5.0, 7.0, "long"), _cue(5, 7.5, 7.8, "tail"),  # last: merged backwards
            _cue(6, 20.0, 20.3, "lonely")]  # too far from anything
    kept, rejected = fit_cues(cues, 1.0, 5.0, max_gap_s=1.0)
    assert [(s.start_s, s.end_s, s.text) for s in kept] == [(0.0, 1.3, "a b c"), (5.0, 7.8, "long tail")]
    [(seg, r)] = rejected
    assert (r.reason, seg.text, r.numbers["duration_s"], r.numbers["cues"], r.numbers["lines"]) == (
        "too_short", "lonely", 0.3, [6], [60])


def test_merge_respects_max_duration():
    kept, rejected = fit_cues([_cue(1, 0.0, 0.5, "a"), _cue(2, 0.6, 5.0, "b")], 1.0, 4.8)
    assert [s.text for s in kept] == ["b"] and [r.reason for _, r in rejected] == ["too_short"]


def test_long_cue_split_at_sentence_ends_proportional_to_characters():
    text = "One two three. Four five six! Seven eight nine? Ten eleven twelve."
    kept, rejected = fit_cues([_cue(1, 10.0, 22.0, text)], 1.0, 7.0)
    assert not rejected
    assert [s.text for s in kept] == ["One two three. Four five six!", "Seven eight nine? Ten eleven twelve."]
    chars = [len(p) for p in split_sentences(text)]
    cut = 10.0 + 12.0 * (chars[0] + chars[1]) / sum(chars)
    assert kept[0].start_s == 10.0 and kept[1].end_s == 22.0
    assert kept[0].end_s == kept[1].start_s == pytest.approx(cut, abs=1e-3)


def test_split_sentences_ethiopic_cjk_and_decimals():
    assert split_sentences("ሰላም ነው። እንዴት ነህ፧ ደህና") == ["ሰላም ነው።", "እንዴት ነህ፧", "ደህና"]
    assert split_sentences("你好。我很好！谢谢") == ["你好。", "我很好！", "谢谢"]
    assert split_sentences("It costs 3.5 dollars. \"Yes!\" he said") == ["It costs 3.5 dollars.", "\"Yes!\"", "he said"]


def test_too_long_without_sentence_end_and_too_short_pieces():
    kept, rejected = fit_cues([_cue(1, 0.0, 20.0, "one endless sentence without a stop")], 1.0, 15.0)
    assert kept == []
    [(seg, r)] = rejected
    assert (r.reason, seg.start_s, seg.end_s, r.numbers["duration_s"], r.numbers["max_s"]) == (
        "too_long", 0.0, 20.0, 20.0, 15.0)
    # a sentence too long on its own is rejected, the next one kept
    kept, rejected = fit_cues([_cue(1, 0.0, 20.0, "a" * 79 + ". " + "b" * 19 + ".")], 1.0, 15.0)
    assert [(s.start_s, s.end_s) for s in kept] == [(16.0, 20.0)]
    assert [(r.reason, seg.text[-3:], seg.end_s) for seg, r in rejected] == [("too_long", "aa.", 16.0)]
    # a sentence too short to stand alone goes with its neighbour rather than being rejected
    kept, rejected = fit_cues([_cue(1, 0.0, 10.0, "a" * 40 + ". " + "b" * 55 + ". c.")], 2.0, 6.0)
    assert [s.text[-5:] for s in kept] == ["aaaa.", "b. c."] and not rejected


def test_fit_cues_checks_limits():
    with pytest.raises(ValueError):
        fit_cues([], 2.0, 1.0)
