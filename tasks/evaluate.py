"""Evaluate stage task: the base model, the fine-tuned one and the current champion, said and scored.

Inputs: the exported model (the train stage's artifact, or any checkpoint folder given to
``indextts-train evaluate``), the base checkpoint (its synthesis models and encoders serve every
model), the pairs artifact (its manifests give the evaluation set), the ASR asset (optional) and the
champion's export (optional).  Outputs: the report folder (``report.html`` with every sample's
audio, ``report.md``, ``plots.png``, ``evaluation.json``, ``items.jsonl``, ``audio/``) as the stage
artifact and in MLflow (artifacts ``evaluation/``; metrics ``eval.<model>.<metric>`` over all items
and ``eval.<model>.<language>.<group>.<metric>``, ``cer_excess`` among them; the judge's own CER on the real
recordings ``judge.reference_cer.<language>`` and the tag ``judge.unreliable``: the languages above
``evaluate.max_judge_cer``, comma-separated, empty when none; the tags ``judge.name``, ``judge.revision``,
``judge.licence``, and ``judge_secondary.*`` with the metrics ``judge_secondary.items`` /
``judge_secondary.mean_cer_first`` / ``judge_secondary.mean_cer_second`` when ``evaluate.asr_secondary`` is
set; the speaking pace ``pace.<model>.<language>.chars_per_s`` and ``pace.<model>.<language>.pace_drift``; with
``evaluate.emotion_prompt``, the emotion probe's ``emotion.<model>.<language>.<figure>`` (``f0_mean_delta``,
``f0_range_delta``, ``energy_range_delta``, ``toward``, ``emotion_sim_gain``),
``emotion.<model>.<language>.transfer_kept`` and ``emotion.<model>.probe_seconds``; a relative ``emotion_prompt``
that does not exist is read from the package's demo folder).  Cached on its inputs, the ``generation`` and
``evaluate`` settings and the seed.  A base folder without the synthesis models (``s2mel.pth`` and
``hf_cache/``'s CAMPPlus, BigVGAN and encoders) skips the evaluation with a warning naming the missing
file, rather than failing a run whose training succeeded; the promotion then decides on validation loss.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from prefect import get_run_logger

from indextts_core.config import DEMO_DIR, PipelineConfig
from indextts_core.errors import InputError
from indextts_core.evaluation import STAGE_VERSION
from indextts_core.evaluation.asr import open_transcriber
from indextts_core.evaluation.evalset import build_eval_set, read_sentences
from indextts_core.evaluation.emotion import FIGURES as EMOTION_FIGURES
from indextts_core.evaluation.gates import by_language
from indextts_core.evaluation.judges import judge_info
from indextts_core.evaluation.naturalness import open_naturalness
from indextts_core.evaluation.report import caveats, write_report
from indextts_core.evaluation.run import SpeakerEmbedder, evaluate_models
from indextts_core.evaluation.speaker import open_speaker_verifier
from indextts_core.model.bundle import ModelBundle, open_bundle
from indextts_core.model.campplus import load_campplus
from indextts_core.store.objects import read_uri_bytes
from indextts_core.synthesis.chain import missing_synthesis_models
from indextts_core.utils.fileio import read_jsonl
from tasks.artifacts import ArtifactRef, StageResult
from tasks.context import RunContext
from tasks.preprocess import checkpoint_bundle
from tasks.stage import Stage, stage_task


def sentences_digest(cfg: PipelineConfig) -> str | None:
    """The content hash of the evaluation's own input files, the sentence file and the emotion prompt (part of the
    cache key: a changed file at the same path evaluates again), or None without either."""
    path = cfg.evaluate.sentences
    if path is not None and not path.is_file():
        raise InputError(f"evaluate.sentences: {path} not found")
    files = [p for p in (path, emotion_prompt_path(cfg.evaluate.emotion_prompt)) if p is not None]
    if not files:
        return None
    digest = hashlib.sha256()
    for f in files:
        digest.update(hashlib.sha256(f.read_bytes()).digest())
    return digest.hexdigest()


def emotion_prompt_path(path: Path | None) -> Path | None:
    """``evaluate.emotion_prompt`` as a file: as given when it exists, else relative to the demo folder shipped in
    the package (the demo config names its bundled clip by a relative path, which must resolve wherever the package
    is installed); an InputError when neither exists."""
    if path is None or path.is_file():
        return path
    bundled = DEMO_DIR / path
    if not path.is_absolute() and bundled.is_file():
        return bundled
    raise InputError(f"evaluate.emotion_prompt: {path} not found")


def device_of(setting: str) -> str:
    return ("cuda" if torch.cuda.is_available() else "cpu") if setting == "auto" else setting


def asr_folder(cfg: PipelineConfig, s: Stage, asr: ArtifactRef | None) -> Path | None:
    if cfg.evaluate.asr_model is not None:
        return cfg.evaluate.asr_model
    return s.fetch(asr) if asr is not None else None


def asr_revision(cfg: PipelineConfig, s: Stage, asr: ArtifactRef | None) -> str | None:
    """The judge's revision: the hub commit the download stage recorded for the ``download.asr`` asset (its store
    record), else that asset's content digest; None for a local ``evaluate.asr_model`` (its config's sha256)."""
    if cfg.evaluate.asr_model is not None or asr is None:
        return None
    key = f"{asr.prefix}.json"  # the download stage's record of the asset (a tiny:// asset may keep none)
    record = s.store.get_json(key) if s.store.exists(key) else None
    commit = record.get("commit") if isinstance(record, dict) else None
    return commit or f"sha256:{asr.digest}"


def like_base(folder: Path, base: ModelBundle) -> ModelBundle:
    """A model folder (an export) with the base checkpoint's encoders and synthesis models."""
    return open_bundle(folder, base.w2v_bert_dir, base.codec_path, hf_cache=base.hf_cache,
                       campplus_path=base.campplus_path, bigvgan_dir=base.bigvgan_dir)


