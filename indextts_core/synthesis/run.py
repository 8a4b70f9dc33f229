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
from indextts_core.model.unified_voice import UnifiedVoice
from indextts_core.synthesis.chain import SAMPLE_RATE, PromptState, SynthesisModels, join_segments, prompt_state, \
    speak_segment, write_wav
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


def _prompt(source: Path | str | bytes, sample_rate: int, name: str) -> torch.Tensor:
    wave = load_audio(source, sample_rate, name=name).samples[: int(PROMPT_MAX_S * sample_rate)]
    if len(wave) < sample_rate // 10:
        raise InputError(f"{name}: prompt is {len(wave) / sample_rate:.2f} s long (under 0.1 s); give a few seconds of speech")
    return torch.from_numpy(wave).float().unsqueeze(0)


@dataclass
class Spoken:
    pcm: torch.Tensor  # (1, N) int16 scale at 22.05 kHz
    segments: int
    codes: int
    stopped: bool

    @property
    def seconds(self) -> float:
        return self.pcm.size(1) / SAMPLE_RATE


class Synthesizer:
    """A checkpoint folder's models, loaded once, speaking lines in the voice of any prompt."""

    def __init__(self, bundle: ModelBundle, opts: GenerationConfig, *, device: str | torch.device = "cpu",
                 diffusion_steps: int = 25, cfg_rate: float = 0.7, interval_silence_ms: int = 200,
                 max_text_tokens_per_segment: int = 120, gpt: UnifiedVoice | None = None,
                 tokenizer: Path | None = None):
        """``gpt`` / ``tokenizer``: speak with these instead of the folder's (the model being trained)."""
        self.bundle, self.device = bundle, torch.device(device)
        self.models = SynthesisModels.load(bundle, self.device, gpt=gpt)
        if opts.max_mel_tokens > self.models.gpt.cfg.max_mel_tokens and "max_mel_tokens" not in opts.model_fields_set:
            opts = opts.model_copy(update={"max_mel_tokens": self.models.gpt.cfg.max_mel_tokens})
        self.opts = opts
        self.features = bundle.load_features(self.device)
        self.sp = load_sentencepiece(tokenizer or bundle.tokenizer_path)
        self.frontend = TextFrontend()
        self.diffusion_steps, self.cfg_rate = diffusion_steps, cfg_rate
        self.interval_silence_ms, self.max_text_tokens_per_segment = interval_silence_ms, max_text_tokens_per_segment

    @torch.no_grad()
    def prompt(self, source: Path | str | bytes, name: str | None = None) -> PromptState:
        """The speaker prompt's state (audio file or its bytes), read as infer_v2 reads it."""
        import torchaudio

        wave_22k = _prompt(source, SAMPLE_RATE, name or str(source)).to(self.device)
        wave_16k = torchaudio.transforms.Resample(SAMPLE_RATE, 16000).to(self.device)(wave_22k)
        spk_feats, _ = self.features.extract_padded([wave_16k[0].cpu().numpy()])
        return prompt_state(self.models, wave_22k, spk_feats)

    @torch.no_grad()
    def emotion(self, source: Path | str | bytes, name: str | None = None) -> torch.Tensor:
        """Wav2Vec2-BERT features of an emotion prompt (16 kHz, 15 s)."""
        feats, _ = self.features.extract_padded([_prompt(source, 16000, name or str(source))[0].numpy()])
        return feats

    @torch.no_grad()
    def speak(self, line: str, language: str, state: PromptState, random: torch.Generator, *,
              emo_feats: torch.Tensor | None = None, max_mel_tokens: int | None = None, where: str = "line") -> Spoken:
        """One line: front-end and tokenizer, infer_v2's segments, each spoken, joined with silence."""
        ids = self.frontend.encode(self.sp, line, language)
        if not ids:
            raise InputError(f"{where}: nothing to say after normalisation: {line!r}")
        opts = self.opts if max_mel_tokens is None else self.opts.model_copy(
            update={"max_mel_tokens": min(max_mel_tokens, self.opts.max_mel_tokens)})
        pieces = split_segments([self.sp.IdToPiece(i) for i in ids], self.max_text_tokens_per_segment)
        pcms, codes, stopped = [], 0, True
        for piece_list in pieces:
            text = torch.tensor([[self.sp.PieceToId(p) for p in piece_list]], device=self.device)
            seg = speak_segment(self.models, state, text, opts, emo_feats=emo_feats, random=random,
                                diffusion_steps=self.diffusion_steps, cfg_rate=self.cfg_rate)
            pcms.append(seg.pcm)
            codes += int(seg.code_lens.sum())
            stopped &= seg.stopped
        return Spoken(join_segments(pcms, self.interval_silence_ms), len(pieces), codes, stopped)


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
    if len(lines) != len(outputs):
        raise ValueError("one output path per line")
    synth = Synthesizer(bundle, opts, device=device, diffusion_steps=diffusion_steps, cfg_rate=cfg_rate,
                        interval_silence_ms=interval_silence_ms,
                        max_text_tokens_per_segment=max_text_tokens_per_segment)
    opts = synth.opts
    start = time.monotonic()
    stream = torch.Generator(device=synth.device).manual_seed(opts.seed)
    rows, wavs, audio_seconds = [], [], 0.0
    state = synth.prompt(speaker_prompt)
    emo_feats = synth.emotion(emotion_prompt) if emotion_prompt is not None else None
    for n, (line, out) in enumerate(track(list(zip(lines, outputs)), description="synthesizing"), 1):
        spoken = synth.speak(line, language, state, stream, emo_feats=emo_feats, where=f"line {n}")
        wavs.append(write_wav(spoken.pcm, out))
        audio_seconds += spoken.seconds
        rows.append({"line": n, "text": line, "wav": out.name, "segments": spoken.segments, "codes": spoken.codes,
                     "stopped": spoken.stopped, "audio_s": round(spoken.seconds, 3)})
        if not spoken.stopped:
            log.warning("line %d: a segment did not stop within max_mel_tokens=%d", n, opts.max_mel_tokens)
    elapsed = time.monotonic() - start
    if report is not None:
        write_json(report, {
            "format": "indextts-synthesize/1", "model": {"folder": bundle.checkpoint_dir.name,
                                                         "gpt_sha256": sha256_file(bundle.gpt_path)},
            "speaker_prompt": speaker_prompt.name, "emotion_prompt": emotion_prompt.name if emotion_prompt else None,
            "options": opts.model_dump(mode="json") | {"diffusion_steps": diffusion_steps, "cfg_rate": cfg_rate,
                                                       "interval_silence_ms": interval_silence_ms},
            "device": str(synth.device), "lines": rows, "audio_s": round(audio_seconds, 3), "seconds": round(elapsed, 3),
            "real_time_factor": round(elapsed / audio_seconds, 3) if audio_seconds else None,
        })
    return SynthesisResult(wavs, audio_seconds, elapsed)
