"""Preprocessing: text ids, semantic codes, speaker latents and emotion vectors for every clip.

Per clip: front-end text -> token ids; 16 kHz audio -> Wav2Vec2-BERT layer-17 features -> 50 Hz
semantic codes; the frozen base GPT's speaker latents (32 x D) and emotion vector (D), from at most
``cond_max_seconds`` of audio (inference crops prompts to 15 s).  Batches are sorted by length and
every output is trimmed to its clip (codes from length-masked features, latents with
``exact_padding``), so a clip gets the same numbers alone or in any batch.

Three phases, each usable on its own (the orchestrated flow runs ``process_unit`` as parallel tasks):

* :func:`plan`: tokenize and gate the text, then find which audio still needs features.  Features
  are keyed by the audio file's sha256 inside a *feature set* named by the hashes of every model
  file, so adding clips processes only the new audio, and nothing is recomputed for unchanged
  models.  Work is cut into units of ``unit_clips`` audio keys in a fixed order.
* :func:`process_unit`: decode, gate (duration, silence, clipping), extract, write one shard of
  features plus a unit record (processed keys, rejected keys with reasons), both atomically and
  the record last: an interrupted run resumes at the first unit without a record.
* :func:`assemble`: the index (``train_manifest.jsonl``, ``val_manifest.jsonl``), the text ids
  (``text_ids.safetensors``, int16), ``rejects.jsonl`` and the report.

Every clip of the input ends up in exactly one place: an index row or a rejects line with a reason.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import statistics
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from indextts_core.data.audio import load_audio
from indextts_core.errors import AudioDecodeError, InputError
from indextts_core.utils.fileio import atomic_write, read_json, sha256_bytes, sha256_file, write_json, write_jsonl
from indextts_core.model.bundle import ModelBundle
from indextts_core.utils.oom import BackoffEvent, GpuOOM, is_oom, run_with_oom_backoff
from indextts_core.preprocess.shards import ClipFeatures, write_shard
from indextts_core.store.objects import ObjectNotFoundError, read_uri_bytes

log = logging.getLogger(__name__)

#: Bump when the features or the index change for the same inputs (invalidates caches).
STAGE_VERSION = "1"
SAMPLE_RATE = 16000
CODES_PER_SECOND = 50
CPU_BATCH_SECONDS = 60.0  # padded audio seconds per batch without a GPU


@dataclass(frozen=True)
class PreprocessOptions:
    batch_size: int | None = None  # clips per batch; None: from max_batch_seconds
    max_batch_seconds: float | None = None  # padded audio per batch; None: probed on GPU, else CPU_BATCH_SECONDS
    workers: int = 0  # audio decoding threads; 0: one per CPU
    device: str = "auto"
    unit_clips: int = 256
    min_duration_s: float = 0.5
    max_duration_s: float = 36.0
    max_unk_share: float = 0.05
    silence_dbfs: float = -50.0
    max_clipped_share: float = 0.001
    cond_max_seconds: float = 15.0

    def resolved_device(self) -> torch.device:
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.device)


@dataclass(frozen=True)
class Clip:
    """One row to preprocess (from an ingested manifest)."""

    id: str
    audio: str
    text: str
    speaker: str
    language: str
    split: str  # "train" | "val"
    audio_sha256: str | None = None
    emotion: str | None = None


@dataclass
class TextItem:
    clip: Clip
    frontend_text: str
    ids: list[int]


@dataclass
class Plan:
    feature_dir: Path
    featureset: str
    texts: dict[str, TextItem]  # clip id -> tokenized text (text gates passed)
    rejects: list[dict[str, Any]]  # text-gate rejections
    keys: dict[str, str]  # clip id -> audio key
    records: UnitRecords  # what earlier runs finished
    units: list[list[tuple[str, str]]]  # work: [(audio key, audio uri)] per unit
    limits: dict[str, int] = field(default_factory=dict)

    @property
    def unit_names(self) -> list[str]:
        return [unit_name([k for k, _ in u]) for u in self.units]


@dataclass
class UnitResult:
    name: str
    processed: int
    rejected: dict[str, str]
    audio_seconds: float
    seconds: float
    batches: int
    batch_size: int
    backoffs: int


def unit_name(keys: Sequence[str]) -> str:
    return "unit-" + hashlib.sha256("\n".join(keys).encode()).hexdigest()[:20]


def featureset_id(models: dict[str, str], opts: PreprocessOptions, layer: int) -> str:
    """Names the features: the models' content hashes, the stage version, and the options that change features."""
    ident = {"models": models, "version": STAGE_VERSION, "cond_max_seconds": opts.cond_max_seconds, "layer": layer}
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:24]