@stage_task("evaluate", STAGE_VERSION)
def evaluate_task(cfg: PipelineConfig, model: ArtifactRef, checkpoint: ArtifactRef, pairs: ArtifactRef,
                  w2v: ArtifactRef | None, codec: ArtifactRef | None, asr: ArtifactRef | None,
                  champion: ArtifactRef | None, sentences: str | None, campplus: ArtifactRef | None = None,
                  bigvgan: ArtifactRef | None = None, verifier: ArtifactRef | None = None, *,
                  ctx: RunContext) -> StageResult:
    logger = get_run_logger()
    e = cfg.evaluate
    if e.emotion_prompt is not None and e.emotion_items > 0:
        e = e.model_copy(update={"emotion_prompt": emotion_prompt_path(e.emotion_prompt)})
    inputs = {"model": model, "base-checkpoint": checkpoint, "pairs": pairs, "asr": asr, "champion": champion,
              **({"speaker-verifier": verifier} if verifier is not None else {})}
    with Stage("evaluate", cfg, ctx, inputs) as s:
        base = checkpoint_bundle(cfg, s.store, checkpoint, w2v, codec, campplus, bigvgan)
        missing = missing_synthesis_models(base)
        if missing:  # training is done and good; say clearly what the evaluation lacks instead of failing the run
            logger.warning("evaluation skipped: %s", missing)
            (s.out / "SKIPPED.txt").write_text(f"evaluation skipped: {missing}\n", encoding="utf-8")
            return s.publish({"items": 0}, {"skipped": "SKIPPED.txt"}, data={
                "skipped": missing, "asr": None, "headline": {}, "differences": [], "models": []})
        models = {"base": base} if e.compare_base else {}
        if champion is not None:
            models["champion"] = like_base(s.fetch(champion), base)
        models["fine-tuned"] = like_base(s.fetch(model), base)
        data = s.fetch(pairs)
        said = read_sentences(e.sentences, cfg.language) if sentences is not None and e.sentences else []
        evalset = build_eval_set(read_jsonl(data / "train_manifest.jsonl"), read_jsonl(data / "val_manifest.jsonl"),
                                 max_items=e.max_items, seed=cfg.run.seed, sentences=said,
                                 paragraph_sentences=e.paragraph_sentences)
        if not evalset.items:
            raise InputError(f"nothing to evaluate: no validation clip has another clip of its speaker to prompt with "
                             f"({evalset.skipped}); raise ingest.val_fraction or add clips")
        device = device_of(e.device)
        folder = asr_folder(cfg, s, asr)
        transcriber = (open_transcriber(folder, e.asr_backend, device, e.asr_batch_size)
                       if folder is not None else None)
        judges = [{"role": "first", **judge_info(folder, transcriber.name, asr_revision(cfg, s, asr))}
                  ] if folder is not None and transcriber is not None else []
        secondary = None
        if e.asr_secondary is not None:
            secondary = open_transcriber(e.asr_secondary, "auto", device, e.asr_batch_size)
            judges.append({"role": "secondary", **judge_info(e.asr_secondary, secondary.name)})
        speaker_model = load_campplus(e.speaker_model) if e.speaker_model else load_campplus(
            base.campplus_path, base.campplus_config)
        verifier_folder = e.speaker_verifier or (s.fetch(verifier) if verifier is not None else None)
        speaker_verifier = open_speaker_verifier(verifier_folder, device) if verifier_folder is not None else None
        naturalness = open_naturalness(e.naturalness, threads=0)
        logger.info("evaluating %s on %d items (%s); ASR: %s", ", ".join(models), len(evalset.items),
                    ", ".join(f"{k}: {v}" for k, v in sorted(evalset.counts().items())),
                    transcriber.name if transcriber else "none (no CER/WER)")
        result = evaluate_models(
            models, evalset, s.out, cfg.generation, asr=transcriber, embedder=SpeakerEmbedder(speaker_model.to(device)),
            read_audio=lambda uri: read_uri_bytes(uri, cfg.storage), device=device, options=e,
            secondary=secondary, judges=judges, verifier=speaker_verifier, naturalness=naturalness)
        paths = write_report(s.out, title=f"{cfg.run.name}: {cfg.language} evaluation")
        summary = result.summary
        metrics: dict[str, float | int] = {"items": result.items, "eval_seconds": result.seconds,
                                           "audio_seconds": summary["audio_s"]}
        for name, values in summary["headline"].items():
            metrics |= {f"eval.{name}.{k}": v for k, v in values.items()}
        for row in summary["table"]:
            if row["language"] != "all":
                metrics[f"eval.{row['model']}.{row['language']}.{row['group']}.{row['metric']}"] = row["mean"]
        judge = summary["judge"]  # the judge judged first: its CER on the real recordings, per language
        if judge:
            metrics |= {f"judge.reference_cer.{lang}": x for lang, x in judge["reference_cer"].items()}
        for enc, scale in summary["speaker_scale"].items():  # what a similarity reads against, per language
            for lang, entry in scale["by_language"].items():
                metrics |= {f"speaker_scale.{enc}.{lang}.{bound}": entry[bound]["mean"]
                            for bound in ("ceiling", "floor") if entry[bound]["mean"] is not None}
        for model, langs in (summary.get("pace") or {}).items():  # speaking rate, and its drift against the recordings
            for lang, entry in langs.items():
                metrics |= {f"pace.{model}.{lang}.{k}": entry[k] for k in ("chars_per_s", "pace_drift")
                            if entry.get(k) is not None}
        emotion = summary.get("emotion")
        if emotion:  # the emotion probe's mean transfer figures, and what each model kept of the base's
            for model, langs in emotion["by_model"].items():
                for lang, entry in langs.items():
                    metrics |= {f"emotion.{model}.{lang}.{k}": entry[k] for k in EMOTION_FIGURES
                                if entry.get(k) is not None}
            for model, langs in emotion["transfer_kept"].items():
                metrics |= {f"emotion.{model}.{lang}.transfer_kept": x for lang, x in langs.items() if x is not None}
            metrics |= {f"emotion.{model}.probe_seconds": x for model, x in emotion["seconds"].items() if x is not None}
        for line in caveats({"judge": judge, "judges": judges}):
            logger.warning("%s", line)
        tags = {"judge.unreliable": ",".join(judge["unreliable"])} if judge else {}
        if speaker_verifier is not None:
            tags["speaker_verifier.name"] = speaker_verifier.name
        for j in judges:  # who judged: name, revision and licence of each judge
            prefix = "judge" if j["role"] == "first" else "judge_secondary"
            tags |= {f"{prefix}.{k}": str(j[k]) for k in ("name", "revision", "licence")}
        second = summary.get("judge_secondary")
        if second:
            metrics["judge_secondary.items"] = second["items"]
            metrics |= {f"judge_secondary.{k}": second[k] for k in ("mean_cer_first", "mean_cer_second")
                        if second[k] is not None}
        staged = s.publish(metrics, {"report": "report.html", "summary": "evaluation.json"},
                           tags=tags or None,
                           reports=[paths["markdown"]], data={"judge": judge, "headline": summary["headline"],
                                                              "differences": [d for d in summary["differences"]
                                                                              if d["language"] == "all"],
                                                              "asr": summary["asr"], "models": list(models),
                                                              "judges": judges,
                                                              "judge_secondary": summary.get("judge_secondary"),
                                                              "tiny_random": summary["tiny_random"],
                                                              "not_speech": summary["not_speech"],
                                                              "pace": summary.get("pace"),
                                                              # per language over its groups: the gates' figures
                                                              "by_language": by_language(summary["table"]),
                                                              "emotion": {k: emotion[k] for k in (
                                                                  "by_model", "transfer_kept", "baseline", "prompt")}
                                                              if emotion else None})
        if s.run is not None:
            s.run.log_artifacts(s.out, "evaluation")
        logger.info("evaluation report: %s", s.out / "report.html")
    return staged
