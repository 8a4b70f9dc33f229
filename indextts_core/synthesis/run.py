"""``synthesize``: lines of text -> 22.05 kHz wav files, from a checkpoint folder (an export or the release).

Prompts are read as infer_v2 reads them: decoded at 22.05 kHz and cut to 15 s, then resampled to
16 kHz for Wav2Vec2-BERT and CAMPPlus (an emotion prompt at 16 kHz, 15 s).  Each line goes through
the training front-end and the folder's tokenizer, is cut into infer_v2's segments (at most
``max_text_tokens_per_segment`` tokens), and each segment is spoken (:mod:`indextts_core.synthesis.chain`).
Outputs: one wav per line and ``synthesize.json`` (options, per-line segments, codes, stop, seconds
and real-time factor).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from indextts_core.config import GenerationConfig
from indextts_core.data.audio import load_audio
from indextts_core.errors import InputError
from indextts_core.model.bundle import ModelBundle
from indextts_core.synthesis.chain import SAMPLE_RATE, SynthesisModels, join_segments, prompt_state, speak_segment, \
    write_wav
from indextts_core.synthesis.segments import split_segments
from indextts_core.text.frontend import TextFrontend
from indextts_core.text.tokenizer import load_sentencepiece
from indextts_core.utils.fileio import sha256_file, write_json
from indextts_core.utils.progress import track

log = logging.getLogger(__name__)

PROMPT_MAX_S = 15.0


@dataclass(frozen=True)
class SynthesisResult:
    wavs: list[Path]
    audio_seconds: float
    seconds: float


def _prompt(path: Path, sample_rate: int) -> torch.Tensor:
    wave = load_audio(path, sample_rate, name=str(path)).samples[: int(PROMPT_MAX_S * sample_rate)]
    if len(wave) < sample_rate // 10:
        raise InputError(f"{path}: prompt is {len(wave) / sample_rate:.2f} s long (under 0.1 s); give a few seconds of speech")
    return torch.from_numpy(wave).float().unsqueeze(0)


def synthesize_lines(
    bundle: ModelBundle,
    lines: Sequence[str],
    language: str,
    speaker_prompt: Path,
    outputs: Sequence[Path],
    opts: GenerationConfig,
    *,
    emotion_prompt: Path | None = None,
    device: str | torch.device = "cpu",
    diffusion_steps: int = 25,
    cfg_rate: float = 0.7,
    interval_silence_ms: int = 200,
    max_text_tokens_per_segment: int = 120,
    report: Path | None = None,
) -> SynthesisResult:
    """Speak ``lines[i]`` into ``outputs[i]`` (wav) with the speaker prompt's voice."""
    import torchaudio

    if len(lines) != len(outputs):
        raise ValueError("one output path per line")
    device = torch.device(device)
    models = SynthesisModels.load(bundle, device)
    if opts.max_mel_tokens > models.gpt.cfg.max_mel_tokens and "max_mel_tokens" not in opts.model_fields_set:
        opts = opts.model_copy(update={"max_mel_tokens": models.gpt.cfg.max_mel_tokens})
    features = bundle.load_features(device)
    sp = load_sentencepiece(bundle.tokenizer_path)
    frontend = TextFrontend()
    start = time.monotonic()
    stream = torch.Generator(device=device).manual_seed(opts.seed)
    rows, wavs, audio_seconds = [], [], 0.0
    with torch.no_grad():
        wave_22k = _prompt(speaker_prompt, SAMPLE_RATE).to(device)
        wave_16k = torchaudio.transforms.Resample(SAMPLE_RATE, 16000).to(device)(wave_22k)
        spk_feats, _ = features.extract_padded([wave_16k[0].cpu().numpy()])
        emo_feats = None
        if emotion_prompt is not None:
            emo_feats, _ = features.extract_padded([_prompt(emotion_prompt, 16000)[0].numpy()])
        state = prompt_state(models, wave_22k, spk_feats)
        for n, (line, out) in enumerate(track(list(zip(lines, outputs)), description="synthesizing"), 1):
            ids = frontend.encode(sp, line, language)
            if not ids:
                raise InputError(f"line {n}: nothing to say after normalisation: {line!r}")
            pieces = split_segments([sp.IdToPiece(i) for i in ids], max_text_tokens_per_segment)
            pcms, codes, stopped = [], 0, True
            for piece_list in pieces:
                text = torch.tensor([[sp.PieceToId(p) for p in piece_list]], device=device)
                seg = speak_segment(models, state, text, opts, emo_feats=emo_feats, random=stream,
                                    diffusion_steps=diffusion_steps, cfg_rate=cfg_rate)
                pcms.append(seg.pcm)
                codes += int(seg.code_lens.sum())
                stopped &= seg.stopped
            pcm = join_segments(pcms, interval_silence_ms)
            wavs.append(write_wav(pcm, out))
            seconds = pcm.size(1) / SAMPLE_RATE
            audio_seconds += seconds
            rows.append({"line": n, "text": line, "wav": out.name, "segments": len(pieces), "codes": codes,
                         "stopped": stopped, "audio_s": round(seconds, 3)})
            if not stopped:
                log.warning("line %d: a segment did not stop within max_mel_tokens=%d", n, opts.max_mel_tokens)
    elapsed = time.monotonic() - start
    if report is not None:
        write_json(report, {
            "format": "indextts-synthesize/1", "model": {"folder": bundle.checkpoint_dir.name,
                                                         "gpt_sha256": sha256_file(bundle.gpt_path)},
            "speaker_prompt": speaker_prompt.name, "emotion_prompt": emotion_prompt.name if emotion_prompt else None,
            "options": opts.model_dump(mode="json") | {"diffusion_steps": diffusion_steps, "cfg_rate": cfg_rate,
                                                       "interval_silence_ms": interval_silence_ms},
            "device": str(device), "lines": rows, "audio_s": round(audio_seconds, 3), "seconds": round(elapsed, 3),
            "real_time_factor": round(elapsed / audio_seconds, 3) if audio_seconds else None,
        })
    return SynthesisResult(wavs, audio_seconds, elapsed)
