"""The finetune flow on a tiny IndexTTS-2.5 base (``tiny://0@2.5``): every stage, the 2.5 export reloaded.

The base is chosen by the checkpoint's config (``version: 2.5``); nothing else in the run
configuration says 2.5.  LoRA is on here, so the merged 2.5 export is what gets checked.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient

from flows.finetune import finetune
from indextts_core.model.checkpoint import load_gpt, read_state_dict
from indextts_core.text.tiktoken_vocab import TIKTOKEN_FILE, language_index, load_tiktoken_vocab
from tests_support import make_cfg


@pytest.mark.slow
def test_demo_on_a_tiny_2_5_base(tmp_path: Path):
    cfg = make_cfg(tmp_path, {
        "download.checkpoint": {"source": "tiny://0@2.5"},
        "train.epochs": 1, "train.batch_tokens": 1024, "train.learning_rate": 3e-3, "train.warmup_steps": 2,
        "train.val_interval": 10, "train.lora_rank": 4, "train.lora_alpha": 8.0,
        "download.asr": {"source": "tiny://0"},
        "evaluate.enabled": True, "evaluate.max_items": 1, "evaluate.diffusion_steps": 2, "evaluate.resamples": 20,
    })
    summary = finetune(cfg)
    assert summary.status == "completed"
    run = cfg.run.output_dir

    # the tokenizer stage kept the vocabulary, measured it and chose the language row
    tok = summary.results["extend-bpe"]
    assert tok["data"]["release"] == "2.5" and tok["metrics"]["pieces_added"] == 0
    choice = tok["data"]["language_choice"]
    assert choice["code"] == "am" and choice["row"] == language_index("am") == 75
    assert choice["row_init"] == "released_mean"
    assert tok["metrics"]["am.tokens_per_char"] > 1  # Amharic is byte fallback in the tiny vocabulary
    assert "byte fallback" in (run / "extend-bpe" / "report.md").read_text(encoding="utf-8")

    # preprocessing framed the text as 2.5 inference does and recorded the language row per clip
    rows = [json.loads(x) for x in (run / "preprocess" / "train_manifest.jsonl").read_text().splitlines()]
    assert {r["lang"] for r in rows if r["language"] == "am"} == {75}
    assert {r["lang"] for r in rows if r["language"] == "en"} == {0}  # the English lines keep their own code

    # training learnt; the export is the 2.5 layout, loads strictly, LoRA merged
    train = summary.results["train"]["metrics"]
    assert train["final.loss"] < train["baseline.loss"]
    export = run / "train"
    names = {p.name for p in export.iterdir()}
    assert {"gpt.pth", "config.yaml", TIKTOKEN_FILE, "codec.pth"} <= names and "bpe.model" not in names
    model = load_gpt(export, strict=True)
    assert model.cfg.is_v25
    sd = read_state_dict(export / "gpt.pth")
    assert not any("lora" in k for k in sd)
    # only the chosen language row moved: the other rows (the released ones included) are the base's
    base = read_state_dict(Path(summary.results["download"]["assets"]["checkpoint"]["uri"]) / "gpt.pth")
    changed = (sd["lang_embedding.weight"] != base["lang_embedding.weight"]).any(dim=1)
    assert changed.nonzero().flatten().tolist() == [75]
    moved = (sd["text_embedding.weight"] != base["text_embedding.weight"]).any(dim=1).nonzero().flatten().tolist()
    assert moved == [load_tiktoken_vocab(export / TIKTOKEN_FILE).lang_token_id("am")]  # the <|am|> prefix row
    assert torch.equal(sd["text_head.weight"], base["text_head.weight"])
    assert torch.equal(sd["spk_emb_proj.weight"], base["spk_emb_proj.weight"])  # precomputed: frozen
    assert float(torch.linalg.vector_norm(sd["lang_embedding.weight"][75])) < 1.0  # not the N(0, 1) init

    assert (export / f"{Path(TIKTOKEN_FILE).stem}.json").is_file()  # the language choice travels with it

    # the evaluation spoke with the base and the fine-tuned 2.5 models; the tiny models' silence is counted as
    # such (never scored), the real recordings are scored
    evaluation = summary.results["evaluate"]
    assert evaluation["data"]["models"] == ["base", "fine-tuned"]
    assert evaluation["data"]["headline"]["fine-tuned"]["speech_failure"] == 1.0
    assert {"cer", "wer", "speaker_sim"} <= set(evaluation["data"]["headline"]["reference"])
    assert (run / "evaluate" / "report.html").read_text(encoding="utf-8").count("<audio") >= 4
    # the tiny random judge is judged first and found unreliable (MLflow says so); promotion says why it did not
    # decide on CER after saying the outputs were not speech
    judge = evaluation["data"]["judge"]
    assert judge["unreliable"] == sorted(judge["reference_cer"]) and "am" in judge["unreliable"]
    logged = MlflowClient(cfg.tracking.tracking_uri).get_run(evaluation["mlflow_run_id"]).data
    assert logged.tags["judge.unreliable"] == ",".join(judge["unreliable"])
    assert logged.metrics["judge.reference_cer.am"] == pytest.approx(judge["reference_cer"]["am"])
    decision = summary.results["promote"]["decision"]
    assert decision["metric"] == "val_loss" and decision["reason"].startswith("cer not measured: ")
    assert "; judge unreliable for am: CER " in decision["reason"]
