"""The ``indextts-train`` console script, run as a user runs it (a real subprocess)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from indextts_core.config import DEMO_CONFIG, dump_config, load_config
from tests_support import DEMO_DIR, cli, expect, install_wheel, installed_env

def test_help_lists_every_stage():
    out = cli("--help").stdout
    for command in ("run", "download", "ingest", "corpus", "extend-bpe", "preprocess", "build-pairs", "train",
                    "normalize", "config"):
        assert command in out
    ingest_help = cli("ingest", "--help").stdout
    for flag in ("--manifest", "--output-dir", "--language", "--min-duration", "--val-fraction"):
        assert flag in ingest_help
    train_help = cli("train", "--help").stdout
    for flag in ("--train-manifest", "--val-manifest", "--tokenizer", "--epochs", "--resume", "--val-interval",
                 "--keep-checkpoints", "--warm-start", "--batch-tokens", "--fresh-prompts", "torchrun"):
        assert flag in train_help, flag


@pytest.mark.slow
def test_demo_run_end_to_end_then_fully_cached(tmp_path: Path, prefect_env: dict[str, str]):
    """The README's main command on the embedded defaults, twice, in separate processes.

    The first run is exactly what a user types: no server, so the command starts a temporary Prefect
    API of its own (as does ``generate``, whose download stage then runs on one).  The second run
    talks to another Prefect server, the session's, with a database of its own, and still takes
    every stage from the cache: the first run persisted it in the local artifact store, not in
    Prefect (and one temporary server less is seconds less).

    Every command runs the installed wheel (built here, offline), from a folder outside the checkout:
    the demo's settings and dataset are those shipped in the package.
    """
    site = install_wheel(tmp_path / "install").resolve()
    env = {"PREFECT_HOME": str(tmp_path / "prefect-home"), **installed_env(site)}
    ran = cli("run", cwd=tmp_path, env=env)
    out = ran.stdout
    assert f"no --config: using the demo's settings ({site / 'indextts_core' / 'demo' / 'demo.yaml'})" in ran.stderr
    assert "rows read: 60, accepted: 60, 0 rejected" in out
    assert "language am" in out and "split val" in out
    run_dir = tmp_path / "runs" / "demo"
    for name in ("manifest.jsonl", "train.jsonl", "val.jsonl", "rejects.jsonl", "report.json", "report.md",
                 "durations.png"):
        assert (run_dir / "ingest" / name).is_file(), name
    assert (run_dir / "corpus" / "am.txt").is_file()
    report = json.loads((run_dir / "ingest" / "report.json").read_text(encoding="utf-8"))
    assert report["speakers"] == 4 and report["languages"]["am"]["clips"] == 48
    first = json.loads((run_dir / "summary.json").read_text())
    assert {s["stage"]: s["status"] for s in first["stages"]} == expect("ran", evaluate="ran")
    assert (run_dir / "pairs" / "GPT_pairs_train.jsonl").is_file()
    # the demo trains the tiny model and its validation losses fall; the export is the official layout
    train = first["results"]["train"]["metrics"]
    assert train["final.loss"] < train["baseline.loss"] - 0.3 and train["final.mel_top1"] > train["baseline.mel_top1"]
    assert "training: " in out and "export verified: True" in out
    assert {"gpt.pth", "config.yaml", "extended_bpe.model"} <= {p.name for p in (run_dir / "train").iterdir()}
    (ckpts,) = (run_dir / "trained_ckpts").iterdir()
    assert {"best.pth", "latest.pth", "metrics.jsonl", "logs"} <= {p.name for p in ckpts.iterdir()}
    assert (run_dir / "extend-bpe" / "extended_bpe.model").is_file()
    # audio during training: step 0, every 3rd validation and the last, one item per language
    steps = sorted(p.name for p in (ckpts / "samples").iterdir())
    assert steps[0] == "step_000000" and len(steps) >= 3
    assert sorted(p.name.split("-")[0] for p in (ckpts / "samples" / steps[-1]).glob("*.wav")) == ["am", "en"]
    # the evaluation (a tiny random Whisper: the plumbing is what counts) and the promotion decision
    # the tiny random models say nothing (silence): the demo says so, counts it, and scores only the recordings
    evaluation = first["results"]["evaluate"]
    assert evaluation["data"]["models"] == ["base", "fine-tuned"] and evaluation["data"]["asr"].startswith("whisper")
    assert evaluation["data"]["tiny_random"] and evaluation["data"]["not_speech"]["fine-tuned"] == {"silent": 10}
    assert {"cer", "wer", "speaker_sim"} <= set(evaluation["data"]["headline"]["reference"])
    assert "speaker_sim" not in evaluation["data"]["headline"]["fine-tuned"]
    assert "note: These are random models (the demo's tiny ones" in out
    page = (run_dir / "evaluate" / "report.html").read_text(encoding="utf-8")
    # 8 items (prompt, real recording, base, fine-tuned) and a paragraph per language (no real recording);
    # the emotion probe: 2 seen items per language, each model's neutral and emotional output, and its prompt
    assert page.count("<audio") == 8 * 4 + 2 * 3 + 4 * 2 * 2 + 1
    md = (run_dir / "evaluate" / "report.md").read_text(encoding="utf-8")
    # the judge's own CER per language, untrusted; the speaker scale of both encoders; DNSMOS of the recordings
    # (the models' silence is never scored); medians and failure counts; the paragraph probe
    assert "The judge's CER on the real recordings: am " in md and "(unreliable)" in md
    assert "## Speaker similarity scale: the model's own speaker encoder (CAMPPlus)" in md
    assert "## Speaker similarity scale: independent verifier (WavLMForXVector)" in md
    assert "| DNSMOS overall (P.835 OVRL) |" in md and "trained on English" in md
    assert "| fine-tuned | am | 5 | 0 |  |  | 5 | 0 | 0 |" in md and "## am / paragraph" in md
    assert "evaluation report" in out and "Evaluation (all items" in out
    # so the promotion decides on what it can trust, the validation loss, and says why: a first run ends with a champion
    promotion = first["results"]["promote"]
    assert promotion["alias"] == "champion" and promotion["decision"]["metric"] == "val_loss"
    assert promotion["decision"]["reason"].startswith("cer not measured: ")
    assert f"promotion: indextts2-am v{promotion['version']} -> {promotion['alias']}" in out
    # what the base could do: the demo trains with its English clips as replay, watches English for forgetting,
    # times the pace and probes the emotion transfer of both models (not measurable on silence: said so), and the
    # base-language gate says it measured nothing rather than that it passed
    assert "replay: 20.1% of each epoch's tokens" in out and "forgetting (worst rise" in out
    assert train["replay.token_share"] > 0.15 and "forgetting.en.worst_rise" in train
    assert "## Speaking pace" in md and "## Emotion transfer (neutral → emotional prompt emotion_excited.flac)" in md
    assert [(g["name"], g["status"]) for g in promotion["gates"]] == [("base-language gate", "not measured")]
    assert "base-language gate not measured: en cer" in out
    assert "en cer: not measured (the judge is unreliable for it)" in promotion["gates"][0]["reason"]
    assert (tmp_path / "runs" / "mlflow.db").is_file()
    # does it speak? the base model's decodes at step 0 and the trained model's, per language
    assert {"baseline.gen/am/stop_rate", "final.gen/am/stop_rate", "final.gen/en/length_ratio"} <= set(train)
    assert "generation am: stop rate" in out

    # the demo's export speaks: codes and the s2mel latent per line (the encoder from the run config's checkpoint:
    # the export holds no hf_cache/, so generate takes the checkpoint's from the store, starting no flow run)
    said = tmp_path / "said.txt"
    said.write_text("ሰላም ነው?\nእንኳን ደህና መጡ።\n", encoding="utf-8")
    prompt = DEMO_DIR / "audio" / "spk01_am_001.flac"
    gen = cli("generate", "--model", str(run_dir / "train"), "--speaker-prompt", str(prompt), "--lines", str(said),
              "--language", "am", "--output-dir", "gen", "--set", "generation.num_beams=1", cwd=tmp_path, env=env)
    assert "holds no hf_cache/" in gen.stderr and "Beginning flow run" not in gen.stderr
    rows = [json.loads(x) for x in (tmp_path / "gen" / "codes.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [r["line"] for r in rows] == [1, 2] and all(r["text_ids"] for r in rows)
    from safetensors.torch import load_file

    latents = load_file(tmp_path / "gen" / "latents.safetensors")
    assert [tuple(latents[f"line{r['line']}"].shape) for r in rows] == [(r["code_len"], 64) for r in rows]

    # ... and synthesizes: a 22.05 kHz wav per line (S2Mel, CAMPPlus, BigVGAN from the base folder's hf_cache)
    (hf_cache,) = (tmp_path / "runs" / "store" / "assets" / "checkpoint").glob("*/hf_cache")
    cli("synthesize", "--model", str(run_dir / "train"), "--speaker-prompt", str(prompt), "--lines", str(said),
        "--language", "am", "--output-dir", "syn", "--set", "generation.num_beams=1", "--diffusion-steps", "2",
        "--hf-cache", str(hf_cache), cwd=tmp_path, env=env)
    _assert_wavs(tmp_path / "syn", 2)

    cli("run", cwd=tmp_path, env={**prefect_env, **installed_env(site)})
    second = json.loads((run_dir / "summary.json").read_text())
    assert {s["stage"]: s["status"] for s in second["stages"]} == expect("cached", download="reused", evaluate="cached")
    assert second["flow_run_id"] != first["flow_run_id"]


def test_ingest_and_corpus_commands(tmp_path: Path, prefect_env: dict[str, str]):
    cli("ingest", "--manifest", str(DEMO_DIR / "manifest.jsonl"), "--output-dir", str(tmp_path / "ds"),
        "--val-fraction", "0.2", "--seed", "9", cwd=tmp_path, env=prefect_env)
    assert len((tmp_path / "ds" / "val.jsonl").read_text().splitlines()) == 12
    out = cli("corpus", "--manifest", str(tmp_path / "ds" / "manifest.jsonl"), "--output-dir",
              str(tmp_path / "corpus"), cwd=tmp_path, env=prefect_env).stdout
    assert "am" in out and (tmp_path / "corpus" / "en.txt").is_file()


def test_bad_manifest_row_is_reported_not_dropped(tmp_path: Path, prefect_env: dict[str, str]):
    lines = (DEMO_DIR / "manifest.jsonl").read_text(encoding="utf-8").splitlines()[:4]
    lines[2] = lines[2][:-5]  # break the JSON of line 3
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("\n".join(lines) + "\n", encoding="utf-8")
    os.symlink(DEMO_DIR / "audio", tmp_path / "audio")
    proc = cli("ingest", "--manifest", str(manifest), "--output-dir", str(tmp_path / "ds"), cwd=tmp_path,
               env=prefect_env)
    assert "1 rejected (invalid_row: 1)" in proc.stdout
    (reject,) = [json.loads(x) for x in (tmp_path / "ds" / "rejects.jsonl").read_text().splitlines()]
    # named relative to the dataset folder (the manifest's), as in the flow: the same on every machine
    assert reject["line"] == 3 and reject["source"] == "m.jsonl"
    assert reject["reason"].startswith("m.jsonl:3: invalid JSON")


def test_ingest_maps_a_community_manifests_field_names(tmp_path: Path, prefect_env: dict[str, str]):
    """``--field ours=theirs`` for names nobody guesses; the common ones (audio_path, speaker_id) without it."""
    rows = [json.loads(x) for x in (DEMO_DIR / "manifest.jsonl").read_text(encoding="utf-8").splitlines()[:6]]
    theirs = [{"audio_path": r["audio"], "sentence_text": r["text"], "speaker_id": r["speaker"],
               "language": r["language"], "id": r["id"]} for r in rows]
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in theirs), encoding="utf-8")
    os.symlink(DEMO_DIR / "audio", tmp_path / "audio")
    out = cli("ingest", "--manifest", str(manifest), "--output-dir", str(tmp_path / "ds"), "--field",
              "text=sentence_text", cwd=tmp_path, env=prefect_env).stdout
    assert "accepted: 6, 0 rejected" in out and "audio_path -> audio (6 rows)" in out
    bad = cli("ingest", "--manifest", str(manifest), "--field", "wav", cwd=tmp_path, env=prefect_env, check=False)
    assert bad.returncode != 0 and "--field 'wav': expected OURS=THEIRS" in bad.stderr


def test_download_lays_out_the_seeds_checkpoints_folder(tmp_path: Path, tiny_bundle, prefect_env: dict[str, str]):
    """Found in use: following the seed guide, nothing created checkpoints/.  With the encoders as assets of their
    own (as a real run has them), they land in hf_cache/ where the official code and the pipeline look."""
    from indextts_core.model.bundle import open_bundle

    hf = tiny_bundle.checkpoint_dir / "hf_cache"
    cli("download", "--output-dir", "checkpoints", "--set", f"download.w2v_bert.source={hf / 'w2v-bert-2.0'}",
        "--set", f"download.semantic_codec.source={hf}",
        "--set", "download.semantic_codec.files=[semantic_codec_model.safetensors]", cwd=tmp_path, env=prefect_env)
    folder = tmp_path / "checkpoints"
    for name in ("config.yaml", "gpt.pth", "bpe.model", "wav2vec2bert_stats.pt", "s2mel.pth",
                 "hf_cache/w2v-bert-2.0/config.json", "hf_cache/semantic_codec_model.safetensors"):
        assert (folder / name).is_file(), name
    bundle = open_bundle(folder)
    assert bundle.fingerprint()["codec"] == tiny_bundle.fingerprint()["codec"]  # the encoders are found there


def test_config_errors_exit_2_naming_field_and_file(tmp_path: Path):
    bad = tmp_path / "run.yaml"
    bad.write_text("train:\n  epochs: lots\n", encoding="utf-8")
    proc = cli("run", "--config", str(bad), check=False)
    assert proc.returncode == 2
    assert f"{bad}: train.epochs:" in proc.stderr
    proc = cli("config", "--set", "ingest.val_fraction=2", check=False)
    assert proc.returncode == 2 and "ingest.val_fraction" in proc.stderr


def test_config_command_prints_resolved_yaml(tmp_path: Path):
    out = cli("config", "--set", "train.epochs=5", "--set", "storage.secret_access_key=hush").stdout
    assert "epochs: 5" in out and "hush" not in out
    # no --config: the demo's settings (as `run` has them), said on stderr; stdout stays the YAML alone
    shown = cli("config")
    assert yaml.safe_load(shown.stdout) == yaml.safe_load(dump_config(load_config(DEMO_CONFIG)))
    assert f"no --config: using the demo's settings ({DEMO_CONFIG})" in shown.stderr
    # a file replaces the demo's: what it leaves out is the built-in default (training sized for a real corpus)
    empty = tmp_path / "run.yaml"
    empty.write_text("language: am\n", encoding="utf-8")
    real = yaml.safe_load(cli("config", "--config", str(empty)).stdout)
    assert real["train"]["learning_rate"] == 2e-5 and real["train"]["warmup_steps"] == 1000


def test_every_command_without_config_loads_the_demos_settings(monkeypatch: pytest.MonkeyPatch):
    """One set of defaults: each command reads its configuration through `load_run_config`, which without
    --config loads the demo's file, as `run` does (found in use: the stage commands trained at 2e-5 with 1000
    warm-up steps into the same runs/demo/ the demo's `run` trained at 1e-3 with 5)."""
    import typer
    from typer.testing import CliRunner

    from flows.cli import app
    from flows.cli_support import load_run_config
    from flows.commands import model

    assert load_run_config(None, None) == load_config(DEMO_CONFIG)
    commands = Path(__file__).resolve().parent.parent / "flows" / "commands"
    for path in commands.glob("*.py"):
        assert not re.search(r"\bload_config\(", path.read_text(encoding="utf-8")), path.name
    got: dict[str, Any] = {}

    def stage(cfg: Any, name: str, given: dict | None = None) -> dict:
        got["cfg"] = cfg
        raise typer.Exit(0)

    monkeypatch.setattr(model, "run_stage", stage)
    result = CliRunner().invoke(app, ["train", "--epochs", "2"])
    assert result.exit_code == 0, result.output
    train = got["cfg"].train
    assert (train.learning_rate, train.warmup_steps, train.epochs) == (1e-3, 5, 2)


