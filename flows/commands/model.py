"""The model commands: ``train`` (fine-tune and export) and ``evaluate`` (does it speak the language?).

Their settings are flags made from the ``train:`` and ``evaluate:`` sections (:mod:`flows.flags`);
declared here are the local files they publish: pair files, the tokenizer, a checkpoint folder.
Under torchrun (``LOCAL_RANK`` set) ``train`` runs one rank of the core trainer on local files.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Annotated, Any

import typer

from flows.cli_support import ConfigOpt, SetOpt, copy_result, fail, load_run_config, run_stage
from flows.flags import config_flags
from flows.printing import print_evaluation, print_outputs, print_training
from indextts_core.config import PipelineConfig
from indextts_core.errors import InputError


@config_flags("train")
def train(
    train_manifest: Annotated[Path | None, typer.Option(
        help="Training pairs (processed_data/GPT_pairs_train.jsonl; default: the pairs stage's).")] = None,
    tokenizer: Annotated[Path | None, typer.Option(
        help="The extended tokenizer the index was made with (default: the extend-bpe stage's).")] = None,
    val_manifest: Annotated[Path | None, typer.Option(
        help="Validation pairs (processed_data/GPT_pairs_val.jsonl).")] = None,
    checkpoint: Annotated[str | None, typer.Option(
        help="Base checkpoint folder, the one preprocess used (default: the config's).")] = None,
    features: Annotated[Path | None, typer.Option(
        help="Folder of the feature shards, when the pairs' features live in the artifact store (torchrun by hand: "
        "every node needs them locally).")] = None,
    config: ConfigOpt = None,
    overrides: SetOpt = None,
    flags: dict | None = None,
) -> None:
    """Fine-tune the GPT on the pairs; export the best checkpoint in the official layout.

    Batch size, accumulation, loader workers and AMP are chosen automatically; an out-of-memory
    step is re-run with half-size micro-batches; base-token rows are frozen for real.  --resume
    auto continues an interrupted run on exactly the next batch; --resume FILE (a model_stepN.pth,
    latest.pth or best.pth) trains from that checkpoint, even when this training is cached.  Prints
    where the checkpoints are (run.output_dir/trained_ckpts/KEY/ unless --output-dir).  Multi-GPU: set
    train.nproc_per_node (default: one process per GPU), or run each rank yourself with
    torchrun --nproc-per-node N --no-python indextts-train train ... (then nothing is tracked).
    """
    from flows.local_inputs import pairs_artifact, store_for, tokenizer_artifact, use_checkpoint

    try:
        cfg = load_run_config(config, overrides, flags)
        check_resume_file(cfg.train.resume)  # before anything runs
        if "LOCAL_RANK" in os.environ:  # one rank of a torchrun job: the core trainer, nothing else
            return _train_rank(cfg, train_manifest, val_manifest, tokenizer, checkpoint, features)
        store = store_for(cfg)
        if checkpoint is not None:
            use_checkpoint(cfg, checkpoint)
        given = {}
        if train_manifest is not None:
            given["pairs"] = pairs_artifact(store, train_manifest, val_manifest)
        if tokenizer is not None:
            cfg.extend_bpe.output_name = tokenizer.name
            given["extend-bpe"] = tokenizer_artifact(store, tokenizer)
        result = run_stage(cfg, "train", given)
    except InputError as e:
        raise fail(e) from None
    print_training(result)


def check_resume_file(resume: str | None) -> None:
    """A ``--resume FILE`` (not ``auto``) names an existing file, or the command stops with one line saying so.

    The rest is checked when training starts, each refusal one line naming the file: not a training
    checkpoint of this platform (another trainer's needs ``--warm-start``), or made by a run with other
    inputs.  Once accepted, the train stage runs from it even when its result is cached.
    """
    if resume in (None, "auto"):
        return
    path = Path(resume)
    if path.is_dir():
        raise InputError(f"--resume {resume}: a folder, not a checkpoint file; give one of its checkpoints "
                         "(latest.pth, model_stepN.pth, best.pth), or --resume auto")
    if not path.is_file():
        raise InputError(f"--resume {resume}: no such checkpoint file (the train command prints where a run's "
                         "checkpoints are; --resume auto continues the run of these inputs and settings)")


def _train_rank(cfg: PipelineConfig, train_manifest: Path | None, val_manifest: Path | None,
                tokenizer: Path | None, checkpoint: str | None, features: Path | None) -> None:
    """Under torchrun every rank runs the core trainer on local files (the train stage starts this)."""
    from indextts_core.preprocess.pairs import PairingPolicy
    from indextts_core.store.objects import read_uri_bytes
    from indextts_core.training import TrainInputs
    from indextts_core.training import train as run_training

    if train_manifest is None or tokenizer is None or checkpoint is None or cfg.train.checkpoint_dir is None:
        raise InputError("under torchrun, train needs --train-manifest, --tokenizer, --checkpoint and --output-dir")
    if int(os.environ.get("RANK", "0")):
        logging.getLogger().setLevel(logging.WARNING)
    inputs = TrainInputs(checkpoint_dir=Path(checkpoint), tokenizer=tokenizer, train=train_manifest,
                         val=val_manifest, output_dir=cfg.train.checkpoint_dir,
                         pairing=PairingPolicy(cfg.pairs, seed=cfg.run.seed),
                         feature_dir=features, read_audio=lambda uri: read_uri_bytes(uri, cfg.storage))
    result = run_training(inputs, cfg.train, seed=cfg.run.seed)
    if int(os.environ.get("RANK", "0")) == 0:  # only rank 0 reports
        metrics: dict[str, Any] = {"steps": result.steps, "best_step": result.best_step or 0,
                                   "export_verified": int(result.export_verified),
                                   **{f"throughput.{k}": v for k, v in result.throughput.items()},
                                   **{f"baseline.{k.removeprefix('val/')}": v for k, v in result.baseline.items()},
                                   **{f"final.{k.removeprefix('val/')}": v for k, v in result.final.items()}}
        if result.base_rows_unchanged is not None:
            metrics["base_rows_unchanged"] = int(result.base_rows_unchanged)
        print_training({"metrics": metrics, "outputs": {"checkpoints": str(result.output_dir)}})


def trained_model(cfg: PipelineConfig) -> Path:
    """The run's trained model (``run.output_dir/train``, what ``run`` and ``train`` leave there); none is an
    error that says how to get one (evaluating never trains as a side effect)."""
    folder = cfg.run.output_dir / "train"
    if not (folder / "gpt.pth").is_file():
        raise NoTrainedModel(f"no trained model in {folder}: train one first (indextts-train run, or indextts-train "
                             "train), or give --model FOLDER")
    return folder


class NoTrainedModel(InputError):
    """``evaluate`` was asked for the run's model before any was trained."""


@config_flags("evaluate", exclude=("evaluate.enabled",))
def evaluate(
    model: Annotated[Path | None, typer.Option(
        help="Checkpoint folder to evaluate: an export or the official folder (default: run.output_dir/train, the "
             "run's trained model).",
        exists=True, file_okay=False)] = None,
    data: Annotated[Path | None, typer.Option(
        help="Folder with train_manifest.jsonl and val_manifest.jsonl (processed_data: a preprocess or pairs "
             "output; default: the pairs stage's).", exists=True, file_okay=False)] = None,
    checkpoint: Annotated[str | None, typer.Option(
        help="Base checkpoint folder: compared with, and the source of the synthesis models and encoders "
             "(default: the config's).")] = None,
    output_dir: Annotated[Path | None, typer.Option(
        help="Copy the report folder here (default: run.output_dir/evaluate).", file_okay=False)] = None,
    config: ConfigOpt = None,
    overrides: SetOpt = None,
    flags: dict | None = None,
) -> None:
    """Does the model speak the language? Say held-out sentences with each speaker's voice and score them.

    The model, the base checkpoint and the current champion (MLflow alias) say the same items with
    the same seeds: held-out clips of trained and of unseen speakers, prompted with another clip of
    the speaker, plus --sentences.  Scores per language, with 95% intervals: CER/WER from Whisper
    (language forced), speaker similarity (CAMPPlus), duration ratio, stop failures; the real
    recordings are scored too.  Writes report.html (every sample playable), report.md, plots.png,
    evaluation.json and items.jsonl.
    """
    from flows.local_inputs import publish_files, store_for, use_checkpoint

    try:
        cfg = load_run_config(config, overrides, flags)
        model = model if model is not None else trained_model(cfg)  # before anything is written
        store = store_for(cfg)
        if checkpoint is not None:
            use_checkpoint(cfg, checkpoint)
        given = {}
        if model is not None:
            from indextts_core.model.bundle import HF_CACHE

            given["train"] = publish_files(store, {p.relative_to(model).as_posix(): p for p in sorted(model.rglob("*"))
                                                   if p.is_file() and HF_CACHE.name not in p.relative_to(model).parts},
                                           "train")
        if data is not None:
            files = {n: data / n for n in ("train_manifest.jsonl", "val_manifest.jsonl")}
            missing = [str(p) for p in files.values() if not p.is_file()]
            if missing:
                raise InputError(f"{', '.join(missing)}: not found (--data takes a preprocess or pairs output folder)")
            given["pairs"] = publish_files(store, files, "pairs")
        result = run_stage(cfg, "evaluate", given)
        dest = copy_result(cfg, result, output_dir) if output_dir else cfg.run.output_dir / "evaluate"
    except NoTrainedModel as e:
        fail(e)
        raise typer.Exit(1) from None
    except InputError as e:
        raise fail(e) from None
    print_evaluation(result["data"])
    if result["data"].get("skipped"):
        raise typer.Exit(1)
    print_outputs("Evaluation", {"report": str(dest / "report.html"), "table": str(dest / "report.md"),
                                 "seconds": f"{result['metrics']['eval_seconds']:.1f}"})
