"""Config-driven entry points for each stage: resolve the config to local inputs, call the stage.

These are what the CLI and the orchestration layer call; they hold no policy (retries, caching,
tracking live in ``tasks/``).  Each takes the :class:`PipelineConfig` and returns the stage's
result dataclass.
"""

from __future__ import annotations

from pathlib import Path

from indextts_core.config import PipelineConfig
from indextts_core.text.corpus import CorpusResult, build_corpus
from indextts_core.errors import InputError
from indextts_core.text.extend_bpe import ExtendOptions, ExtendResult, extend_sentencepiece
from indextts_core.text.frontend import TextFrontend
from indextts_core.preprocess.pairs import PairingPolicy
from indextts_core.preprocess import Clip, PreprocessOptions
from indextts_core.data.ingest import IngestResult, ManifestInput, ingest
from indextts_core.store.download import FetchedAsset, download
from indextts_core.store.objects import ArtifactStore, materialize_dir, open_store
from indextts_core.training.trainer import TrainOptions


def store_for(cfg: PipelineConfig) -> ArtifactStore:
    return open_store(cfg.storage.uri, cfg.storage)


def manifest_inputs(cfg: PipelineConfig, dataset_root: Path) -> list[ManifestInput]:
    """The configured manifests, relative paths resolved against the fetched dataset folder."""
    inputs = []
    for m in cfg.ingest.manifests:
        path = Path(m.path)
        inputs.append(ManifestInput(
            path=path if path.is_absolute() else dataset_root / path,
            format=m.format, language=m.language or cfg.language, speaker=m.speaker,
        ))
    return inputs


def run_download(cfg: PipelineConfig, store: ArtifactStore | None = None) -> dict[str, FetchedAsset]:
    return download(cfg, store or store_for(cfg))


def run_ingest(cfg: PipelineConfig, dataset: FetchedAsset, store: ArtifactStore | None = None,
               out_dir: Path | None = None) -> IngestResult:
    store = store or store_for(cfg)
    root = materialize_dir(store, dataset.prefix, cfg.storage.cache_dir)
    return ingest(manifest_inputs(cfg, root), out_dir or cfg.run.output_dir / "dataset",
                  cfg.ingest, seed=cfg.run.seed, storage=cfg.storage, dataset_root=root, audio_base=store.uri_for(dataset.prefix))


def run_corpus(cfg: PipelineConfig, ingested: IngestResult, out_dir: Path | None = None,
               frontend: TextFrontend | None = None) -> CorpusResult:
    manifests = [ingested.train, ingested.val] if cfg.corpus.include_val else [ingested.train]
    return build_corpus(manifests, out_dir or cfg.run.output_dir / "corpus", frontend or TextFrontend())


RESOURCES = Path(__file__).resolve().parent / "resources"


def probe_lines(cfg: PipelineConfig, frontend: TextFrontend) -> list[str]:
    """The base-language probe text for the drift check, through the front-end."""
    path = Path(cfg.extend_bpe.probe_text) if cfg.extend_bpe.probe_text else RESOURCES / "base_probe.txt"
    try:
        raw = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise InputError(f"extend_bpe.probe_text: {path} not found") from None
    return [frontend(line, "base") for line in raw if line.strip()]


def extend_languages(cfg: PipelineConfig) -> list[str]:
    return list(cfg.extend_bpe.languages or [cfg.language])


def read_frontend_corpus(corpus_dir: Path, languages: list[str]) -> dict[str, list[str]]:
    """``<language>.frontend.txt`` of the corpus stage for each language (missing ones are an error)."""
    out = {}
    for lang in languages:
        path = corpus_dir / f"{lang}.frontend.txt"
        if not path.is_file():
            raise InputError(f"{corpus_dir}: no corpus text for language {lang!r} (is it in the dataset?)")
        out[lang] = path.read_text(encoding="utf-8").splitlines()
    return out


def run_extend_bpe(cfg: PipelineConfig, base_model: Path, corpus: dict[str, list[str]], out_dir: Path,
                   frontend: TextFrontend | None = None, report_dir: Path | None = None) -> ExtendResult:
    """Extend ``base_model`` with front-end ``corpus`` text.

    Writes ``out_dir/<extend_bpe.output_name>`` and its sidecar, and the report to ``report_dir``
    (default ``out_dir``).
    """
    frontend = frontend or TextFrontend()
    e = cfg.extend_bpe
    opts = ExtendOptions(target_size=e.target_size, max_base_drift=e.max_base_drift, min_char_count=e.min_char_count,
                         min_piece_count=e.min_piece_count, heldout_fraction=e.heldout_fraction, seed=cfg.run.seed)
    return extend_sentencepiece(base_model, corpus, probe_lines(cfg, frontend), out_dir / e.output_name, opts,
                                frontend.fingerprint(), report_dir=report_dir or out_dir)