def bundle_models(bundle: ModelBundle) -> dict[str, str]:
    """Content hashes of the model files of a bundle (the tokenizer does not touch audio features)."""
    return {k: v for k, v in bundle.fingerprint().items() if k != "tokenizer"}


@dataclass
class UnitRecords:
    """What completed units recorded: features (shard, row, code length, duration) and rejections."""

    done: dict[str, tuple[str, int, int, float]] = field(default_factory=dict)
    rejects: dict[str, str] = field(default_factory=dict)

    def add(self, record: dict[str, Any]) -> None:
        for row, key in enumerate(record["keys"]):
            code_len, duration = record["lengths"][key]
            self.done.setdefault(key, (record["shard"], row, code_len, duration))
        for key, reason in record["rejects"].items():
            self.rejects.setdefault(key, reason)


def read_units(feature_dir: Path) -> UnitRecords:
    """The records of every completed unit in ``feature_dir``."""
    records = UnitRecords()
    if feature_dir.is_dir():
        for record_path in sorted(feature_dir.glob("unit-*.json")):
            records.add(read_json(record_path))
    return records


# ------------------------------------------------------------------------ plan


def tokenize(clips: Sequence[Clip], tokenizer: Any, frontend: Any, max_text_tokens: int,
             max_unk_share: float) -> tuple[dict[str, TextItem], list[dict[str, Any]]]:
    """Front-end + tokenizer for every clip; text gates: empty, too long, too much <unk>."""
    items, rejects = {}, []
    unk = tokenizer.unk_id()
    for clip in clips:
        fe_text = frontend(clip.text, clip.language)
        ids = frontend.encode(tokenizer, clip.text, clip.language)
        reason = None
        if not fe_text.strip() or not ids:
            reason = ("empty_text", "no text left after the front-end")
        elif len(ids) > max_text_tokens:
            reason = ("text_too_long", f"{len(ids)} text tokens > max_text_tokens={max_text_tokens}")
        elif ids.count(unk) / len(ids) > max_unk_share:
            reason = ("unknown_tokens", f"{ids.count(unk)} of {len(ids)} tokens are <unk> "
                      f"(> max_unk_share={max_unk_share}); is the tokenizer extended for {clip.language!r}?")
        if reason:
            rejects.append(_reject(clip, *reason))
        else:
            items[clip.id] = TextItem(clip, fe_text, ids)
    return items, rejects


def _reject(clip: Clip, code: str, reason: str) -> dict[str, Any]:
    return {"id": clip.id, "audio": clip.audio, "split": clip.split, "reason_code": code, "reason": reason}


def _audio_key(clip: Clip, storage: Any) -> str:
    if clip.audio_sha256:
        return clip.audio_sha256
    try:
        return sha256_bytes(read_uri_bytes(clip.audio, storage))
    except (ObjectNotFoundError, FileNotFoundError):
        return "missing:" + clip.audio


