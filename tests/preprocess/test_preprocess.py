"""Preprocessing: batched == solo, incremental and resumable work, OOM without loss, every gate reported."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from indextts_core.utils.fileio import read_jsonl
from indextts_core.text.frontend import TextFrontend
from indextts_core.preprocess import Clip, FeatureExtractor, clips_from_manifests, preprocess
from indextts_core.preprocess.shards import ShardReader
from tests_support import extend_tokenizer
from indextts_core.config import IngestConfig, PreprocessConfig
from tests_support import DEMO_DIR, sine

LIMITS = {"min_duration_s": 0.5, "max_duration_s": 36.0}  # the ingest: duration limits


@pytest.fixture(scope="module")
def fe() -> TextFrontend:
    return TextFrontend()


@pytest.fixture(scope="module")
def demo_clips(tmp_path_factory: pytest.TempPathFactory) -> list[Clip]:
    from indextts_core.data.ingest import ManifestInput, ingest

    out = tmp_path_factory.mktemp("ingest")
    result = ingest([ManifestInput(DEMO_DIR / "manifest.jsonl")], out, IngestConfig(), seed=1234)
    return clips_from_manifests({"train": result.train, "val": result.val})


@pytest.fixture(scope="module")
def tokenizer(tiny_bundle, demo_clips, fe, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tok")
    corpus = {lang: [fe(c.text, lang) for c in demo_clips if c.language == lang] for lang in ("am",)}
    return extend_tokenizer(tiny_bundle.tokenizer_path, corpus, out, fe)


@pytest.fixture(scope="module")
def extractor(tiny_bundle) -> FeatureExtractor:
    torch.set_num_threads(2)
    return FeatureExtractor(tiny_bundle, torch.device("cpu"))


def _waves(clips: list[Clip], n: int) -> list[np.ndarray]:
    from indextts_core.data.audio import load_audio

    return [load_audio(c.audio, 16000).samples for c in clips[:n]]


def test_batched_equals_solo(extractor: FeatureExtractor, demo_clips: list[Clip]):
    waves = _waves(demo_clips, 6)
    assert len({len(w) for w in waves}) == 6  # different lengths
    batched = extractor(waves)
    for wave, (codes, spk, emo) in zip(waves, batched, strict=True):
        (solo_codes, solo_spk, solo_emo), = extractor([wave])
        assert np.array_equal(codes, solo_codes)
        np.testing.assert_allclose(spk, solo_spk, atol=1e-5, rtol=1e-4)
        np.testing.assert_allclose(emo, solo_emo, atol=1e-5, rtol=1e-4)
        assert abs(len(codes) - len(wave) / 320) <= 2  # 50 codes per second, padding trimmed


def test_index_shards_and_text_ids(tiny_bundle, tokenizer: Path, demo_clips, fe, tmp_path: Path):
    result = preprocess(demo_clips, tiny_bundle, tokenizer, fe, tmp_path / "out", cfg=PreprocessConfig(unit_clips=16),
                        **LIMITS)
    train, val = read_jsonl(result.train_manifest), read_jsonl(result.val_manifest)
    assert result.indexed + result.rejected == len(demo_clips) == 60
    assert {r["id"] for r in val} == {c.id for c in demo_clips if c.split == "val"} - {
        r["id"] for r in read_jsonl(result.rejects)}
    meta = json.loads((tmp_path / "out" / "preprocess.json").read_text())
    feature_dir = tmp_path / "out" / meta["feature_dir"]
    assert len(list(feature_dir.glob("*.safetensors"))) == 4  # a few large files, not files per clip
    from safetensors.torch import load_file

    text = load_file(str(tmp_path / "out" / "text_ids.safetensors"))
    assert text["ids"].dtype == torch.int16
    row = train[0]
    ids = text["ids"][text["offsets"][row["text_row"]]:text["offsets"][row["text_row"] + 1]].tolist()
    import sentencepiece as spm

    assert ids == fe.encode(spm.SentencePieceProcessor(model_file=str(tokenizer)), row["text"], row["language"])
    reader = ShardReader(feature_dir / row["shard"])
    assert reader.codes(row["row"]).dtype == torch.int16 and reader.speaker_latents(row["row"]).dtype == torch.float16
    assert reader.code_length(row["row"]) == row["code_len"] and reader.speaker_latents(row["row"]).shape == (32, 64)
    assert result.report_png.read_bytes()[:4] == b"\x89PNG"


def test_adding_clips_processes_only_the_new_ones(tiny_bundle, tokenizer, demo_clips, fe, tmp_path: Path):
    first = preprocess(demo_clips[:40], tiny_bundle, tokenizer, fe, tmp_path / "out", **LIMITS)
    assert first.processed_now == first.indexed + sum(1 for r in read_jsonl(first.rejects)
                                                      if r["reason_code"] not in ("unknown_tokens", "empty_text"))
    second = preprocess(demo_clips, tiny_bundle, tokenizer, fe, tmp_path / "out", **LIMITS)
    assert second.processed_now == 20 - sum(1 for c in demo_clips[40:] if c.id in {
        r["id"] for r in read_jsonl(second.rejects) if r["reason_code"] in ("unknown_tokens", "empty_text")})
    assert second.reused == first.indexed and second.indexed + second.rejected == 60


class Crash(Exception):
    pass


def test_interrupted_run_resumes_with_identical_shards(tiny_bundle, tokenizer, demo_clips, fe, extractor,
                                                       tmp_path: Path):
    cfg = PreprocessConfig(unit_clips=8)
    clean = preprocess(demo_clips, tiny_bundle, tokenizer, fe, tmp_path / "clean", cfg=cfg, extract=extractor, **LIMITS)
    calls = {"n": 0}

    def crashing(waves):
        calls["n"] += 1
        if calls["n"] == 4:  # the fourth unit (each unit is one batch here)
            raise Crash("killed")
        return extractor(waves)

    with pytest.raises(Crash):
        preprocess(demo_clips, tiny_bundle, tokenizer, fe, tmp_path / "resumed", cfg=cfg, extract=crashing, **LIMITS)
    feat = tmp_path / "resumed" / "features"
    done_before = {p.name for p in feat.rglob("unit-*.json")}
    assert 0 < len(done_before) < 8 and not list(feat.rglob("*.tmp"))
    resumed = preprocess(demo_clips, tiny_bundle, tokenizer, fe, tmp_path / "resumed", cfg=cfg, extract=extractor,
                         **LIMITS)
    assert resumed.processed_now < clean.processed_now  # finished units were not redone
    shards = {p.name: p.read_bytes() for p in (tmp_path / "clean" / "features").rglob("*.safetensors")}
    assert shards == {p.name: p.read_bytes() for p in feat.rglob("*.safetensors")}
    assert (tmp_path / "clean" / "train_manifest.jsonl").read_text() == \
        (tmp_path / "resumed" / "train_manifest.jsonl").read_text()


def test_injected_oom_loses_nothing(tiny_bundle, tokenizer, demo_clips, fe, extractor, tmp_path: Path):
    victim = demo_clips[3]
    from indextts_core.data.audio import load_audio

    victim_len = len(load_audio(victim.audio, 16000).samples)
    events = []

    def small_gpu(waves):
        if len(waves) > 2 or any(len(w) == victim_len for w in waves):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return extractor(waves)

    result = preprocess(demo_clips, tiny_bundle, tokenizer, fe, tmp_path / "out", extract=small_gpu,
                        on_backoff=events.append, cfg=PreprocessConfig(unit_clips=64), **LIMITS)
    rejects = {r["id"]: r for r in read_jsonl(result.rejects)}
    assert rejects[victim.id]["reason_code"] == "out_of_memory"
    assert "even alone" in rejects[victim.id]["reason"]
    assert result.indexed + result.rejected == 60  # every clip is indexed or rejected with a reason
    assert events and all(e.next_batch_size < e.failed_batch_size for e in events)
    assert result.run["oom_backoffs"] == len(events)


def test_every_gate_rejects_and_reports(tiny_bundle, tokenizer, fe, tmp_path: Path):
    d = tmp_path / "audio"
    d.mkdir()

    def wav(name: str, x: np.ndarray) -> str:
        sf.write(d / name, x, 16000, subtype="PCM_16")
        return str(d / name)

    rng = np.random.default_rng(0)
    speech = lambda s: (0.3 * sine(s, 16000, 220) + 0.05 * rng.standard_normal(int(s * 16000))).astype(np.float32)
    good = wav("good.wav", speech(1.5))
    (d / "corrupt.wav").write_bytes(b"RIFF0000WAVEjunk")
    cases = {
        "ok": ("ሰላም ነው", good),
        "empty_text": (" \u200b ", good),
        "text_too_long": (" ".join(["ሰላም"] * 300), good),
        "unknown_tokens": ("ΓΕΙΑ ΣΟΥ ΚΟΣΜΕ", good),
        "too_short": ("ሰላም", wav("short.wav", speech(0.2))),
        "too_long": ("ሰላም", wav("long.wav", speech(14.5))),
        "silent": ("ሰላም", wav("silent.wav", (1e-5 * rng.standard_normal(16000)).astype(np.float32))),
        "clipped": ("ሰላም", wav("clipped.wav", np.sign(sine(1.0, 16000, 100)).astype(np.float32))),
        "audio_missing": ("ሰላም", str(d / "nope.wav")),
        "audio_decode": ("ሰላም", str(d / "corrupt.wav")),
        "codes_too_long": ("ሰላም", wav("codes.wav", speech(12.5))),  # 625 codes > the tiny model's 600
    }
    clips = [Clip(id=k, audio=a, text=t, speaker="s", language="am", split="train") for k, (t, a) in cases.items()]
    result = preprocess(clips, tiny_bundle, tokenizer, fe, tmp_path / "out", min_duration_s=0.5, max_duration_s=14.0)
    reasons = {r["id"]: r["reason_code"] for r in read_jsonl(result.rejects)}
    expected = {k: k for k in cases if k != "ok"}
    assert reasons == expected
    assert [r["id"] for r in read_jsonl(result.train_manifest)] == ["ok"]
    report = json.loads(result.report_json.read_text())
    assert report["rejected_by_reason"] == {k: 1 for k in expected}


def test_featureset_id_is_stable():
    """The id names the folder of cached features: the same settings must keep giving the same id."""
    from indextts_core.preprocess import featureset_id

    models = {"gpt": "abc", "w2v_bert": "def", "codec": "123"}
    assert featureset_id(models, PreprocessConfig(), 17) == "c1dc6258e0b67276bd59be4e"  # FEATURES_VERSION 2
    assert featureset_id(models, PreprocessConfig(cond_max_seconds=10), 17) == "cace940349da1ef7f1999668"
    # settings that only change how the work runs do not change the features
    assert featureset_id(models, PreprocessConfig(batch_size=4, workers=2, device="cpu", unit_clips=3), 17) == \
        "c1dc6258e0b67276bd59be4e"


def test_auto_settings_resolve():
    import os

    from indextts_core.preprocess import batch_clips, batch_seconds_setting, decode_workers, resolved_device

    auto = PreprocessConfig()
    assert batch_clips(auto) is None and batch_seconds_setting(auto) is None
    assert decode_workers(auto) == (os.cpu_count() or 1)
    assert resolved_device(auto).type == ("cuda" if torch.cuda.is_available() else "cpu")
    fixed = PreprocessConfig(batch_size=8, max_batch_seconds=30.0, workers=3, device="cpu")
    assert (batch_clips(fixed), batch_seconds_setting(fixed), decode_workers(fixed)) == (8, 30.0, 3)
    assert resolved_device(fixed) == torch.device("cpu")


def test_clips_for_manifest_splits_like_ingest(tmp_path: Path):
    from indextts_core.data.ingest import ManifestInput, ingest
    from indextts_core.preprocess import clips_for_manifest

    ingested = ingest([ManifestInput(DEMO_DIR / "manifest.jsonl")], tmp_path / "ingest", IngestConfig(), seed=1234)
    kept = clips_for_manifest(ingested.manifest, IngestConfig(), seed=1234)
    assert {c.id: c.split for c in kept} == {c.id: c.split for c in clips_from_manifests(
        {"train": ingested.train, "val": ingested.val})}
    alone = tmp_path / "rows.jsonl"  # not an ingested manifest.jsonl: the split is recomputed, the same way
    alone.write_text((ingested.manifest).read_text(encoding="utf-8"), encoding="utf-8")
    recomputed = clips_for_manifest(alone, IngestConfig(), seed=1234)
    assert {c.id: c.split for c in recomputed} == {c.id: c.split for c in kept}
