"""``generate``: lines of text -> semantic codes and the s2mel latent, from a checkpoint folder.

The folder is an export of ours or the official release (``gpt.pth``, ``config.yaml``, the
tokenizer, ``wav2vec2bert_stats.pt``); prompts are read and turned into conditioning as the official
inference does (:mod:`indextts_core.data.prompt_audio`: the speaker prompt at 22.05 kHz, first 15 s,
resampled to 16 kHz; the emotion prompt at 16 kHz; Wav2Vec2-BERT layer-17 features normalised with the
folder's statistics).  Text goes through the same encoder as training
(:func:`~indextts_core.text.encoder.open_text_encoder`).

* IndexTTS-2: speaker latents from the speaker prompt's features;
* IndexTTS-2.5: the speaker row is ``speaker_projection`` of the prompt's CAMPPlus vector, computed
  as the synthesis chain computes its style (:func:`~indextts_core.model.campplus.campplus_style`:
  22.05 kHz, first 15 s, resampled to 16 kHz, mean-normalised Kaldi fbank; the folder's
  ``campplus_cn_common.bin``), and each line's ``lang_embedding`` row is added to its text
  positions (the line's own language, or ``lang_code``).

The emotion vector is the same for both: the speaker prompt's, merged with the emotion prompt's
by ``emo_alpha``; without an emotion prompt, the speaker prompt read again on the emotion path with
``emo_alpha`` 1.0, as infer_v2 does.  Outputs in ``out_dir``:

* ``codes.jsonl``: one row per line: line number, text, language, text ids (2.5: the framed ids,
  ``<|code|> `` prefix included), codes (without the stop code), their count, whether the model
  stopped before ``max_mel_tokens`` (2.5: also ``lang``, the language row);
* ``latents.safetensors``: ``line<N>`` -> (codes, D) float32, the teacher-forced latent over the
  generated codes (infer_v2's second GPT pass, which its s2mel consumes; 2.5's s2mel does not use
  it, it is computed the same way, language rows included);
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
from indextts_core.data.prompt_audio import read_emotion_prompt, read_speaker_prompt
from indextts_core.errors import InputError
from indextts_core.generation.decode import decode, item_generators
from indextts_core.generation.prompt import build_prompt, conditioning_from_features, merge_emotion_vectors
from indextts_core.model.bundle import ModelBundle
from indextts_core.model.unified_voice import UnifiedVoice
from indextts_core.text.encoder import EncodedLine, TextEncoder, TiktokenText, open_text_encoder
from indextts_core.utils.fileio import atomic_path, sha256_file, write_json, write_jsonl
from indextts_core.utils.progress import track

log = logging.getLogger(__name__)

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
    """Normalised Wav2Vec2-BERT features (1, T, 1024) and length of a speaker prompt file, read on the official
    speaker path (22.05 kHz, then 16 kHz: :func:`~indextts_core.data.prompt_audio.read_speaker_prompt`)."""
    return features.extract_padded([read_speaker_prompt(path, str(path)).wave_16k[0].numpy()])


def emotion_features(features, path: Path, warn: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """The same for an emotion prompt, read on the official emotion path (16 kHz directly); ``warn=False`` when
    it is the speaker prompt read again (its problems were said already)."""
    return features.extract_padded([read_emotion_prompt(path, str(path), warn=warn)[0].numpy()])


def encode_lines(encoder: TextEncoder, lines: Sequence[str], language: str, max_text_tokens: int,
                 where: str) -> list[EncodedLine]:
    """Each line encoded as training encoded its transcripts; too long or empty lines are named (InputError)."""
    encoded, problems = [], []
    for n, line in enumerate(lines, 1):
        item = encoder.encode(line, language)
        if not item.ids:
            problems.append(f"{where}:{n}: nothing to say after normalisation")
        elif len(item.ids) > max_text_tokens:
            problems.append(f"{where}:{n}: {len(item.ids)} text tokens, above the model's max_text_tokens="
                            f"{max_text_tokens} (split the line)")
        encoded.append(item)
    if problems:
        raise InputError("; ".join(problems))
    return encoded


def prompt_campplus(bundle: ModelBundle, path: Path, device: torch.device) -> torch.Tensor:
    """The (1, 192) CAMPPlus vector of a prompt file, as the synthesis chain computes its style."""
    from indextts_core.model.campplus import campplus_style, load_campplus

    if not bundle.campplus_path.is_file():
        raise InputError(f"{bundle.campplus_path}: CAMPPlus weights missing (IndexTTS-2.5's speaker conditioning is "
                         "the prompt's CAMPPlus vector: the folder's hf_cache/campplus_cn_common.bin, or --hf-cache)")
    campplus = load_campplus(bundle.campplus_path, bundle.campplus_config).to(device)
    wave_16k = read_speaker_prompt(path, str(path), warn=False).wave_16k
    style, _ = campplus_style(campplus, wave_16k.to(device))
    return style


def v25_conditioning(model: UnifiedVoice, campplus: torch.Tensor, spk_feats: torch.Tensor, spk_len: torch.Tensor,
                     emo_feats: torch.Tensor | None, emo_len: torch.Tensor | None,
                     emo_alpha: float) -> tuple[torch.Tensor, torch.Tensor]:
    """2.5's (speaker row (1, 1, D), emotion vector (1, D)): ``speaker_projection(campplus)``, and the emotion
    vector as 2.0's :func:`~indextts_core.generation.prompt.conditioning_from_features` merges it (exact lengths)."""
    base = model.emotion_vector(spk_feats, spk_len, exact_padding=True)
    emo = base if emo_feats is None else merge_emotion_vectors(
        base, model.emotion_vector(emo_feats, emo_len, exact_padding=True), emo_alpha)
    return model.speaker_projection(campplus), emo


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
    lang_code: str | None = None,
) -> GenerateResult:
    """Decode every line with the speaker (and emotion) prompt; write codes and latents to ``out_dir``.

    ``lang_code`` (2.5 only): the official language code every line is said with (its ``<|code|>``
    prefix and language row) instead of ``language`` (e.g. ``ar`` for Amharic text).
    """
    device = torch.device(device)
    model: UnifiedVoice = bundle.load_gpt().to(device).eval()
    v25 = model.cfg.is_v25
    if lang_code is not None and not v25:
        raise InputError(f"lang_code={lang_code!r}: language codes are IndexTTS-2.5's; {bundle.checkpoint_dir} is "
                         "an IndexTTS-2 folder")
    encoder = open_text_encoder(bundle.tokenizer_path, v25, force_code=lang_code)
    encoded = encode_lines(encoder, lines, language, model.cfg.max_text_tokens, where)
    code = encoder.code_for(language) if isinstance(encoder, TiktokenText) else None
    ids = [item.ids for item in encoded]
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
        # infer_v2: without an emotion prompt the speaker prompt is read again (16 kHz) and emo_alpha is 1.0
        emo_feats, emo_len = emotion_features(features, emotion_prompt or speaker_prompt, warn=bool(emotion_prompt))
        alpha = opts.emo_alpha if emotion_prompt else 1.0
        if v25:
            spk, emo = v25_conditioning(model, prompt_campplus(bundle, speaker_prompt, device), spk_feats, spk_len,
                                        emo_feats, emo_len, alpha)
        else:
            spk, emo = conditioning_from_features(model, spk_feats, spk_len, emo_feats, emo_len, alpha)
        rows, latents = [], {}
        for at in track(range(0, len(ids), BATCH), total=(len(ids) + BATCH - 1) // BATCH, description="generating"):
            chunk = ids[at:at + BATCH]
            text = torch.nn.utils.rnn.pad_sequence([torch.tensor(t) for t in chunk], batch_first=True,
                                                   padding_value=model.cfg.stop_text_token).to(device)
            conds = model.conditioning(spk, emo)
            langs = torch.tensor([e.lang for e in encoded[at:at + BATCH]], device=device) if v25 else None
            random = item_generators(opts.seed + at, len(chunk)) if opts.batch_exact \
                else torch.Generator().manual_seed(opts.seed + at)
            out = decode(model, build_prompt(model, conds, text, langs=langs), opts, random=random)
            for j, tokens in enumerate(chunk):
                n = at + j + 1
                codes = out.item(j)
                t = torch.tensor([tokens], device=device)
                latent = model.gpt_latent(spk, emo, t, torch.tensor([len(tokens)]), codes[None],
                                          torch.tensor([len(codes)]), langs=langs[j:j + 1] if v25 else None)
                latents[f"line{n}"] = latent[0].float().cpu().contiguous()
                rows.append({"line": n, "text": lines[n - 1], "language": language, "text_ids": tokens,
                             "codes": codes.tolist(), "code_len": len(codes), "stopped": bool(out.stopped[j])}
                            | ({"lang": encoded[n - 1].lang} if v25 else {}))
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
        "options": opts.model_dump(mode="json") | ({"lang_code": code} if v25 else {}), "device": str(device),
        "lines": len(rows), "stopped": stopped,
        "codes": total, "seconds": round(seconds, 3), "codes_per_s": round(total / seconds, 1) if seconds else None,
    })
    if stopped < len(rows):
        log.warning("%d of %d lines did not stop within max_mel_tokens=%d", len(rows) - stopped, len(rows),
                    opts.max_mel_tokens)
    return GenerateResult(out_dir, len(rows), stopped, total, seconds)