@pytest.mark.slow
def test_seed_commands_preprocess_and_build_pairs(tmp_path: Path, tiny_bundle, prefect_env: dict[str, str]):
    """The seed's steps 1-3, with its flag names, on the demo data and the tiny bundle."""
    ckpt = tiny_bundle.checkpoint_dir
    cli("ingest", "--manifest", str(DEMO_DIR / "manifest.jsonl"), "--output-dir", str(tmp_path / "dataset"),
        cwd=tmp_path, env=prefect_env)
    cli("extend-bpe", "--base-model", str(ckpt / "bpe.model"), "--manifests", str(tmp_path / "dataset" / "manifest.jsonl"),
        "--output-model", str(tmp_path / "tokenizers" / "extended_bpe.model"), "--target-size", "24000",
        cwd=tmp_path, env=prefect_env)
    args = ("preprocess", "--manifest", str(tmp_path / "dataset" / "manifest.jsonl"), "--output-dir",
            str(tmp_path / "processed_data"), "--tokenizer", str(tmp_path / "tokenizers" / "extended_bpe.model"),
            "--language", "am", "--checkpoint", str(ckpt))
    out = cli(*args, cwd=tmp_path, env=prefect_env).stdout
    assert "clips: 60; indexed: 60" in out and "audio processed now: 60" in out
    again = cli(*args, cwd=tmp_path, env=prefect_env)
    assert "preprocess: cached" in again.stderr  # same inputs: the stored index, nothing recomputed
    out = cli("build-pairs", "--manifest", str(tmp_path / "processed_data" / "train_manifest.jsonl"),
              "--output", str(tmp_path / "processed_data" / "GPT_pairs_train.jsonl"),
              "--pairs-per-target", "2", cwd=tmp_path, env=prefect_env).stdout
    for split in ("train", "val"):  # one command writes both splits' pairs, as the seed's two runs did
        pairs = [json.loads(x) for x in (tmp_path / "processed_data" / f"GPT_pairs_{split}.jsonl").read_text().splitlines()]
        assert pairs and all(p["prompt"] != p["target"] for p in pairs)
        assert f"{split} pairs: {len(pairs)}" in out


