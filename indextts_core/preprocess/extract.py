"""Feature extraction: decode and gate audio, batch by length, and process one work unit into a shard."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from indextts_core.data.prompt_audio import speaker_path_16k
from indextts_core.errors import AudioDecodeError, InputError
from indextts_core.preprocess.planning import record_complete, unit_name
from indextts_core.preprocess.settings import (
    CPU_BATCH_SECONDS,
    SAMPLE_RATE,
    batch_clips,
    decode_workers,
    resolved_device,
)
from indextts_core.preprocess.shards import ClipFeatures, write_shard_hashed
from indextts_core.store.objects import ObjectNotFoundError, read_uri_bytes
from indextts_core.utils.fileio import read_json, write_json
from indextts_core.utils.oom import BackoffEvent, GpuOOM, is_oom, run_with_oom_backoff

if TYPE_CHECKING:
    from indextts_core.config import PreprocessConfig
    from indextts_core.model.bundle import ModelBundle

log = logging.getLogger(__name__)


class FeatureExtractor:
    """The models of a bundle on one device; turns 16 kHz waves into per-clip features.

    IndexTTS-2: speaker latents from the base GPT's conformer + perceiver over the clip's
    Wav2Vec2-BERT features, (32, D).  IndexTTS-2.5: the clip's CAMPPlus vector (80-bin Kaldi fbank
    of the 16 kHz prompt, mean-normalised, as ``infer_v2_5`` computes it) through the base GPT's
    ``spk_emb_proj``, (1, D); codes at 25 Hz from the stride-2 codec.  Prompts are cut to
    ``cond_max_seconds`` as inference cuts them.

    The waves are the clips' speaker-path readings (:func:`decode_clip_audio`); every clip keeps the frames
    it has alone (the half-padded last one included), so its codes and speaker conditioning are what
    infer_v2 computes for it as a prompt.  Two differences from infer_v2 remain, both small: the emotion
    vector comes from the same speaker-path features (infer_v2 reads the file again at 16 kHz for it),
    and a clip over ``cond_max_seconds`` is cut at 16 kHz (infer_v2 cuts at 22.05 kHz, then resamples).
    """

    def __init__(self, bundle: ModelBundle, device: torch.device, cond_max_seconds: float = 15.0):
        self.device = device
        self.features = bundle.load_features(device)
        self.codec = bundle.load_codec().to(device)
        self.gpt = bundle.load_gpt().to(device).eval()
        self.cond_max_samples = int(cond_max_seconds * SAMPLE_RATE)
        self.campplus = None
        if self.gpt.cfg.is_v25:
            from indextts_core.model.campplus import load_campplus

            if not bundle.campplus_path.is_file():
                raise InputError(f"{bundle.campplus_path}: CAMPPlus weights missing; an IndexTTS-2.5 base conditions "
                                 "on the CAMPPlus speaker vector: put campplus_cn_common.bin in the checkpoint's "
                                 "hf_cache/ (as `indextts-train download --output-dir` lays it out); preprocessing "
                                 "does not read a separate download.campplus asset yet")
            self.campplus = load_campplus(bundle.campplus_path, bundle.campplus_config).to(device)

    @torch.no_grad()
    def __call__(self, waves: Sequence[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """[(codes (T_i,), speaker latents (32, D) or 2.5's (1, D), emotion vector (D,))] per wave."""
        feats, lengths = self.features.extract_padded(waves)
        codes, _ = self.codec.quantize(feats, lengths)
        code_lengths = self.codec.code_lengths(lengths).tolist()
        cut = [w[: self.cond_max_samples] for w in waves]
        if any(len(w) > self.cond_max_samples for w in waves):  # prompts are cut as inference cuts them
            feats, lengths = self.features.extract_padded(cut)
        if self.campplus is not None:
            spk = self.gpt.speaker_projection(torch.cat([self.speaker_vector(w) for w in cut]))
        else:
            spk = self.gpt.speaker_latents(feats, lengths, exact_padding=True)
        emo = self.gpt.emotion_vector(feats, lengths, exact_padding=True)
        return [(codes[i, : int(code_lengths[i])].cpu().numpy(), spk[i].float().cpu().numpy(),
                 emo[i].float().cpu().numpy()) for i in range(len(waves))]

    def speaker_vector(self, wave: np.ndarray) -> torch.Tensor:
        """2.5: one clip's CAMPPlus vector (1, 192) from its 16 kHz wave (one at a time: no padding effects)."""
        from indextts_core.model.campplus import style_features

        assert self.campplus is not None
        feat = style_features(torch.from_numpy(np.ascontiguousarray(wave)).float()).to(self.device)
        return self.campplus(feat.unsqueeze(0))


Extract = Callable[[Sequence[np.ndarray]], list[tuple[np.ndarray, np.ndarray, np.ndarray]]]


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


def decode_clip_audio(uri: str, cfg: PreprocessConfig, storage: Any, *, min_duration_s: float, max_duration_s: float,
                      data: bytes | None = None) -> tuple[np.ndarray | None, str | None, str | None]:
    """Decode to 16 kHz and apply the audio gates: (wave, None, None) or (None, reason code, reason).

    The clip is read as the official inference reads a speaker prompt
    (:func:`~indextts_core.data.prompt_audio.speaker_path_16k`: 22.05 kHz by soxr, then 16 kHz).
    ``data``: the file's bytes when the caller already read them (else they are read from ``uri``)."""
    try:
        if data is None:
            data = read_uri_bytes(uri, storage)
        x = speaker_path_16k(data, name=uri)
    except (ObjectNotFoundError, FileNotFoundError):
        return None, "audio_missing", f"audio not found: {uri}"
    except AudioDecodeError as e:
        return None, "audio_decode", str(e)
    dur = len(x) / SAMPLE_RATE
    if dur < min_duration_s:
        return None, "too_short", f"{dur:.2f} s < min_duration_s={min_duration_s}"
    if dur > max_duration_s:
        return None, "too_long", f"{dur:.2f} s > max_duration_s={max_duration_s}"
    rms = float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))
    dbfs = 20 * np.log10(max(rms, 1e-12))
    if dbfs < cfg.silence_dbfs:
        return None, "silent", f"level {dbfs:.1f} dBFS < silence_dbfs={cfg.silence_dbfs}"
    clipped = float(np.mean(np.abs(x) >= 0.999))
    if clipped > cfg.max_clipped_share:
        return None, "clipped", (f"{clipped:.2%} of samples at full scale > "
                                 f"max_clipped_share={cfg.max_clipped_share:.2%}")
    return x, None, None