def preprocess_options(cfg: PipelineConfig) -> PreprocessOptions:
    p, d = cfg.preprocess, cfg.ingest
    return PreprocessOptions(
        batch_size=None if p.batch_size == "auto" else p.batch_size,
        max_batch_seconds=None if p.max_batch_seconds == "auto" else p.max_batch_seconds,
        workers=0 if p.workers == "auto" else p.workers, device=p.device, unit_clips=p.unit_clips,
        min_duration_s=d.min_duration_s, max_duration_s=d.max_duration_s, max_unk_share=p.max_unk_share,
        silence_dbfs=p.silence_dbfs, max_clipped_share=p.max_clipped_share, cond_max_seconds=p.cond_max_seconds,
    )


def clips_from_manifests(splits: dict[str, Path], language: str | None = None) -> list[Clip]:
    """Clips of ingested manifests, e.g. ``{"train": train.jsonl, "val": val.jsonl}``; a bad row names its line.

    Relative audio paths are resolved against the manifest's folder.
    """
    from indextts_core.errors import ManifestError
    from indextts_core.data.manifest import parse_row, read_jsonl_manifest

    clips = []
    for split, path in splits.items():
        for raw in read_jsonl_manifest(path, language=language):
            try:
                row = parse_row(raw)
            except ValueError as e:
                raise ManifestError(f"{raw.where}: {e} (run 'indextts-train ingest' on raw manifests first)") from None
            audio = row.audio if row.audio.startswith("s3://") or Path(row.audio).is_absolute() \
                else str(Path(raw.base_dir) / row.audio)
            extra = row.model_extra or {}
            clips.append(Clip(id=row.id, audio=audio, text=row.text, speaker=row.speaker, language=row.language,
                              split=split, audio_sha256=extra.get("audio_sha256"), emotion=row.emotion))
    return clips


def clips_for_manifest(cfg: PipelineConfig, manifest: Path, language: str | None = None) -> list[Clip]:
    """Clips of one manifest with their train/val split.

    An ingested ``manifest.jsonl`` next to its ``train.jsonl`` and ``val.jsonl`` keeps that split;
    otherwise the split is computed the way ingest computes it (same seed and settings, same result).
    """
    from dataclasses import replace

    from indextts_core.data.split import split_by_speaker

    train, val = manifest.parent / "train.jsonl", manifest.parent / "val.jsonl"
    if manifest.name == "manifest.jsonl" and train.is_file() and val.is_file():
        return clips_from_manifests({"train": train, "val": val}, language=language)
    clips = clips_from_manifests({"train": manifest}, language=language)
    rows = [{"id": c.id, "speaker": c.speaker, "language": c.language} for c in clips]
    _, val_rows = split_by_speaker(rows, cfg.ingest.val_fraction, cfg.ingest.val_min_speaker_clips, cfg.run.seed,
                                   cfg.ingest.val_speakers)
    val_ids = {r["id"] for r in val_rows}
    return [replace(c, split="val") if c.id in val_ids else c for c in clips]


def pairing_policy(cfg: PipelineConfig) -> PairingPolicy:
    return PairingPolicy(cfg.pairs, seed=cfg.run.seed)


def train_options(cfg: PipelineConfig) -> TrainOptions:
    t = cfg.train
    return TrainOptions(
        epochs=t.epochs, batch_tokens=t.batch_tokens,
        micro_batch_tokens=None if t.micro_batch_tokens == "auto" else t.micro_batch_tokens,
        memory_margin=t.memory_margin, learning_rate=t.learning_rate, new_rows_learning_rate=t.new_rows_learning_rate,
        weight_decay=t.weight_decay, new_rows_weight_decay=t.new_rows_weight_decay, warmup_steps=t.warmup_steps,
        min_lr_ratio=t.min_lr_ratio, max_grad_norm=t.max_grad_norm, text_loss_weight=t.text_loss_weight,
        mel_loss_weight=t.mel_loss_weight, val_interval=t.val_interval, keep_checkpoints=t.keep_checkpoints,
        best_metric=t.best_metric, amp=t.amp, gradient_checkpointing=t.gradient_checkpointing,
        freeze_base_rows=t.freeze_base_rows, freeze_conditioning=t.freeze_conditioning, dropout=t.dropout,
        fresh_prompts=t.fresh_prompts, workers=None if t.workers == "auto" else t.workers, device=t.device,
        seed=cfg.run.seed, max_steps=t.max_steps, export=t.export, export_dtype=t.export_dtype,
        pad_at_end=t.pad_at_end, deterministic=t.deterministic,
    )
