"""Importing community-trainer features: honest files are reused, broken or foreign ones never."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from indextts_core.preprocess import Clip, FeatureExtractor, TextItem, make_plan, read_units, unit_name
from indextts_core.preprocess.community import import_features, spot_check
from indextts_core.preprocess.community_files import (
    CommunityClip,
    FeatureFileError,
    load_clip_features,
    read_community_files,
)
from indextts_core.errors import InputError
from indextts_core.preprocess.shards import ShardReader
from indextts_core.utils.fileio import read_json, sha256_file

DURATIONS = {"a": 0.9, "b": 1.2, "c": 1.5, "d": 1.8, "e": 2.1, "f": 2.4}  # f: ~120 codes
MAX_MEL = 110  # so "f" is recorded as codes_too_long, as the preprocess would


@pytest.fixture(scope="module")
def extractor(tiny_bundle) -> FeatureExtractor:
    torch.set_num_threads(2)
    return FeatureExtractor(tiny_bundle, torch.device("cpu"))


@pytest.fixture(scope="module")
def codebook(tiny_bundle) -> int:
    return tiny_bundle.codec_config.codebook_size


@pytest.fixture(scope="module")
def audio(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    """Clip id -> {path, wave, key, seconds}: 16 kHz tones with a little noise, of different lengths."""
    from indextts_core.data.audio import load_audio

    out = tmp_path_factory.mktemp("wavs")
    rng = np.random.default_rng(0)
    clips = {}
    for i, (cid, seconds) in enumerate(DURATIONS.items()):
        t = np.arange(int(seconds * 16000)) / 16000
        x = 0.3 * np.sin(2 * np.pi * (180 + 60 * i) * t) + 0.05 * rng.standard_normal(t.size)
        path = out / f"{cid}.wav"
        sf.write(path, x.astype(np.float32), 16000, subtype="PCM_16")
        wave = load_audio(path, 16000).samples
        clips[cid] = {"path": path, "wave": wave, "key": sha256_file(path), "seconds": len(wave) / 16000}
    return clips


@pytest.fixture(scope="module")
def ours(extractor, audio) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    return {cid: extractor([a["wave"]])[0] for cid, a in audio.items()}


def audio_lookup(audio: dict[str, dict]):
    by_path = {str(a["path"]): a for a in audio.values()}

    def audio_of(clip: CommunityClip):
        a = by_path.get(clip.audio or "")
        return (a["key"], a["wave"], a["seconds"]) if a else (None, None, 0.0)

    return audio_of


def write_features(root: Path, feats: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]) -> None:
    """Their per-clip .npy files: codes int32, condition/emo float32 (stored at float16 precision)."""
    d = root / "features"
    d.mkdir(parents=True, exist_ok=True)
    for cid, (codes, spk, emo) in feats.items():
        np.save(d / f"{cid}_codes.npy", np.asarray(codes, dtype=np.int32))
        np.save(d / f"{cid}_condition.npy", np.asarray(spk, dtype=np.float16).astype(np.float32))
        np.save(d / f"{cid}_emo_vec.npy", np.asarray(emo, dtype=np.float16).astype(np.float32))
        np.save(d / f"{cid}_text_ids.npy", np.arange(5, dtype=np.int32))


def manifest_row(cid: str, audio: dict[str, dict], codes_len: int) -> dict:
    return {"id": cid, "text_ids_path": f"features/{cid}_text_ids.npy", "codes_path": f"features/{cid}_codes.npy",
            "condition_path": f"features/{cid}_condition.npy", "emo_vec_path": f"features/{cid}_emo_vec.npy",
            "text_len": 5, "code_len": codes_len, "condition_len": 32, "speaker": "spk", "language": "en",
            "text": f"clip {cid}", "audio_path": str(audio[cid]["path"])}


def write_manifests(root: Path, feats: dict, audio: dict[str, dict], val: tuple[str, ...] = ("b",)) -> list[Path]:
    write_features(root, feats)
    paths = []
    for name, ids in (("train_manifest.jsonl", [c for c in feats if c not in val]),
                      ("val_manifest.jsonl", [c for c in feats if c in val])):
        path = root / name
        path.write_text("".join(json.dumps(manifest_row(c, audio, len(feats[c][0]))) + "\n" for c in ids))
        paths.append(path)
    return paths


def run_import(paths: list[Path], feature_dir: Path, extractor, audio, codebook: int, **kw):
    clips, rejects = read_community_files(paths)
    report = import_features(clips, feature_dir, extractor, audio_of=audio_lookup(audio), codebook_size=codebook,
                             max_mel_tokens=MAX_MEL, rejects=rejects, **{"unit_clips": 4, **kw})
    return clips, report


def written(feature_dir: Path) -> list[Path]:
    return sorted(feature_dir.glob("*")) if feature_dir.is_dir() else []


def test_honest_files_are_imported_and_the_plan_sees_them_done(extractor, audio, ours, codebook, tmp_path: Path):
    paths = write_manifests(tmp_path / "community", ours, audio)
    feature_dir = tmp_path / "features" / "fs"
    clips, report = run_import(paths, feature_dir, extractor, audio, codebook)

    assert report.spot_check is not None and report.spot_check.passed, report.spot_check.reason
    assert len(report.spot_check.rows) == 6 and all(r["codes_equal"] for r in report.spot_check.rows)
    assert "latent_cosine" in report.spot_check.table()
    assert (report.read, report.complete, report.incomplete, report.imported, report.too_long) == (6, 6, 0, 5, 1)
    assert report.recompute == 0 and report.rejected == 0
    json.dumps(report.to_dict())  # a JSON report

    keys = sorted(a["key"] for a in audio.values())
    assert report.units == [unit_name(keys[:4]), unit_name(keys[4:])]  # process_unit's naming, sorted keys
    record = read_json(feature_dir / f"{report.units[0]}.json")
    assert set(record) == {"unit", "shard", "shard_sha256", "keys", "rejects", "lengths", "created"}

    records = read_units(feature_dir)
    too_long = f"codes_too_long: {len(ours['f'][0])} codes > max_mel_tokens={MAX_MEL}"
    assert records.rejects == {audio["f"]["key"]: too_long}
    texts = {cid: TextItem(Clip(cid, str(a["path"]), f"clip {cid}", "spk", "en", "train"), f"clip {cid}", [5])
             for cid, a in audio.items()}
    plan = make_plan(feature_dir, "fs", texts, [], {cid: a["key"] for cid, a in audio.items()}, records, 4,
                     {"max_mel_tokens": MAX_MEL})
    assert plan.units == []  # nothing left to process
    for cid, (codes, spk, emo) in ours.items():
        if cid == "f":
            continue
        shard, row, code_len, duration = records.done[audio[cid]["key"]]
        reader = ShardReader(feature_dir / shard)
        assert code_len == len(codes) and duration == pytest.approx(DURATIONS[cid], abs=1e-3)
        assert np.array_equal(reader.codes(row).numpy(), codes)
        np.testing.assert_allclose(reader.speaker_latents(row).float().numpy(), spk, rtol=2e-3, atol=1e-4)
        np.testing.assert_allclose(reader.emotion_vector(row).float().numpy(), emo, rtol=2e-3, atol=1e-4)

    # a second import finds the feature set done and writes nothing
    before = written(feature_dir)
    _, again = run_import(paths, feature_dir, extractor, audio, codebook)
    assert again.already_done == 6 and again.imported == 0 and again.units == [] and written(feature_dir) == before


def test_padded_tail_fails_the_spot_check_and_nothing_is_written(extractor, audio, ours, codebook, tmp_path: Path):
    feats = dict(ours)
    codes, spk, emo = ours["a"]  # the shortest clip, batched with "c": their padding bug
    feats["a"] = (np.concatenate([codes, ours["c"][0][len(codes):]]), spk, emo)
    paths = write_manifests(tmp_path / "community", feats, audio)
    feature_dir = tmp_path / "features" / "fs"
    _, report = run_import(paths, feature_dir, extractor, audio, codebook, spot_checks=3)

    check = report.spot_check
    assert check is not None and not check.passed
    assert check.reason.startswith("padded tail in 1 of 3 clips (a)")
    (row,) = [r for r in check.rows if r["id"] == "a"]
    assert row["padded_tail"] and row["codes_diff"] == len(ours["c"][0]) - len(codes) and not row["ok"]
    assert report.imported == 0 and report.recompute == 6 and report.left_to_preprocess == {"spot_check_failed": 6}
    assert "nothing imported" in report.reason
    assert written(feature_dir) == []


def test_padded_tail_outside_the_sample_is_caught_by_length(extractor, audio, ours, codebook, tmp_path: Path):
    feats = dict(ours)
    codes, spk, emo = ours["c"]  # neither the shortest nor the longest: not among 2 spot checks
    feats["c"] = (np.concatenate([codes, ours["e"][0][len(codes):]]), spk, emo)
    paths = write_manifests(tmp_path / "community", feats, audio)
    feature_dir = tmp_path / "features" / "fs"
    _, report = run_import(paths, feature_dir, extractor, audio, codebook, spot_checks=2)

    assert report.spot_check.passed and {r["id"] for r in report.spot_check.rows} == {"a", "f"}
    assert report.imported == 4 and report.left_to_preprocess == {"code_length": 1}
    (reject,) = report.rejects
    assert reject["id"] == "c" and reject["reason_code"] == "code_length" and "padded tail" in reject["reason"]
    assert reject["source"] == f"{paths[0]}:2"
    assert audio["c"]["key"] not in read_units(feature_dir).done


def test_latents_of_another_gpt_fail(tiny_bundle, extractor, audio, ours, codebook, tmp_path: Path):
    import copy

    from indextts_core.model.unified_voice import UnifiedVoice

    torch.manual_seed(1234)
    theirs_extract = copy.copy(extractor)  # the same encoders and codec, another (random) base GPT
    theirs_extract.gpt = UnifiedVoice(tiny_bundle.gpt_config).eval()
    theirs = {cid: theirs_extract([a["wave"]])[0] for cid, a in audio.items()}
    paths = write_manifests(tmp_path / "community", theirs, audio)
    feature_dir = tmp_path / "features" / "fs"
    _, report = run_import(paths, feature_dir, extractor, audio, codebook)

    check = report.spot_check
    assert not check.passed and "speaker latents differ in 6 of 6 clips" in check.reason
    assert all(r["codes_equal"] for r in check.rows)  # same codec: only the GPT's conditioning differs
    assert max(r["latent_cosine"] for r in check.rows) < 0.999
    assert written(feature_dir) == []


def test_spot_check_tolerates_float16_and_names_the_problems(extractor, audio, ours, codebook, tmp_path: Path):
    write_features(tmp_path, ours)
    clip = CommunityClip("b", *(tmp_path / "features" / f"b_{p}.npy" for p in ("codes", "condition", "emo_vec")))
    np.save(clip.condition_path, ours["b"][1].astype(np.float16))  # float16 on disk is widened
    check = spot_check([(clip, audio["b"]["wave"])], extractor, codebook_size=codebook)
    assert check.passed and check.rows[0]["latent_cosine"] > 0.99999 and check.rows[0]["latent_max_abs_rms"] < 0.01
    assert check.to_dict()["tolerances"] == {"min_cosine": 0.999, "latent_max_abs_rms": 0.1, "emo_max_abs_rms": 0.1}

    np.save(clip.emo_vec_path, ours["b"][2] + 0.3 * np.abs(ours["b"][2]).max())  # an offset emotion vector
    np.save(clip.codes_path, (ours["b"][0] + 1) % codebook)
    check = spot_check([(clip, audio["b"]["wave"])], extractor, codebook_size=codebook)
    assert not check.passed and not check.rows[0]["codes_equal"] and not check.rows[0]["padded_tail"]
    assert "codes differ in 1 of 1 clips (b)" in check.reason and "emotion vectors differ" in check.reason
    assert "speaker latents" not in check.reason
    assert not spot_check([], extractor, codebook_size=codebook).passed


def test_bad_rows_are_reported_with_file_and_line(audio, ours, tmp_path: Path):
    write_features(tmp_path, ours)
    good = manifest_row("a", audio, 45)
    lines = [
        json.dumps(good),
        '{"id": "b", "codes_path": ',  # 2: malformed
        json.dumps({k: v for k, v in manifest_row("b", audio, 60).items() if k != "condition_path"}),  # 3
        json.dumps({**good, "codes_path": "features/c_codes.npy"}),  # 4: a's codes named differently
        json.dumps({**manifest_row("d", audio, 90), "emo_vec_path": "features/nope.npy"}),  # 5: no such file
        "[1, 2, 3]",  # 6: not an object
        "",  # blank lines are skipped
        json.dumps({"id": "p", "prompt_id": "e", "target_id": "f", "prompt_condition_path": "x.npy"}),  # 8
        json.dumps({**manifest_row("e", audio, 105), "codes_path": 17}),  # 9: not a path
    ]
    path = tmp_path / "train_manifest.jsonl"
    path.write_text("\n".join(lines) + "\n")
    clips, rejects = read_community_files([path])

    got = {(r["source"], r["id"], r["reason_code"]) for r in rejects}
    assert got == {(f"{path}:2", None, "malformed_json"), (f"{path}:3", "b", "missing_field"),
                   (f"{path}:4", "a", "conflicting_paths"), (f"{path}:5", "d", "missing_file"),
                   (f"{path}:6", None, "malformed_json"), (f"{path}:8", "p", "missing_field"),
                   (f"{path}:9", "e", "bad_field")}
    by_source = {r["source"]: r["reason"] for r in rejects}
    assert "condition_path" in by_source[f"{path}:3"] and "target_codes_path" in by_source[f"{path}:8"]
    assert "nope.npy" in by_source[f"{path}:5"]
    assert set(clips) == {"a", "d"}  # rows without a usable id never name a clip
    assert clips["a"].missing == ["codes_path"] and clips["a"].source == f"{path}:1"  # conflict: neither is used
    assert clips["d"].missing == ["emo_vec_path"] and not clips["d"].complete


@pytest.mark.parametrize("part,array,message", [
    ("codes", np.zeros((2, 10), np.int32), "shape (2, 10), expected (T,)"),
    ("codes", np.zeros(10, np.float32), "dtype float32, expected integers"),
    ("codes", np.full(10, 64, np.int32), "outside the codebook [0, 63]"),
    ("codes", np.zeros(0, np.int32), "expected (T,) with T >= 1"),
    ("condition", np.zeros((16, 64), np.float32), "shape (16, 64), expected (32, D)"),
    ("condition", np.full((32, 64), np.nan, np.float32), "2048 non-finite values"),
    ("emo_vec", np.zeros(65, np.float32), "shape (65,), expected (64,)"),
    ("emo_vec", np.array([{"x": 1}], dtype=object), "not a plain .npy array"),
])
def test_wrong_arrays_name_the_file(part, array, message, ours, codebook, tmp_path: Path):
    write_features(tmp_path, {"a": ours["a"]})
    target = tmp_path / "features" / f"a_{part}.npy"
    np.save(target, array, allow_pickle=True)
    clip = CommunityClip("a", *(tmp_path / "features" / f"a_{p}.npy" for p in ("codes", "condition", "emo_vec")))
    with pytest.raises(FeatureFileError) as e:
        load_clip_features(clip, codebook)
    assert str(e.value).startswith(f"{target}: ") and message in str(e.value)


def test_batch_axis_is_dropped(ours, codebook, tmp_path: Path):
    write_features(tmp_path, {"a": ours["a"]})
    d = tmp_path / "features"
    np.save(d / "a_condition.npy", ours["a"][1][None])  # saved as x[None]
    codes, spk, emo = load_clip_features(CommunityClip("a", d / "a_codes.npy", d / "a_condition.npy",
                                                       d / "a_emo_vec.npy"), codebook)
    assert codes.dtype == np.int64 and spk.shape == (32, 64) and spk.dtype == np.float32 and emo.shape == (64,)


def test_broken_and_missing_files_are_rejects_not_drops(extractor, audio, ours, codebook, tmp_path: Path):
    root = tmp_path / "community"
    paths = write_manifests(root, ours, audio)
    np.save(root / "features" / "a_condition.npy", np.zeros((32, 7), np.float32))  # a (sampled first): broken
    np.save(root / "features" / "d_condition.npy", np.ones((32, 7), np.float32))  # d: consistent, not our width
    np.save(root / "features" / "d_emo_vec.npy", np.ones(7, np.float32))
    (root / "features" / "e_emo_vec.npy").unlink()  # missing: reported when read
    feature_dir = tmp_path / "features" / "fs"
    _, report = run_import(paths, feature_dir, extractor, audio, codebook, spot_checks=2)

    sampled = {r["id"] for r in report.spot_check.rows}
    assert report.spot_check.passed and len(sampled) == 2 and "f" in sampled and "a" not in sampled
    got = {(r["source"], r["id"], r["reason_code"]) for r in report.rejects}
    assert got == {(f"{paths[0]}:1", "a", "bad_features"), (f"{paths[0]}:3", "d", "bad_features"),
                   (f"{paths[0]}:4", "e", "missing_file")}
    assert "expected (32, 64)" in next(r["reason"] for r in report.rejects if r["id"] == "d")
    assert report.incomplete == 1 and report.imported == 2 and report.too_long == 1
    assert report.left_to_preprocess == {"bad_features": 2, "incomplete": 1} and report.recompute == 3
    done = read_units(feature_dir)
    assert {audio[c]["key"] for c in "ade"}.isdisjoint(done.done) and len(done.done) == 2


def test_clips_without_audio_are_not_imported(extractor, audio, ours, codebook, tmp_path: Path):
    paths = write_manifests(tmp_path / "community", ours, audio)
    lines = paths[0].read_text().splitlines()
    row = json.loads(lines[0])
    row["audio_path"] = "elsewhere/a.wav"
    paths[0].write_text("\n".join([json.dumps(row)] + lines[1:]) + "\n")
    _, report = run_import(paths, tmp_path / "fs", extractor, audio, codebook)
    assert report.spot_check.passed and report.no_audio == 1 and report.imported == 4
    assert report.left_to_preprocess == {"no_audio": 1}


def test_pair_files_merge_into_complete_clips(extractor, audio, ours, codebook, tmp_path: Path):
    root = tmp_path / "community"
    write_features(root, ours)
    f = "features/{}_{}.npy"

    def pair(prompt: str, target: str, target_emo: bool = False) -> dict:
        return {"id": f"{prompt}-{target}", "prompt_id": prompt, "target_id": target,
                "target_text_ids_path": f.format(target, "text_ids"), "target_codes_path": f.format(target, "codes"),
                "target_text_len": 5, "target_code_len": len(ours[target][0]),
                "prompt_condition_path": f.format(prompt, "condition"), "prompt_condition_len": 32,
                "prompt_emo_vec_path": f.format(prompt, "emo_vec"), "speaker": "spk", "target_language": "en",
                "prompt_audio_path": str(audio[prompt]["path"]),
                **({"target_emo_vec_path": f.format(target, "emo_vec")} if target_emo else {})}

    train = root / "GPT_pairs_train.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in [pair("a", "b"), pair("b", "a"), pair("a", "c")]))
    val = root / "GPT_pairs_val.jsonl"  # d: a prompt here, a target (with its emotion vector) there
    val.write_text(json.dumps(pair("d", "b", target_emo=True)) + "\n")
    manifest = root / "train_manifest.jsonl"  # the processed manifest names d's codes and the same paths
    manifest.write_text(json.dumps(manifest_row("d", audio, len(ours["d"][0]))) + "\n")

    clips, rejects = read_community_files([train, val, manifest])
    assert rejects == []
    assert {c for c, clip in clips.items() if clip.complete} == {"a", "b", "d"}
    assert clips["c"].missing == ["condition_path", "emo_vec_path"]  # only ever a target without an emotion
    assert clips["a"].source == f"{train}:1" and clips["a"].sources["codes_path"] == f"{train}:2"
    assert clips["b"].sources["emo_vec_path"] == f"{train}:2"  # as a prompt first; the same file as a target
    assert clips["a"].audio == str(audio["a"]["path"]) and clips["a"].language == "en"  # from its target row

    feature_dir = tmp_path / "features" / "fs"
    report = import_features(clips, feature_dir, extractor, audio_of=audio_lookup(audio), codebook_size=codebook,
                             max_mel_tokens=MAX_MEL, unit_clips=8)
    assert report.spot_check.passed and report.imported == 3
    assert (report.read, report.complete, report.incomplete, report.recompute) == (4, 3, 1, 1)
    assert report.left_to_preprocess == {"incomplete": 1}
    assert set(read_units(feature_dir).done) == {audio[c]["key"] for c in "abd"}


def test_relative_paths_follow_the_file_and_conflicts_compare_resolved(audio, ours, tmp_path: Path):
    root = tmp_path / "community"
    write_features(root, ours)
    sub = root / "processed_data"
    sub.mkdir()
    row = manifest_row("a", audio, 45)
    same = {**row, "codes_path": "../features/./a_codes.npy", "condition_path": "..\\features\\a_condition.npy",
            "emo_vec_path": str(root / "features" / "a_emo_vec.npy")}
    (sub / "val_manifest.jsonl").write_text(json.dumps(same) + "\n")
    (root / "train_manifest.jsonl").write_text(json.dumps(row) + "\n")
    clips, rejects = read_community_files([root / "train_manifest.jsonl", sub / "val_manifest.jsonl"])
    assert rejects == [] and clips["a"].complete
    assert clips["a"].codes_path == root / "features" / "a_codes.npy"
    with pytest.raises(InputError, match="not found"):
        read_community_files([root / "missing.jsonl"])
