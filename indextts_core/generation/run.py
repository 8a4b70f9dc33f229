"""``generate``: lines of text -> semantic codes and the s2mel latent, from a checkpoint folder.

The folder is an export of ours or the official release (``gpt.pth``, ``config.yaml``,
``bpe.model``, ``wav2vec2bert_stats.pt``); prompts are turned into conditioning as infer_v2 does
(16 kHz, the first 15 s, Wav2Vec2-BERT layer-17 features normalised with the folder's statistics).
Text goes through the same front-end and tokenizer as training.  Outputs in ``out_dir``:

* ``codes.jsonl``: one row per line: line number, text, language, text ids, codes (without the
  stop code), their count, whether the model stopped before ``max_mel_tokens``;
* ``latents.safetensors``: ``line<N>`` -> (codes, D) float32, the teacher-forced latent over the
  generated codes that s2mel consumes (infer_v2's second GPT pass);
* ``generate.json``: the options, the model files' sha256, timings and codes per second.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file

from indextts_core.config import GenerationConfig
from indextts_core.data.audio import load_audio
from indextts_core.errors import InputError
from indextts_core.generation.decode import decode, item_generators
from indextts_core.generation.prompt import build_prompt, conditioning_from_features
from indextts_core.model.bundle import ModelBundle
from indextts_core.model.unified_voice import UnifiedVoice
from indextts_core.text.frontend import TextFrontend
from indextts_core.text.tokenizer import load_sentencepiece
from indextts_core.utils.fileio import atomic_path, sha256_file, write_json, write_jsonl
from indextts_core.utils.progress import track

log = logging.getLogger(__name__)

#: infer_v2 resamples prompts to 16 kHz for Wav2Vec2-BERT and keeps their first 15 s.
PROMPT_SR, PROMPT_MAX_S = 16000, 15.0
#: Lines decoded together.
BATCH = 8


@dataclass(frozen=True)
class GenerateResult:
    output_dir: Path
    lines: int
    stopped: int
    codes: int
    seconds: float


def prompt_features(bundle: ModelBundle, features, path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised Wav2Vec2-BERT features (1, T, 1024) and length of one prompt file."""
    wave = load_audio(path, PROMPT_SR, name=str(path)).samples[: int(PROMPT_MAX_S * PROMPT_SR)]
    if len(wave) < PROMPT_SR // 10:
        raise InputError(f"{path}: prompt is {len(wave) / PROMPT_SR:.2f} s long (under 0.1 s); give a few seconds of speech")
    return features.extract_padded([wave])


def tokenize_lines(sp, frontend: TextFrontend, lines: Sequence[str], language: str, max_text_tokens: int,
                   where: str) -> list[list[int]]:
    """Token ids of each line, as training tokenized its transcripts; too long or empty lines are named."""
    ids, problems = [], []
    for n, line in enumerate(lines, 1):
        tokens = frontend.encode(sp, line, language)
        if not tokens:
            problems.append(f"{where}:{n}: nothing to say after normalisation")
        elif len(tokens) > max_text_tokens:
            problems.append(f"{where}:{n}: {len(tokens)} text tokens, above the model's max_text_tokens="
                            f"{max_text_tokens} (split the line)")
        ids.append(tokens)
    if problems:
        raise InputError("; ".join(problems))
    return ids


def generate_lines(
    bundle: ModelBundle,
    lines: Sequence[str],
    language: str,
    speaker_prompt: Path,
    out_dir: Path,
    opts: GenerationConfig,
    *,
    emotion_prompt: Path | None = None,
    device: str | torch.device = "cpu",
    where: str = "--text",
) -> GenerateResult:
    """Decode every line with the speaker (and emotion) prompt; write codes and latents to ``out_dir``."""
    device = torch.device(device)
    model: UnifiedVoice = bundle.load_gpt().to(device).eval()
    sp = load_sentencepiece(bundle.tokenizer_path)
    ids = tokenize_lines(sp, TextFrontend(), lines, language, model.cfg.max_text_tokens, where)
    if opts.max_mel_tokens > model.cfg.max_mel_tokens and "max_mel_tokens" not in opts.model_fields_set:
        log.info("generation.max_mel_tokens: using the model's limit %d", model.cfg.max_mel_tokens)
        opts = opts.model_copy(update={"max_mel_tokens": model.cfg.max_mel_tokens})
    if opts.max_mel_tokens > model.cfg.max_mel_tokens:
        raise InputError(f"generation.max_mel_tokens={opts.max_mel_tokens} is above the model's max_mel_tokens="
                         f"{model.cfg.max_mel_tokens} ({bundle.checkpoint_dir / 'config.yaml'})")
    features = bundle.load_features(device)
    start = time.monotonic()
    with torch.no_grad():
        spk_feats, spk_len = prompt_features(bundle, features, speaker_prompt)
        emo_feats, emo_len = prompt_features(bundle, features, emotion_prompt) if emotion_prompt else (None, None)
        spk, emo = conditioning_from_features(model, spk_feats, spk_len, emo_feats, emo_len, opts.emo_alpha)
        rows, latents = [], {}
        for at in track(range(0, len(ids), BATCH), total=(len(ids) + BATCH - 1) // BATCH, description="generating"):
            chunk = ids[at:at + BATCH]
            text = torch.nn.utils.rnn.pad_sequence([torch.tensor(t) for t in chunk], batch_first=True,
                                                   padding_value=model.cfg.stop_text_token).to(device)
            conds = model.conditioning(spk, emo)
            random = item_generators(opts.seed + at, len(chunk)) if opts.batch_exact \
                else torch.Generator().manual_seed(opts.seed + at)
            out = decode(model, build_prompt(model, conds, text), opts, random=random)
            for j, tokens in enumerate(chunk):
                n = at + j + 1
                codes = out.item(j)
                t = torch.tensor([tokens], device=device)
                latent = model.gpt_latent(spk, emo, t, torch.tensor([len(tokens)]), codes[None],
                                          torch.tensor([len(codes)]))
                latents[f"line{n}"] = latent[0].float().cpu().contiguous()
                rows.append({"line": n, "text": lines[n - 1], "language": language, "text_ids": tokens,
                             "codes": codes.tolist(), "code_len": len(codes), "stopped": bool(out.stopped[j])})
    seconds = time.monotonic() - start
    out_dir.mkdir(parents=True, exist_ok=True)
    write_jsonl(out_dir / "codes.jsonl", rows)
    with atomic_path(out_dir / "latents.safetensors") as tmp:
        save_file(latents, tmp)
    total = sum(r["code_len"] for r in rows)
    stopped = sum(r["stopped"] for r in rows)
    write_json(out_dir / "generate.json", {
        "format": "indextts-generate/1", "model": {"folder": bundle.checkpoint_dir.name,
                                                   "gpt_sha256": sha256_file(bundle.gpt_path),
                                                   "tokenizer_sha256": sha256_file(bundle.tokenizer_path)},
        "speaker_prompt": speaker_prompt.name, "emotion_prompt": emotion_prompt.name if emotion_prompt else None,
        "options": opts.model_dump(mode="json"), "device": str(device), "lines": len(rows), "stopped": stopped,
        "codes": total, "seconds": round(seconds, 3), "codes_per_s": round(total / seconds, 1) if seconds else None,
    })
    if stopped < len(rows):
        log.warning("%d of %d lines did not stop within max_mel_tokens=%d", len(rows) - stopped, len(rows),
                    opts.max_mel_tokens)
    return GenerateResult(out_dir, len(rows), stopped, total, seconds)