def length_batches(durations: Sequence[float], max_batch_seconds: float,
                   max_clips: int | None = None) -> list[list[int]]:
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


def process_unit(
    unit: Sequence[tuple[str, str]],
    extract: Extract,
    feature_dir: Path,
    cfg: PreprocessConfig,
    max_mel_tokens: int,
    batch_seconds: float,
    storage: Any | None = None,
    on_backoff: Callable[[BackoffEvent], None] | None = None,
    *,
    min_duration_s: float,
    max_duration_s: float,
) -> UnitResult:
    """Process one unit of (audio key, uri) pairs; writes its shard and, last, its record (with the shard's sha256).

    A unit whose record exists is done, unless its shard is gone (deleted as damaged): then it runs again.
    """
    start = time.monotonic()
    keys = [k for k, _ in unit]
    name = unit_name(keys)
    record_path = feature_dir / f"{name}.json"
    if record_path.is_file():  # finished by an earlier (interrupted) run
        record = read_json(record_path)
        if record_complete(record, feature_dir):
            return UnitResult(name, len(record["keys"]), record["rejects"], 0.0, 0.0, 0, 0, 0)
    rejected: dict[str, str] = {}
    waves: dict[str, np.ndarray] = {}

    def decode(key_uri: tuple[str, str]) -> tuple[np.ndarray | None, str | None, str | None]:
        return decode_clip_audio(key_uri[1], cfg, storage, min_duration_s=min_duration_s,
                                 max_duration_s=max_duration_s)

    with ThreadPoolExecutor(max_workers=decode_workers(cfg)) as pool:
        for (key, uri), (wave, code, reason) in zip(unit, pool.map(decode, unit)):
            if wave is None:
                rejected[key] = f"{code}: {reason}"
            else:
                waves[key] = wave
    ok_keys = [k for k in keys if k in waves]
    durations = [len(waves[k]) / SAMPLE_RATE for k in ok_keys]
    features: dict[str, ClipFeatures] = {}
    backoffs = 0
    max_clips = batch_clips(cfg)
    limit = max_clips

    def count(event: BackoffEvent) -> None:
        nonlocal backoffs
        backoffs += 1
        if on_backoff is not None:
            on_backoff(event)

    batches = length_batches(durations, batch_seconds, max_clips)
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
                    rejected[k] = (f"out_of_memory: does not fit on {resolved_device(cfg)} even alone "
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
    shard, digest = write_shard_hashed(feature_dir, stored) if stored else (None, None)
    record = {"unit": name, "shard": shard.name if shard else None, "shard_sha256": digest,
              "keys": [c.key for c in stored], "rejects": rejected,
              "lengths": {c.key: [len(c.codes), round(c.duration, 4)] for c in stored},
              "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
    write_json(record_path, record)  # last: the unit is now complete
    return UnitResult(name, len(stored), rejected, sum(durations), time.monotonic() - start, len(batches),
                      limit or 0, backoffs)
