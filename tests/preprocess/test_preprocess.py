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
from indextts_core.preprocess import (
    Clip,
    FeatureExtractor,
    FeatureFolder,
    PreprocessResult,
    clips_from_manifests,
    featureset_id,
    model_digests,
    model_folder_digests,
    prepare,
    preprocess,
)
from indextts_core.preprocess.shards import ShardReader
from tests_support import extend_tokenizer
from indextts_core.config import IngestConfig, PreprocessConfig
from tests_support import DEMO_DIR, sine

LIMITS = {"min_duration_s": 0.5, "max_duration_s": 36.0}  # the ingest: duration limits


def run_stage(clips: list[Clip], bundle, tokenizer: Path, fe: TextFrontend, out: Path,
              cfg: PreprocessConfig | None = None, limits: dict[str, float] = LIMITS, **options) -> PreprocessResult:
    """The stage's one path, on a local feature folder (``out/features/<feature set>``)."""
    cfg = cfg or PreprocessConfig()
    features = FeatureFolder(out / "features", featureset_id(model_folder_digests(bundle.checkpoint_dir), cfg,
                                                             bundle.hidden_layer))
    return preprocess(prepare(clips, bundle, tokenizer, fe, cfg), features, out, cfg, **limits, **options)


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
    result = run_stage(demo_clips, tiny_bundle, tokenizer, fe, tmp_path / "out", PreprocessConfig(unit_clips=16))
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
    first = run_stage(demo_clips[:40], tiny_bundle, tokenizer, fe, tmp_path / "out")
    assert first.processed_now == first.indexed + sum(1 for r in read_jsonl(first.rejects)
                                                      if r["reason_code"] not in ("unknown_tokens", "empty_text"))
    second = run_stage(demo_clips, tiny_bundle, tokenizer, fe, tmp_path / "out")
    assert second.processed_now == 20 - sum(1 for c in demo_clips[40:] if c.id in {
        r["id"] for r in read_jsonl(second.rejects) if r["reason_code"] in ("unknown_tokens", "empty_text")})
    assert second.reused == first.indexed and second.indexed + second.rejected == 60


class Crash(Exception):
    pass


def test_interrupted_run_resumes_with_identical_shards(tiny_bundle, tokenizer, demo_clips, fe, extractor,
                                                       tmp_path: Path):
    cfg = PreprocessConfig(unit_clips=8)
    clean = run_stage(demo_clips, tiny_bundle, tokenizer, fe, tmp_path / "clean", cfg, extract=extractor)
    calls = {"n": 0}

    def crashing(waves):
        calls["n"] += 1
        if calls["n"] == 4:  # the fourth unit (each unit is one batch here)
            raise Crash("killed")
        return extractor(waves)

    with pytest.raises(Crash):
        run_stage(demo_clips, tiny_bundle, tokenizer, fe, tmp_path / "resumed", cfg, extract=crashing)
    feat = tmp_path / "resumed" / "features"
    done_before = {p.name for p in feat.rglob("unit-*.json")}
    assert 0 < len(done_before) < 8 and not list(feat.rglob("*.tmp"))
    resumed = run_stage(demo_clips, tiny_bundle, tokenizer, fe, tmp_path / "resumed", cfg, extract=extractor)
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

    result = run_stage(demo_clips, tiny_bundle, tokenizer, fe, tmp_path / "out", PreprocessConfig(unit_clips=64),
                       extract=small_gpu, on_backoff=events.append)
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
    result = run_stage(clips, tiny_bundle, tokenizer, fe, tmp_path / "out",
                       limits={"min_duration_s": 0.5, "max_duration_s": 14.0})
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
    # the models as the flow has always named them (feature sets in existing stores keep their names)
    stored = {"checkpoint": "abc", "w2v_bert": "", "codec": ""}
    assert model_digests("abc") == stored
    assert featureset_id(model_digests("abc"), PreprocessConfig(), 17) == featureset_id(stored, PreprocessConfig(), 17)