@pytest.mark.slow
def test_cli_stages_and_the_flow_share_artifacts(tmp_path: Path, prefect_env: dict[str, str]):
    """Stages run one by one from the CLI, then the whole flow: the flow reuses what the commands made,
    and every command's run is in MLflow.  None is given --config: every command, `run` included, reads
    the demo's settings (one set of defaults, so the stage commands and the flow share one cache).

    Training only has to run here (the demo test checks what it learns): two steps.  The train
    settings are not in the upstream stages' cache keys, so the override leaves their caches alone.
    """
    said = cli("ingest", cwd=tmp_path, env=prefect_env).stderr
    assert f"no --config: using the demo's settings ({DEMO_CONFIG})" in said, said
    cli("extend-bpe", cwd=tmp_path, env=prefect_env)  # corpus runs on the way, as in the flow
    cli("preprocess", cwd=tmp_path, env=prefect_env)
    assert (tmp_path / "dataset" / "manifest.jsonl").is_file() and (tmp_path / "processed_data").is_dir()
    cli("run", "--set", "train.max_steps=2", "--set", "train.val_generate=0", "--set",
        "evaluate.enabled=false", cwd=tmp_path, env=prefect_env)
    summary = json.loads((tmp_path / "runs" / "demo" / "summary.json").read_text())
    status = {s["stage"]: s["status"] for s in summary["stages"]}
    assert status == expect("cached", download="reused", pairs="ran", train="ran")

    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("indextts2-finetune")
    names = {r.info.run_name for r in client.search_runs([exp.experiment_id], max_results=500)}
    for stage in ("ingest", "extend-bpe", "preprocess"):
        assert any(n.startswith(f"demo · {stage} · ") for n in names), (stage, names)


