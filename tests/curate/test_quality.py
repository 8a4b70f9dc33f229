"""The curate quality gates (each way), the script check and the duplicate search."""

from __future__ import annotations

import numpy as np
import pytest

from indextts_core.config import CurateConfig
from indextts_core.curate import quality as q
from indextts_core.curate.quality import ClipKey, check_clip, find_duplicates, pcm_digest, script_share
from indextts_core.curate.types import Rejection

CFG = CurateConfig(min_duration_s=1.0, max_duration_s=15.0, max_clipped_share=0.001, max_silence_share=0.6,
                   min_dnsmos=2.0, max_cer=0.3, check_script=True)
GOOD = dict(duration_s=5.0, speech_s=4.0, clipped=0.0, text="ሰላም ለዓለም", language="am", cfg=CFG, dnsmos=3.5, cer=0.05)


def reasons(rejections: list[Rejection]) -> list[str]:
    return [r.reason for r in rejections]


def test_good_clip_passes_every_gate():
    assert check_clip(**GOOD) == []


@pytest.mark.parametrize(("change", "reason", "number"), [
    ({"duration_s": 0.5, "speech_s": 0.4}, "too_short", "duration_s"),
    ({"duration_s": 16.0, "speech_s": 14.0}, "too_long", "duration_s"),
    ({"clipped": 0.01}, "clipping", "clipped_share"),
    ({"speech_s": 1.0}, "silence", "silence_share"),
    ({"dnsmos": 1.62}, "dnsmos", "dnsmos"),
    ({"cer": 0.45}, "cer", "cer"),
    ({"text": "hello world"}, "script", "script_share"),
    ({"text": " ... "}, "no_text", "text"),
])
def test_each_gate_fails_alone_with_its_numbers(change, reason, number):
    out = check_clip(**{**GOOD, **change})
    assert reasons(out) == [reason]
    assert number in out[0].numbers and out[0].detail
    if reason != "no_text":
        assert "threshold" in out[0].numbers


def test_dnsmos_detail_and_numbers():
    (r,) = check_clip(**{**GOOD, "dnsmos": 1.62})
    assert r.detail == "DNSMOS OVRL 1.62 < 2.0"
    assert r.numbers == {"dnsmos": 1.62, "threshold": 2.0}


def test_gates_at_their_thresholds_pass():
    assert check_clip(**{**GOOD, "duration_s": 1.0, "speech_s": 0.9}) == []
    assert check_clip(**{**GOOD, "duration_s": 15.0, "speech_s": 14.0}) == []
    assert check_clip(**{**GOOD, "clipped": 0.001, "dnsmos": 2.0, "cer": 0.3}) == []
    assert check_clip(**{**GOOD, "speech_s": 2.0}) == []  # 60% silence: not above


def test_gates_not_applied_without_their_inputs():
    off = CFG.model_copy(update={"min_dnsmos": None, "check_script": False})
    assert check_clip(**{**GOOD, "cfg": off, "dnsmos": 1.0, "text": "hello"}) == []
    loose = {**GOOD, "speech_s": None, "clipped": None, "dnsmos": None, "cer": None, "text": None}
    assert check_clip(**loose) == []


def test_every_failing_gate_is_reported_in_order():
    out = check_clip(duration_s=0.5, speech_s=0.1, clipped=0.5, text="hello", language="am", cfg=CFG,
                     dnsmos=1.0, cer=0.9)
    assert reasons(out) == ["too_short", "clipping", "silence", "dnsmos", "cer", "script"]
    assert all(r.reason in q.REASONS for r in out)


def test_clipped_share_and_silence_share():
    x = np.zeros(1000, dtype=np.float32)
    x[:5] = 1.0
    x[5:10] = -0.9995
    x[10:20] = 0.99
    assert q.clipped_share(x) == pytest.approx(0.01)
    assert q.clipped_share(np.array([32767, -32768, 0, 100], dtype=np.int16)) == pytest.approx(0.5)
    assert q.clipped_share(np.zeros((0,))) == 0.0
    assert q.clipped_share(np.ones((10, 2)) * 0.5) == 0.0
    assert q.silence_share(10.0, 4.0) == pytest.approx(0.6)
    assert q.silence_share(10.0, 11.0) == 0.0
    assert q.silence_share(0.0, 0.0) == 1.0