def plan(clips: Sequence[Clip], tokenizer: Any, frontend: Any, bundle: ModelBundle, feature_root: Path,
         opts: PreprocessOptions, storage: Any | None = None) -> Plan:
    cfg = bundle.gpt_config
    texts, rejects = tokenize(clips, tokenizer, frontend, cfg.max_text_tokens, opts.max_unk_share)
    fset = featureset_id(bundle_models(bundle), opts, bundle.hidden_layer)
    feature_dir = Path(feature_root) / fset
    records = read_units(feature_dir)
    keys = {cid: _audio_key(item.clip, storage) for cid, item in texts.items()}
    return make_plan(feature_dir, fset, texts, rejects, keys, records, opts.unit_clips,
                     {"max_text_tokens": cfg.max_text_tokens, "max_mel_tokens": cfg.max_mel_tokens})


def make_plan(feature_dir: Path, fset: str, texts: dict[str, TextItem], rejects: list[dict[str, Any]],
              keys: dict[str, str], records: UnitRecords, unit_clips: int, limits: dict[str, int]) -> Plan:
    todo: dict[str, str] = {}
    for cid, key in keys.items():
        if key not in records.done and key not in records.rejects and key not in todo:
            todo[key] = texts[cid].clip.audio
    ordered = sorted(todo.items())  # a fixed order: interrupted runs re-plan the same units
    units = [ordered[i:i + unit_clips] for i in range(0, len(ordered), unit_clips)]
    return Plan(feature_dir, fset, texts, rejects, keys, records, units, limits)


# ------------------------------------------------------------------------ extraction


class FeatureExtractor:
    """The models of a bundle on one device; turns 16 kHz waves into per-clip features."""

    def __init__(self, bundle: ModelBundle, device: torch.device, cond_max_seconds: float = 15.0):
        self.device = device
        self.features = bundle.load_features(device)
        self.codec = bundle.load_codec().to(device)
        self.gpt = bundle.load_gpt().to(device).eval()
        self.cond_max_samples = int(cond_max_seconds * SAMPLE_RATE)

    @torch.no_grad()
    def __call__(self, waves: Sequence[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """[(codes (T_i,), speaker latents (32, D), emotion vector (D,))] per wave."""
        feats, lengths = self.features.extract_padded(waves)
        codes, _ = self.codec.quantize(feats, lengths)
        code_lengths = lengths.tolist()
        if any(len(w) > self.cond_max_samples for w in waves):  # prompts are cut as inference cuts them
            feats, lengths = self.features.extract_padded([w[: self.cond_max_samples] for w in waves])
        spk = self.gpt.speaker_latents(feats, lengths, exact_padding=True)
        emo = self.gpt.emotion_vector(feats, lengths, exact_padding=True)
        return [(codes[i, : int(code_lengths[i])].cpu().numpy(), spk[i].float().cpu().numpy(),
                 emo[i].float().cpu().numpy()) for i in range(len(waves))]


Extract = Callable[[Sequence[np.ndarray]], list[tuple[np.ndarray, np.ndarray, np.ndarray]]]


# ------------------------------------------------------------------------ audio gates


def _decode(uri: str, opts: PreprocessOptions, storage: Any) -> tuple[np.ndarray | None, str | None, str | None]:
    """(16 kHz wave, None, None) or (None, reason code, reason)."""
    try:
        data = read_uri_bytes(uri, storage)
        wav = load_audio(data, SAMPLE_RATE, name=uri)
    except (ObjectNotFoundError, FileNotFoundError):
        return None, "audio_missing", f"audio not found: {uri}"
    except AudioDecodeError as e:
        return None, "audio_decode", str(e)
    x = wav.samples
    dur = len(x) / SAMPLE_RATE
    if dur < opts.min_duration_s:
        return None, "too_short", f"{dur:.2f} s < min_duration_s={opts.min_duration_s}"
    if dur > opts.max_duration_s:
        return None, "too_long", f"{dur:.2f} s > max_duration_s={opts.max_duration_s}"
    rms = float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))
    dbfs = 20 * np.log10(max(rms, 1e-12))
    if dbfs < opts.silence_dbfs:
        return None, "silent", f"level {dbfs:.1f} dBFS < silence_dbfs={opts.silence_dbfs}"
    clipped = float(np.mean(np.abs(x) >= 0.999))
    if clipped > opts.max_clipped_share:
        return None, "clipped", f"{clipped:.2%} of samples at full scale > max_clipped_share={opts.max_clipped_share:.2%}"
    return x, None, None