def test_help_is_readable_at_80_columns():
    """Every command's --help fits 80 columns without cutting flag names."""
    for command in ("run", "download", "ingest", "corpus", "extend-bpe", "preprocess", "pairs", "build-pairs",
                    "train", "normalize", "config"):
        out = cli(command, "--help", env={"COLUMNS": "80"}).stdout
        assert "…" not in out, command
        assert max(len(line) for line in out.splitlines()) <= 80, command


def test_generate_and_synthesize_on_a_tiny_bundle_folder(tmp_path: Path, tiny_bundle):
    """A folder written by write_tiny_bundle (official layout, encoders in hf_cache/): no flow, no server."""
    model, prompt = str(tiny_bundle.checkpoint_dir), str(DEMO_DIR / "audio" / "spk02_en_001.flac")
    err = cli("generate", "--model", model, "--speaker-prompt", prompt, check=False)
    assert err.returncode == 2 and "nothing to say: give --text or --lines" in err.stderr
    out = cli("generate", "--model", model, "--speaker-prompt", prompt, "--emotion-prompt", prompt,
              "--emo-alpha", "0.6", "--text", "HELLO THERE", "--language", "en", "--output-dir", str(tmp_path / "g"))
    assert "1 (1 stopped" in out.stdout or "1 (0 stopped" in out.stdout
    info = json.loads((tmp_path / "g" / "generate.json").read_text())
    assert info["options"]["emo_alpha"] == 0.6 and info["options"]["num_beams"] == 3 and info["lines"] == 1
    cli("synthesize", "--model", model, "--speaker-prompt", prompt, "--text", "HELLO THERE. HOW ARE YOU?",
        "--language", "en", "--out", str(tmp_path / "one" / "hello.wav"), "--diffusion-steps", "2")
    _assert_wavs(tmp_path / "one", 1)


