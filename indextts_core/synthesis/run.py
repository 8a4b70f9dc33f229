"""``synthesize``: lines of text -> 22.05 kHz wav files, from a checkpoint folder (an export or the release).

Prompts are read as infer_v2 reads them (:mod:`indextts_core.data.prompt_audio`): the speaker prompt
at 22.05 kHz (librosa's soxr), cut to 15 s, then resampled to 16 kHz (torchaudio) for Wav2Vec2-BERT and
CAMPPlus; the emotion prompt (the speaker prompt read again when none is given) at 16 kHz, 15 s.  Each line is cut into
segments and each segment is spoken (:mod:`indextts_core.synthesis.chain`):

* IndexTTS-2: the training front-end and the folder's SentencePiece tokenizer, then infer_v2's
  segments (at most ``max_text_tokens_per_segment`` tokens,
  :func:`~indextts_core.synthesis.segments.split_segments`);
* IndexTTS-2.5: the line is normalised as ``infer_v2_5`` does
  (:class:`~indextts_core.text.encoder.TiktokenText`), cut by
  :func:`~indextts_core.synthesis.segments.split_v25_text` into segments of at most
  ``max_text_tokens_per_segment`` tiktoken tokens minus the ``<|code|> `` prefix's, and each segment
  is framed ``"<|code|> " + segment``;
  every segment carries the language's ``lang_embedding`` row.  ``code`` is the line's own
  language, or ``lang_code`` when given (e.g. ``ar`` for Amharic text, see
  :func:`~indextts_core.text.encoder.language_choice`).

The segment budget (``max_text_tokens_per_segment``), when not given, is resolved per line's language
(:func:`~indextts_core.synthesis.budget.resolve_segment_budget`): ``generation.max_text_tokens_per_segment``
when set, else the folder's measured text tokens per second (``indextts-export.json``: ``segments``) times
``generation.max_segment_s``, else infer_v2's 120.

Outputs: one wav per line and ``synthesize.json`` (options, per-line segments, the segment budget and
its source, codes, stop, seconds and real-time factor; for 2.5 also the language code and each line's
language row).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from indextts_core.config import GenerationConfig
from indextts_core.data.prompt_audio import read_emotion_prompt, read_speaker_prompt
from indextts_core.errors import InputError
from indextts_core.model.bundle import ModelBundle
from indextts_core.model.unified_voice import UnifiedVoice
from indextts_core.synthesis.budget import resolve_segment_budget
from indextts_core.synthesis.chain import SAMPLE_RATE, PromptState, SynthesisModels, join_segments, \
    official_stream, prompt_state, speak_segment, write_wav
from indextts_core.synthesis.segments import split_segments, v25_segments
from indextts_core.text.encoder import SentencePieceText, TiktokenText, open_text_encoder
from indextts_core.utils.fileio import sha256_file, write_json
from indextts_core.utils.progress import track

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class SynthesisResult:
    wavs: list[Path]
    audio_seconds: float
    seconds: float


@dataclass
class Spoken:
    pcm: torch.Tensor  # (1, N) int16 scale at 22.05 kHz
    segments: int
    codes: int
    stopped: bool
    lang: int | None = None  # 2.5: the lang_embedding row the line was spoken with
    budget: int | None = None  # the most text tokens per segment the line was cut with

    @property
    def seconds(self) -> float:
        return self.pcm.size(1) / SAMPLE_RATE


class Synthesizer:
    """A checkpoint folder's models, loaded once, speaking lines in the voice of any prompt."""

    def __init__(self, bundle: ModelBundle, opts: GenerationConfig, *, device: str | torch.device = "cpu",
                 diffusion_steps: int = 25, cfg_rate: float = 0.7, interval_silence_ms: int = 200,
                 max_text_tokens_per_segment: int | None = None, gpt: UnifiedVoice | None = None,
                 tokenizer: Path | None = None, lang_code: str | None = None):
        """``gpt`` / ``tokenizer``: speak with these instead of the folder's (the model being trained).

        ``max_text_tokens_per_segment``: the segment budget for every line; None: resolved per language
        (:meth:`segment_budget`).

        ``lang_code`` (2.5 only): the official ``lang`` code every line is spoken with (its
        ``<|code|>`` prefix and language row), instead of each line's own language.
        """
        v25 = bundle.is_v25 or (gpt is not None and gpt.cfg.is_v25)
        if lang_code is not None and not v25:
            raise InputError(f"lang_code={lang_code!r}: language codes are IndexTTS-2.5's; "
                             f"{bundle.checkpoint_dir} is an IndexTTS-2 folder")
        self.bundle, self.device = bundle, torch.device(device)
        self.models = SynthesisModels.load(bundle, self.device, gpt=gpt)
        if opts.max_mel_tokens > self.models.gpt.cfg.max_mel_tokens and "max_mel_tokens" not in opts.model_fields_set:
            opts = opts.model_copy(update={"max_mel_tokens": self.models.gpt.cfg.max_mel_tokens})
        self.opts = opts
        self.features = bundle.load_features(self.device)
        self.text: SentencePieceText | TiktokenText = open_text_encoder(tokenizer or bundle.tokenizer_path, v25,
                                                                       force_code=lang_code)
        self.diffusion_steps, self.cfg_rate = diffusion_steps, cfg_rate
        self.interval_silence_ms, self.max_text_tokens_per_segment = interval_silence_ms, max_text_tokens_per_segment
        self._budgets: dict[str, tuple[int, str]] = {}

    def segment_budget(self, language: str) -> tuple[int, str]:
        """The most text tokens per segment for ``language``'s lines, and where that number came from
        (``"given"``, or :func:`~indextts_core.synthesis.budget.resolve_segment_budget`'s source), once per language.

        A budget over the GPT's text positions (``max_text_tokens``: a segment and its start/stop
        tokens must fit) is capped there, and the source says so.
        """
        if language not in self._budgets:
            if self.max_text_tokens_per_segment is not None:
                budget, source = int(self.max_text_tokens_per_segment), "given"
            else:
                budget, source = resolve_segment_budget(self.bundle.checkpoint_dir, language, self.opts)
            limit = self.models.gpt.cfg.text_positions - 2
            if budget > limit:
                budget, source = limit, f"{source}; capped at the GPT's {limit} text positions"
            self._budgets[language] = (budget, source)
            log.info("segment budget (%s): %d text tokens (%s)", language, budget, source)
        return self._budgets[language]

    @property
    def is_v25(self) -> bool:
        return self.models.gpt.cfg.is_v25

    @property
    def lang_code(self) -> str | None:
        """2.5: the code every line is spoken with (given, or recorded with the tokenizer); None: each line's own."""
        if not isinstance(self.text, TiktokenText):
            return None
        return self.text.force_code or (self.text.choice.code if self.text.choice else None)

    @torch.no_grad()
    def prompt(self, source: Path | str | bytes, name: str | None = None) -> PromptState:
        """The speaker prompt's state (audio file or its bytes), read as infer_v2 reads it: the speaker path
        and, for lines spoken without an emotion prompt, the same file read again on the emotion path."""
        label = name or str(source)
        spk = read_speaker_prompt(source, label)
        spk_feats, _ = self.features.extract_padded([spk.wave_16k[0].numpy()])
        return prompt_state(self.models, spk.wave_22k.to(self.device), spk_feats, wave_16k=spk.wave_16k.to(self.device),
                            emo_feats=self.emotion(source, label, warn=False))

    @torch.no_grad()
    def emotion(self, source: Path | str | bytes, name: str | None = None, warn: bool = True) -> torch.Tensor:
        """Wav2Vec2-BERT features of an emotion prompt (read directly at 16 kHz, 15 s)."""
        wave = read_emotion_prompt(source, name or str(source), warn=warn)
        feats, _ = self.features.extract_padded([wave[0].numpy()])
        return feats

    def segments(self, line: str, language: str, where: str = "line") -> tuple[list[list[int]], int | None]:
        """The line's segments as text ids, and its language row (None for 2.0); an empty line is an InputError."""
        if isinstance(self.text, TiktokenText):
            try:
                ids, lang, dropped = v25_segments(self.text, line, language, self.segment_budget(language)[0],
                                                  self.models.gpt.cfg.text_positions)
            except InputError as e:
                raise InputError(f"{where}: {e}") from None
            if dropped:
                log.warning("%s: the GPT drops %s (text ids 0/1, as the official inference does)", where,
                            " ".join(repr(p) for p in dropped))
            return ids, lang
        sp = self.text.sp
        ids = self.text.frontend.encode(sp, line, language)
        if not ids:
            raise InputError(f"{where}: nothing to say after normalisation: {line!r}")
        pieces = split_segments([sp.IdToPiece(i) for i in ids], self.segment_budget(language)[0])
        return [[sp.PieceToId(p) for p in piece_list] for piece_list in pieces], None

    @torch.no_grad()
    def speak(self, line: str, language: str, state: PromptState, random: torch.Generator, *,
              emo_feats: torch.Tensor | None = None, max_mel_tokens: int | None = None, where: str = "line") -> Spoken:
        """One line: front-end and tokenizer, the release's segments, each spoken, joined with silence."""
        segments, lang = self.segments(line, language, where)
        opts = self.opts if max_mel_tokens is None else self.opts.model_copy(
            update={"max_mel_tokens": min(max_mel_tokens, self.opts.max_mel_tokens)})
        langs = torch.tensor([lang], device=self.device) if lang is not None else None
        pcms, codes, stopped = [], 0, True
        for ids in segments:
            text = torch.tensor([ids], device=self.device)
            seg = speak_segment(self.models, state, text, opts, emo_feats=emo_feats, random=random,
                                diffusion_steps=self.diffusion_steps, cfg_rate=self.cfg_rate, langs=langs)
            pcms.append(seg.pcm)
            codes += int(seg.code_lens.sum())
            stopped &= seg.stopped
        return Spoken(join_segments(pcms, self.interval_silence_ms), len(segments), codes, stopped, lang,
                      self.segment_budget(language)[0])


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
    max_text_tokens_per_segment: int | None = None,
    report: Path | None = None,
    lang_code: str | None = None,
) -> SynthesisResult:
    """Speak ``lines[i]`` into ``outputs[i]`` (wav) with the speaker prompt's voice.

    ``lang_code``: 2.5 only, the official language code to speak every line with (see :class:`Synthesizer`).
    ``max_text_tokens_per_segment``: the segment budget; None: resolved for ``language`` (see
    :meth:`Synthesizer.segment_budget`); the budget and its source go into the report's options and rows.
    """
    if len(lines) != len(outputs):
        raise ValueError("one output path per line")
    synth = Synthesizer(bundle, opts, device=device, diffusion_steps=diffusion_steps, cfg_rate=cfg_rate,
                        interval_silence_ms=interval_silence_ms,
                        max_text_tokens_per_segment=max_text_tokens_per_segment, lang_code=lang_code)
    opts = synth.opts
    start = time.monotonic()
    stream = official_stream(torch.Generator(device=synth.device).manual_seed(opts.seed),
                             synth.features.model.config.num_hidden_layers)
    rows, wavs, audio_seconds = [], [], 0.0
    state = synth.prompt(speaker_prompt)
    emo_feats = synth.emotion(emotion_prompt) if emotion_prompt is not None else None
    for n, (line, out) in enumerate(track(list(zip(lines, outputs)), description="synthesizing"), 1):
        spoken = synth.speak(line, language, state, stream, emo_feats=emo_feats, where=f"line {n}")
        wavs.append(write_wav(spoken.pcm, out))
        audio_seconds += spoken.seconds
        rows.append({"line": n, "text": line, "wav": out.name, "segments": spoken.segments,
                     "segment_budget": spoken.budget, "codes": spoken.codes,
                     "stopped": spoken.stopped, "audio_s": round(spoken.seconds, 3)}
                    | ({"lang": spoken.lang} if spoken.lang is not None else {}))
        if not spoken.stopped:
            log.warning("line %d: a segment did not stop within max_mel_tokens=%d", n, opts.max_mel_tokens)
    elapsed = time.monotonic() - start
    if report is not None:
        extra = {"lang_code": synth.lang_code} if synth.is_v25 else {}
        budget, source = synth.segment_budget(language)
        options = opts.model_dump(mode="json") | {
            "diffusion_steps": diffusion_steps, "cfg_rate": cfg_rate, "interval_silence_ms": interval_silence_ms,
            "segment_budget": budget, "segment_budget_source": source} | extra
        write_json(report, {
            "format": "indextts-synthesize/1", "model": {"folder": bundle.checkpoint_dir.name,
                                                         "gpt_sha256": sha256_file(bundle.gpt_path)},
            "speaker_prompt": speaker_prompt.name, "emotion_prompt": emotion_prompt.name if emotion_prompt else None,
            "options": options, "device": str(synth.device), "lines": rows, "audio_s": round(audio_seconds, 3),
            "seconds": round(elapsed, 3),
            "real_time_factor": round(elapsed / audio_seconds, 3) if audio_seconds else None,
        })
    return SynthesisResult(wavs, audio_seconds, elapsed)