def length_batches(durations: Sequence[float], max_batch_seconds: float, max_clips: int | None = None) -> list[list[int]]:
    """Indices grouped longest-first so that clips x longest duration stays within ``max_batch_seconds``."""
    order = sorted(range(len(durations)), key=lambda i: -durations[i])
    batches: list[list[int]] = []
    for i in order:
        if batches:
            batch = batches[-1]
            longest = durations[batch[0]]
            if (len(batch) + 1) * longest <= max_batch_seconds and (max_clips is None or len(batch) < max_clips):
                batch.append(i)
                continue
        batches.append([i])
    return batches


def probe_batch_seconds(extract: Extract, waves: Sequence[np.ndarray], device: torch.device,
                        safety: float = 0.8) -> float:
    """Padded audio seconds per batch that fit on ``device``, measured on the longest clips.

    Runs one and two copies of the longest clip, measures the peak memory of each, and extrapolates
    linearly to ``safety`` x the free memory.  Without a GPU: ``CPU_BATCH_SECONDS``.
    """
    if device.type != "cuda" or not waves:
        return CPU_BATCH_SECONDS
    longest = max(waves, key=len)
    seconds = len(longest) / SAMPLE_RATE
    peaks = []
    for n in (1, 2):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        extract([longest] * n)
        peaks.append(torch.cuda.max_memory_allocated(device) - base)
    per_clip = max(peaks[1] - peaks[0], 1)
    fixed = max(peaks[0] - per_clip, 0)
    free, _total = torch.cuda.mem_get_info(device)
    clips = max(1, int((free * safety - fixed) // per_clip))
    log.info("batch probe on %s: %.1f MB per %.1f s clip, %.0f MB free -> %d clips", device, per_clip / 1e6, seconds,
             free / 1e6, clips)
    return clips * seconds


# ------------------------------------------------------------------------ one unit


def process_unit(
    unit: Sequence[tuple[str, str]],
    extract: Extract,
    feature_dir: Path,
    opts: PreprocessOptions,
    max_mel_tokens: int,
    batch_seconds: float,
    storage: Any | None = None,
    on_backoff: Callable[[BackoffEvent], None] | None = None,
) -> UnitResult:
    """Process one unit of (audio key, uri) pairs; writes its shard and, last, its record."""
    start = time.monotonic()
    keys = [k for k, _ in unit]
    name = unit_name(keys)
    record_path = feature_dir / f"{name}.json"
    if record_path.is_file():  # finished by an earlier (interrupted) run
        record = read_json(record_path)
        return UnitResult(name, len(record["keys"]), record["rejects"], 0.0, 0.0, 0, 0, 0)
    rejected: dict[str, str] = {}
    waves: dict[str, np.ndarray] = {}
    workers = opts.workers or os.cpu_count() or 1
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for (key, uri), (wave, code, reason) in zip(unit, pool.map(lambda ku: _decode(ku[1], opts, storage), unit)):
            if wave is None:
                rejected[key] = f"{code}: {reason}"
            else:
                waves[key] = wave
    ok_keys = [k for k in keys if k in waves]
    durations = [len(waves[k]) / SAMPLE_RATE for k in ok_keys]
    features: dict[str, ClipFeatures] = {}
    backoffs = 0
    limit = opts.batch_size

    def count(event: BackoffEvent) -> None:
        nonlocal backoffs
        backoffs += 1
        if on_backoff is not None:
            on_backoff(event)

    batches = length_batches(durations, batch_seconds, opts.batch_size)
    for batch in batches:
        bkeys = [ok_keys[i] for i in batch]
        size = min(len(bkeys), limit or len(bkeys))

        def step(bs: int, bkeys: list[str] = bkeys) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
            out = []
            for i in range(0, len(bkeys), bs):
                out += extract([waves[k] for k in bkeys[i:i + bs]])
            return out

        try:
            results, size = run_with_oom_backoff(step, size, min_batch=1, on_backoff=count)
            limit = size  # later batches start from what fitted
        except GpuOOM:
            results = []
            for k in bkeys:  # alone: a clip that does not fit even alone is rejected, the rest kept
                try:
                    results += extract([waves[k]])
                except Exception as e:  # noqa: BLE001 - only OOM is expected here
                    if not is_oom(e):
                        raise
                    results.append(None)  # type: ignore[arg-type]
                    rejected[k] = (f"out_of_memory: does not fit on {opts.resolved_device()} even alone "
                                   f"({len(waves[k]) / SAMPLE_RATE:.1f} s)")
        for k, res in zip(bkeys, results):
            if res is None:
                continue
            codes, spk, emo = res
            if len(codes) > max_mel_tokens:
                rejected[k] = f"codes_too_long: {len(codes)} codes > max_mel_tokens={max_mel_tokens}"
                continue
            features[k] = ClipFeatures(k, codes, spk, emo, len(waves[k]) / SAMPLE_RATE)
    stored = [features[k] for k in keys if k in features]
    shard = write_shard(feature_dir, stored).name if stored else None
    record = {"unit": name, "shard": shard, "keys": [c.key for c in stored], "rejects": rejected,
              "lengths": {c.key: [len(c.codes), round(c.duration, 4)] for c in stored},
              "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
    write_json(record_path, record)  # last: the unit is now complete
    return UnitResult(name, len(stored), rejected, sum(durations), time.monotonic() - start, len(batches),
                      limit or 0, backoffs)


# ------------------------------------------------------------------------ index


@dataclass
class PreprocessResult:
    output_dir: Path
    train_manifest: Path
    val_manifest: Path
    rejects: Path
    report_json: Path
    report_md: Path
    report_png: Path
    clips: int
    indexed: int
    rejected: int
    processed_now: int  # clips whose audio was processed in this run
    reused: int  # clips whose features came from earlier runs
    rejected_by_reason: dict[str, int]
    units: list[UnitResult]


def assemble(clips: Sequence[Clip], p: Plan, records: UnitRecords, out_dir: Path, tokenizer_path: Path,
             frontend_fp: dict[str, Any], units: Sequence[UnitResult], feature_dir_ref: str,
             started: float, base_gpt_sha256: str | None = None) -> PreprocessResult:
    """Write the index, text ids, rejects and report for ``clips`` from the plan and the unit records.

    ``base_gpt_sha256`` (the GPT whose conditioning computed the speaker latents and emotion
    vectors) goes into ``preprocess.json``, so training can refuse a different base checkpoint.
    """
    from safetensors.torch import save_file

    done, done_rejects = records.done, records.rejects
    rows: dict[str, list[dict[str, Any]]] = {"train": [], "val": []}
    rejects = list(p.rejects)
    text_ids: list[list[int]] = []
    for clip in clips:
        item = p.texts.get(clip.id)
        if item is None:
            continue  # a text-gate reject, already listed
        key = p.keys[clip.id]
        if key in done_rejects:
            code, _, reason = done_rejects[key].partition(": ")
            rejects.append(_reject(clip, code, reason))
            continue
        if key not in done:
            raise InputError(f"{clip.id}: audio {clip.audio} has no features after processing (unit missing?)")
        shard, row, code_len, duration = done[key]
        rows[clip.split].append({
            "id": clip.id, "speaker": clip.speaker, "language": clip.language, "text": clip.text,
            "text_frontend": item.frontend_text, "text_row": len(text_ids), "text_len": len(item.ids),
            "shard": shard, "row": row, "code_len": code_len, "duration": duration, "audio_sha256": key,
            "audio": clip.audio, **({"emotion": clip.emotion} if clip.emotion else {}),
        })
        text_ids.append(item.ids)
    out_dir.mkdir(parents=True, exist_ok=True)
    flat = np.concatenate([np.asarray(t, dtype=np.int64) for t in text_ids]) if text_ids else np.zeros(0, np.int64)
    dtype = torch.int16 if flat.size == 0 or flat.max() < 2**15 else torch.int32
    offsets = np.concatenate([[0], np.cumsum([len(t) for t in text_ids])]).astype(np.int64)
    tmp = out_dir / ".text_ids.safetensors.tmp"
    save_file({"ids": torch.from_numpy(flat).to(dtype), "offsets": torch.from_numpy(offsets)}, str(tmp))
    os.replace(tmp, out_dir / "text_ids.safetensors")
    train_path, val_path = out_dir / "train_manifest.jsonl", out_dir / "val_manifest.jsonl"
    write_jsonl(train_path, rows["train"])
    write_jsonl(val_path, rows["val"])
    rejects_path = out_dir / "rejects.jsonl"
    write_jsonl(rejects_path, rejects)
    write_json(out_dir / "preprocess.json", {
        "format": "indextts-preprocess/1", "feature_dir": feature_dir_ref, "featureset": p.featureset,
        "tokenizer": {"file": tokenizer_path.name, "sha256": sha256_file(tokenizer_path)}, "frontend": frontend_fp,
        "shards": sorted({r["shard"] for rs in rows.values() for r in rs}), "limits": p.limits,
        "base_gpt_sha256": base_gpt_sha256,
    })
    all_rows = rows["train"] + rows["val"]
    reasons = dict(Counter(r["reason_code"] for r in rejects).most_common())
    processed_now = sum(u.processed for u in units if u.seconds > 0)
    audio_seconds = sum(u.audio_seconds for u in units)
    busy = sum(u.seconds for u in units)
    report = {
        "clips": len(clips), "indexed": len(all_rows), "train": len(rows["train"]), "val": len(rows["val"]),
        "rejected": len(rejects), "rejected_by_reason": reasons,
        "audio_processed_now": processed_now, "units": len(units),
        "features_reused": len(all_rows) - min(processed_now, len(all_rows)),
        "clips_per_second": round(processed_now / busy, 3) if busy else None,
        "audio_seconds_per_second": round(audio_seconds / busy, 3) if busy else None,
        "oom_backoffs": sum(u.backoffs for u in units), "batch_sizes": sorted({u.batch_size for u in units}),
        "seconds": round(time.monotonic() - started, 3), "featureset": p.featureset, "limits": p.limits,
        "code_len": _summary([r["code_len"] for r in all_rows]), "text_len": _summary([r["text_len"] for r in all_rows]),
    }
    report_json, report_md, report_png = out_dir / "report.json", out_dir / "report.md", out_dir / "lengths.png"
    write_json(report_json, report)
    with atomic_write(report_md) as f:
        f.write(_markdown(report))
    _plot_lengths([r["code_len"] for r in all_rows], [r["text_len"] for r in all_rows], p.limits, report_png)
    return PreprocessResult(out_dir, train_path, val_path, rejects_path, report_json, report_md, report_png,
                            len(clips), len(all_rows), len(rejects), processed_now,
                            len(all_rows) - min(processed_now, len(all_rows)), reasons, list(units))


def _summary(values: Sequence[int]) -> dict[str, Any]:
    if not values:
        return {}
    v = sorted(values)
    return {"min": v[0], "median": statistics.median(v), "p95": v[min(len(v) - 1, int(0.95 * len(v)))], "max": v[-1]}


def _markdown(r: dict[str, Any]) -> str:
    lines = [
        "# Preprocessing report", "",
        f"- clips: {r['clips']}; indexed: {r['indexed']} (train {r['train']}, val {r['val']}); rejected: {r['rejected']}",
        f"- audio processed in this run: {r['audio_processed_now']} clip(s); features reused: {r['features_reused']}",
        f"- throughput: {r['clips_per_second']} clips/s, {r['audio_seconds_per_second']} audio s/s; "
        f"OOM backoffs: {r['oom_backoffs']}",
        f"- codes per clip: {r['code_len']} (limit max_mel_tokens={r['limits'].get('max_mel_tokens')})",
        f"- text tokens per clip: {r['text_len']} (limit max_text_tokens={r['limits'].get('max_text_tokens')})",
    ]
    if r["rejected_by_reason"]:
        lines += ["", "| rejection reason | clips |", "|---|---:|"] + [
            f"| {k} | {v} |" for k, v in r["rejected_by_reason"].items()]
    return "\n".join(lines) + "\n"


def _plot_lengths(code_lens: Sequence[int], text_lens: Sequence[int], limits: dict[str, int], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5), dpi=100)
    for ax, values, limit, title in ((axes[0], code_lens, limits.get("max_mel_tokens"), "semantic codes per clip"),
                                     (axes[1], text_lens, limits.get("max_text_tokens"), "text tokens per clip")):
        ax.hist(values or [0], bins=30, color="#4C72B0")
        if limit:
            ax.axvline(limit, color="#C44E52", linestyle="--", label=f"model limit {limit}")
            ax.legend(fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.set_ylabel("clips")
    fig.tight_layout()
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png")
    plt.close(fig)


# ------------------------------------------------------------------------ the whole stage


def preprocess(
    clips: Sequence[Clip],
    bundle: ModelBundle,
    tokenizer_path: Path,
    frontend: Any,
    out_dir: Path,
    feature_root: Path | None = None,
    opts: PreprocessOptions = PreprocessOptions(),
    storage: Any | None = None,
    extract: Extract | None = None,
    on_backoff: Callable[[BackoffEvent], None] | None = None,
) -> PreprocessResult:
    """Plan, process every unit in this process, and assemble (the CLI's path; the flow parallelises units).

    Features go to ``feature_root/<feature set>/`` (default ``out_dir/features``); ``extract``
    replaces the models (tests inject faults through it).
    """
    from indextts_core.text.extend_bpe import check_frontend
    from indextts_core.text.tokenizer import load_sentencepiece

    started = time.monotonic()
    check_frontend(tokenizer_path, frontend.fingerprint())
    tokenizer = load_sentencepiece(tokenizer_path)
    root = Path(feature_root) if feature_root else Path(out_dir) / "features"
    p = plan(clips, tokenizer, frontend, bundle, root, opts, storage)
    device = opts.resolved_device()
    units: list[UnitResult] = []
    if p.units:
        extract = extract or FeatureExtractor(bundle, device, opts.cond_max_seconds)
        batch_seconds = opts.max_batch_seconds or _probe_on_longest(extract, p, opts, device, storage)
        from indextts_core.utils.progress import track

        for unit in track(p.units, description="preprocessing"):
            units.append(process_unit(unit, extract, p.feature_dir, opts, bundle.gpt_config.max_mel_tokens,
                                      batch_seconds, storage, on_backoff))
    ref = os.path.relpath(p.feature_dir, out_dir)
    return assemble(clips, p, read_units(p.feature_dir), Path(out_dir), tokenizer_path, frontend.fingerprint(), units,
                    ref, started, base_gpt_sha256=sha256_file(bundle.gpt_path))


def _probe_on_longest(extract: Extract, p: Plan, opts: PreprocessOptions, device: torch.device,
                      storage: Any) -> float:
    if device.type != "cuda":
        return CPU_BATCH_SECONDS
    uris = [uri for unit in p.units for _, uri in unit]
    longest = []
    for uri in uris[:64]:  # a sample is enough to find long clips; the probe uses the longest
        wave, _, _ = _decode(uri, opts, storage)
        if wave is not None:
            longest.append(wave)
    return probe_batch_seconds(extract, longest, device)


def iter_index(path: Path) -> Iterator[dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