def _assert_wavs(folder: Path, n: int) -> None:
    import soundfile as sf

    report = json.loads((folder / "synthesize.json").read_text())
    assert [r["line"] for r in report["lines"]] == list(range(1, n + 1))
    for r in report["lines"]:
        info = sf.info(str(folder / r["wav"]))
        assert info.samplerate == 22050 and info.subtype == "PCM_16" and info.channels == 1
        # frames: (codes * 1.72) mel frames per segment x 256 samples, plus 200 ms between segments
        assert info.frames >= int(r["codes"] * 1.72 - r["segments"]) * 256
    assert report["real_time_factor"] is not None or report["audio_s"] == 0


@pytest.mark.slow
def test_import_reuses_a_community_trainers_processed_features(tmp_path: Path, tiny_bundle,
                                                              prefect_env: dict[str, str]):
    """Found in use: processed_data/*_manifest.jsonl and GPT_pairs_*.jsonl of the JarodMica/AM trainers were refused.
    Made with the same base model, their features are reused: preprocess then decodes no audio at all."""
    import numpy as np
    import torch

    from indextts_core.data.audio import load_audio
    from indextts_core.preprocess import FeatureExtractor

    rows = [json.loads(line) for line in (DEMO_DIR / "manifest.jsonl").read_text(encoding="utf-8").splitlines()]
    rows = [r for r in rows if r["speaker"] in ("spk01", "spk02")][:10]
    raw = tmp_path / "dataset" / "manifest.jsonl"  # the seed's raw manifest, with another trainer's field names
    raw.parent.mkdir()
    raw.write_text("".join(json.dumps({"id": r["id"], "audio_path": str(DEMO_DIR / r["audio"]), "text": r["text"],
                                       "speaker_id": r["speaker"], "language": r["language"]}) + "\n" for r in rows),
                   encoding="utf-8")
    extract = FeatureExtractor(tiny_bundle, torch.device("cpu"))
    processed = tmp_path / "processed_data"
    (processed / "features").mkdir(parents=True)
    lines = []
    for r in rows:  # their layout: one .npy per part, paths relative to the manifest
        codes, spk, emo = extract([load_audio(DEMO_DIR / r["audio"], 16000).samples])[0]
        for part, arr, dtype in (("codes", codes, np.int32), ("condition", spk, np.float32),
                                 ("emo_vec", emo, np.float32)):
            np.save(processed / "features" / f"{r['id']}_{part}.npy", arr.astype(dtype))
        lines.append({"id": r["id"], "codes_path": f"features/{r['id']}_codes.npy",
                      "condition_path": f"features/{r['id']}_condition.npy",
                      "emo_vec_path": f"features/{r['id']}_emo_vec.npy", "text_ids_path": "unused.npy",
                      "text_len": 3, "code_len": len(codes), "speaker": r["speaker"]})
    (processed / "train_manifest.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines[:-2]))
    pairs = [{"id": f"{lines[-1]['id']}__{lines[-2]['id']}", "prompt_id": lines[-2]["id"], "target_id": lines[-1]["id"],
              "target_codes_path": lines[-1]["codes_path"], "target_text_ids_path": "unused.npy",
              "target_text_len": 3, "target_code_len": 1, "prompt_condition_path": lines[-2]["condition_path"],
              "prompt_emo_vec_path": lines[-2]["emo_vec_path"], "target_emo_vec_path": lines[-1]["emo_vec_path"]},
             {"id": f"{lines[-2]['id']}__{lines[-1]['id']}", "prompt_id": lines[-1]["id"], "target_id": lines[-2]["id"],
              "target_codes_path": lines[-2]["codes_path"], "target_text_ids_path": "unused.npy",
              "target_text_len": 3, "target_code_len": 1, "prompt_condition_path": lines[-1]["condition_path"],
              "prompt_emo_vec_path": lines[-1]["emo_vec_path"], "target_emo_vec_path": lines[-2]["emo_vec_path"]}]
    (processed / "GPT_pairs_val.jsonl").write_text("".join(json.dumps(x) + "\n" for x in pairs))

    ckpt = str(tiny_bundle.checkpoint_dir)
    out = cli("import", str(processed / "train_manifest.jsonl"), str(processed / "GPT_pairs_val.jsonl"),
              "--manifest", str(raw), "--checkpoint", ckpt, "--output-dir", str(tmp_path / "imported"),
              "--spot-checks", "3", cwd=tmp_path, env=prefect_env).stdout
    assert "imported: 10" in out and "rejected rows: 0" in out, out
    report = json.loads((tmp_path / "imported" / "import-report.json").read_text())
    assert report["spot_check"]["passed"] and report["manifest_rows"] == 10
    # the preprocess stage plans its work from these unit records: every clip's audio is done, nothing to decode
    from indextts_core.preprocess.features import StoredFeatures
    from indextts_core.store.objects import open_store
    from indextts_core.utils.fileio import sha256_file

    records = StoredFeatures(open_store(tmp_path / "runs" / "store"), report["featureset"]).records()
    assert {sha256_file(DEMO_DIR / r["audio"]) for r in rows} <= set(records.done)
    ours = [json.loads(x) for x in (tmp_path / "imported" / "manifest.jsonl").read_text().splitlines()]
    assert ours[0]["audio"].startswith("../") and ours[0]["speaker"] == "spk01"  # relative: ingest carries the audio


@pytest.mark.slow
def test_ui_starts_mlflow_and_tensorboard_on_the_runs_stores_and_stops_them(tmp_path: Path):
    """Found in use: `mlflow ui` as the README said took about 130 s and 2 GiB (16 processes) before it answered."""
    import signal
    import time
    import urllib.request

    from tests_support import free_port

    mlflow_port, tb_port = free_port(), free_port()
    proc = subprocess.Popen([str(Path(sys.executable).parent / "indextts-train"), "ui", "--port", str(mlflow_port),
                             "--tensorboard-port", str(tb_port), "--set", f"run.output_dir={tmp_path / 'runs' / 'x'}"],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONPYCACHEPREFIX": str(tmp_path / "pycache")})
    try:
        lines = []
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            lines.append(line)
            if "Ctrl-C" in line or not line:
                break
        out = "".join(lines)
        assert f"MLflow: http://127.0.0.1:{mlflow_port}" in out and f"TensorBoard: http://127.0.0.1:{tb_port}" in out, out
        for port in (mlflow_port, tb_port):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as r:
                assert r.status == 200
        # the run's own tracking store: the one the pipeline writes (runs/mlflow.db next to run.output_dir)
        with urllib.request.urlopen(f"http://127.0.0.1:{mlflow_port}/ajax-api/2.0/mlflow/experiments/search"
                                    "?max_results=10", timeout=10) as r:
            assert r.status == 200
        assert (tmp_path / "runs" / "mlflow.db").is_file()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    import socket

    for port in (mlflow_port, tb_port):  # both stopped, workers included
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", port)) != 0


def test_evaluate_without_a_trained_model_says_how_to_get_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """No trained model in the run folder: one line and exit 1; nothing is trained as a side effect."""
    from typer.testing import CliRunner

    from flows.cli import app

    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["evaluate"])
    assert result.exit_code == 1, result.output
    said = " ".join(result.stderr.split())
    assert "error: no trained model in runs/demo/train: train one first (indextts-train run" in said
    assert "Traceback" not in result.output and not (tmp_path / "runs" / "demo" / "train").exists()
    assert [p.parent.name for p in (tmp_path / "runs").rglob("*") if p.is_file()] == ["logs"]  # only its log