def test_local_model_folders_name_the_feature_set_the_store_names(tiny_bundle, tmp_path: Path):
    """The flow names the feature set from the digests the store recorded for the model assets, a direct call
    from the model folders' files: the same folders name the same feature set."""
    from indextts_core.config import load_config
    from indextts_core.preprocess import folder_digest
    from indextts_core.store.objects import open_store
    from tasks.artifacts import fetch_dir, publish_dir
    from tasks.preprocess import featureset_for

    cfg, store = load_config(), open_store(tmp_path / "store")
    checkpoint = publish_dir(store, tiny_bundle.checkpoint_dir, "asset:checkpoint")
    w2v = publish_dir(store, tiny_bundle.w2v_bert_dir, "asset:w2v_bert")
    assert checkpoint.digest == folder_digest(tiny_bundle.checkpoint_dir) == folder_digest(fetch_dir(store, checkpoint))
    layer = tiny_bundle.hidden_layer
    assert featureset_for(cfg, checkpoint, None, None, layer) == \
        featureset_id(model_folder_digests(tiny_bundle.checkpoint_dir), cfg.preprocess, layer)
    assert featureset_for(cfg, checkpoint, w2v, None, layer) == \
        featureset_id(model_folder_digests(tiny_bundle.checkpoint_dir, tiny_bundle.w2v_bert_dir), cfg.preprocess, layer)


def test_where_units_run_and_features_live_change_nothing(tiny_bundle, tokenizer, demo_clips, fe, extractor,
                                                          tmp_path: Path):
    """What the flow injects: units run elsewhere (threads, in another order) and features kept in the artifact
    store give the shards and the index of the default run on a local folder."""
    from concurrent.futures import ThreadPoolExecutor

    from indextts_core.preprocess import StoredFeatures, load_extraction, run_unit
    from indextts_core.store.objects import open_store

    clips, cfg = demo_clips[:12], PreprocessConfig(unit_clips=4)
    here = run_stage(clips, tiny_bundle, tokenizer, fe, tmp_path / "here", cfg, extract=extractor)

    def threads(units, work):
        extract, seconds = load_extraction(work, units[0])
        with ThreadPoolExecutor(max_workers=2) as pool:
            return list(pool.map(lambda unit: run_unit(unit, work, extract, seconds), units[::-1]))

    fset = here.report["featureset"]
    store = open_store(tmp_path / "store")
    stored = preprocess(prepare(clips, tiny_bundle, tokenizer, fe, cfg), StoredFeatures(store, fset),
                        tmp_path / "stored", cfg, runner=threads, extract=extractor, **LIMITS)
    assert stored.processed_now == here.processed_now > 0 and len(stored.units) == 3
    for name in ("train_manifest.jsonl", "val_manifest.jsonl", "rejects.jsonl", "text_ids.safetensors", "report.json"):
        assert (tmp_path / "here" / name).read_bytes() == (tmp_path / "stored" / name).read_bytes(), name
    meta = {d: json.loads((tmp_path / d / "preprocess.json").read_text()) for d in ("here", "stored")}
    assert meta["stored"].pop("feature_dir") == f"store:features/{fset}"
    assert meta["here"].pop("feature_dir") == f"features/{fset}" and meta["here"] == meta["stored"]
    shards = sorted((tmp_path / "here" / "features" / fset).glob("*.safetensors"))
    assert shards and {p.name: p.read_bytes() for p in shards} == {
        p.name: store.get_bytes(f"features/{fset}/{p.name}") for p in shards}
    again = preprocess(prepare(clips, tiny_bundle, tokenizer, fe, cfg), StoredFeatures(store, fset),
                       tmp_path / "stored", cfg, runner=threads, extract=extractor, **LIMITS)
    assert again.units == [] and again.reused == here.indexed  # every unit is in the store already


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