def test_script_share_amharic_english_mixed_unknown():
    assert script_share("ሰላም ለዓለም።", "am") == (1.0, "Ethiopic")
    assert script_share("Hello, world!", "en") == (1.0, "Latin")
    assert script_share("ሰላም", "en") == (0.0, "Latin")
    share, script = script_share("ሰላም hello", "am")  # 3 Ethiopic letters, 5 Latin
    assert script == "Ethiopic" and share == pytest.approx(3 / 8)
    assert script_share("Grüße, Ça va? Ñandú", "de")[0] == 1.0
    assert script_share("Привет", "ru") == (1.0, "Cyrillic")
    assert script_share("こんにちは、カタカナと漢字ー", "ja") == (1.0, "Hiragana+Katakana+Han")
    assert script_share("你好世界", "zh") == (1.0, "Han")
    assert script_share("안녕하세요", "ko") == (1.0, "Hangul")
    assert script_share("سلام دنیا", "fa") == (1.0, "Arabic")
    assert script_share("नमस्ते", "hi") == (1.0, "Devanagari")
    assert script_share("Γειά σου", "el")[0] == 1.0
    assert script_share("Zdravo", "sr-Latn") == (1.0, "Latin")
    assert script_share("anything", "xx") == (1.0, "unknown")
    assert script_share("12 34", "am") == (1.0, "Ethiopic")


def test_pcm_digest_of_float_samples_matches_the_written_file(tmp_path):
    import soundfile as sf

    rng = np.random.default_rng(0)
    for dtype in (np.float32, np.float64):
        x = rng.uniform(-1.2, 1.2, 22050).astype(dtype)
        x[:5] = [0.5 / 32768, 1.5 / 32768, -2.5 / 32768, 1.0, -1.0]  # halfway cases and full scale
        path = tmp_path / f"clip-{np.dtype(dtype).name}.flac"
        sf.write(path, q.to_pcm16(x), 22050, subtype="PCM_16")
        back, _ = sf.read(path, dtype="int16")
        assert pcm_digest(x) == pcm_digest(back) == pcm_digest(back.astype("<i2").tobytes())
        assert list(back[:5]) == [0, 2, -2, 32767, -32768]
    assert pcm_digest(np.zeros(10, np.float32)) != pcm_digest(np.full(10, 1e-3, np.float32))
    with pytest.raises(TypeError):
        pcm_digest(np.zeros(3, np.int32))


def key(id_: str, digest: str, text: str | None, duration: float) -> ClipKey:
    return ClipKey(id=id_, digest=digest, text=text, duration_s=duration)


def test_exact_duplicates_keep_the_first():
    out = find_duplicates([key("a", "d1", "one", 2.0), key("b", "d2", "two", 3.0), key("c", "d1", "three", 9.0),
                           key("d", "d1", None, 2.0)], near_tolerance_s=0.15)
    assert set(out) == {"c", "d"}
    assert out["c"] == Rejection("duplicate", "same audio as a", {"of": "a"})


def test_near_duplicates_within_and_outside_the_tolerance():
    clips = [key("a", "1", "Hello, World!", 3.00), key("b", "2", "hello world", 3.10),
             key("c", "3", "HELLO  world.", 3.20), key("d", "4", "hello world", 2.85),
             key("e", "5", "hello there", 3.00)]
    out = find_duplicates(clips, near_tolerance_s=0.15)
    assert set(out) == {"b", "d"}
    assert out["b"].reason == "near_duplicate" and out["b"].numbers["of"] == "a"
    assert out["b"].numbers["difference_s"] == pytest.approx(0.1)
    assert out["d"].numbers["of"] == "a"  # exactly at the tolerance counts
    # c is 0.2 s from a (kept) and 0.1 s from b, but b is rejected: c is kept
    assert "c" not in out


def test_near_duplicate_names_the_closest_kept_clip():
    clips = [key("a", "1", "x y", 1.0), key("b", "2", "x y", 1.2), key("c", "3", "x y", 1.13)]
    assert find_duplicates(clips, 0.15)["c"].numbers["of"] == "b"


def test_duplicates_depend_on_the_order():
    a, b = key("a", "d", "same", 2.0), key("b", "d", "same", 2.0)
    assert set(find_duplicates([a, b], 0.1)) == {"b"}
    assert set(find_duplicates([b, a], 0.1)) == {"a"}
    c, d = key("c", "1", "text", 2.0), key("d", "2", "text", 2.05)
    assert find_duplicates([d, c], 0.1)["c"].numbers["of"] == "d"


def test_empty_text_is_never_a_near_duplicate():
    clips = [key("a", "1", "", 2.0), key("b", "2", "", 2.0), key("c", "3", None, 2.0), key("d", "4", "?!", 2.0),
             key("e", "5", " . ", 2.0)]
    assert find_duplicates(clips, 1.0) == {}
    assert find_duplicates([], 1.0) == {}


def test_many_clips_of_one_text_stay_fast():
    clips = [key(str(i), str(i), "same words", i * 0.1) for i in range(20000)]
    out = find_duplicates(clips, 0.15)
    assert len(out) == 10000 and all(r.reason == "near_duplicate" for r in out.values())
