"""What the GPT sees before it speaks: conditioning and the inference prompt, laid out as infer_v2 does.

The prompt of one item is ``[conds (32 + 2)] [start_text, text..., stop_text]`` followed by the
``start_mel`` token, whose output predicts the first code:

* ``text`` is the item's ids with **every** 0 and 1 removed (``prepare_gpt_inputs`` strips the
  start/stop ids wherever they are, so right-padding with the stop id is how the official code
  batches texts of different lengths);
* text positions restart at 0 after the conditioning (segment-local, as in training);
* items shorter than the batch's widest are **left**-padded with zero embeddings that no position
  attends to, so every item ends at the same column and decodes in lock-step;
* the width is ``32 + 2 + L + 2`` for a text tensor of width ``L``, as released (an item whose
  ids include 0/1 gets left padding even alone; it is masked, so it changes nothing).

Conditioning (:func:`conditioning_from_features`) is computed as infer_v2 computes it: speaker
latents from the speaker prompt's features, an emotion vector merged with ``emo_alpha`` from the
emotion prompt's features, or given directly.

IndexTTS-2.5 (``infer_v2_5``): the conditioning is 3 rows (see ``UnifiedVoice.conditioning``) and
each item's ``lang_embedding`` row is added to all its text positions (start and stop included);
its text is ``<|lang|> `` + text as the tokenizer encodes it, with the same 0/1 stripping.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from indextts_core.model.unified_voice import UnifiedVoice


@dataclass
class Prompt:
    """A batch of inference prompts: embeddings (B, S, D) and which columns are real (B, S)."""

    embeds: torch.Tensor
    valid: torch.Tensor
    text_ids: list[torch.Tensor]  # each item's text after stripping 0/1 (without framing)

    @property
    def width(self) -> int:
        return self.embeds.size(1)


def strip_special(text_ids: torch.Tensor, start: int, stop: int) -> torch.Tensor:
    """One item's ids without any start/stop id (the official inference drops them all)."""
    return text_ids[(text_ids != start) & (text_ids != stop)]


def build_prompt(model: UnifiedVoice, conds: torch.Tensor, text_ids: torch.Tensor,
                 langs: torch.Tensor | None = None) -> Prompt:
    """The inference prompt for ``text_ids`` (B, L) after ``conds`` ((B or 1), C, D), left-padded.

    ``langs`` (B,): 2.5 only, each item's language row (as ``inference_speech(..., langs)``).
    """
    cfg = model.cfg
    lang_rows = model.language_rows(langs) if langs is not None else None
    b, width = text_ids.size(0), text_ids.size(1) + 2
    if conds.size(0) not in (1, b):
        raise ValueError(f"conditioning for {conds.size(0)} items, text for {b}")
    rows, valid, stripped = [], [], []
    for i in range(b):
        ids = strip_special(text_ids[i].long(), cfg.start_text_token, cfg.stop_text_token)
        framed = F.pad(F.pad(ids, (1, 0), value=cfg.start_text_token), (0, 1), value=cfg.stop_text_token)
        emb = model.text_embedding(framed) + model.text_pos_embedding(framed.size(0))
        if lang_rows is not None:
            emb = emb + lang_rows[i]
        c = conds[0] if conds.size(0) == 1 else conds[i]
        pad = width - framed.size(0)
        rows.append(torch.cat((emb.new_zeros(pad, emb.size(1)), c, emb)))
        valid.append(torch.cat((torch.zeros(pad, dtype=torch.bool), torch.ones(c.size(0) + framed.size(0),
                                                                                dtype=torch.bool))))
        stripped.append(ids)
    embeds = torch.stack(rows)
    return Prompt(embeds, torch.stack(valid).to(embeds.device), stripped)


def conditioning_from_features(
    model: UnifiedVoice,
    speaker_feats: torch.Tensor,
    speaker_lengths: torch.Tensor,
    emotion_feats: torch.Tensor | None = None,
    emotion_lengths: torch.Tensor | None = None,
    emo_alpha: float = 1.0,
    emotion_vector: torch.Tensor | None = None,
    exact_padding: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(speaker latents (B, 32, D), emotion vector (B, D)) from normalised Wav2Vec2-BERT features.

    The emotion vector is ``emotion_vector`` when given; otherwise infer_v2's ``merge_emovec``:
    ``base + emo_alpha * (emo - base)`` with ``base`` from the speaker prompt and ``emo`` from the
    emotion prompt (the speaker prompt again when there is none).  ``exact_padding``: each item of
    a padded batch gets exactly its solo result (False reproduces the released padding leak).
    """
    spk = model.speaker_latents(speaker_feats, speaker_lengths, exact_padding)
    if emotion_vector is None:
        base = model.emotion_vector(speaker_feats, speaker_lengths, exact_padding)
        if emotion_feats is None:
            emotion_vector = base
        else:
            emo = model.emotion_vector(emotion_feats, emotion_lengths, exact_padding)
            emotion_vector = base + emo_alpha * (emo - base)
    return spk, emotion_vector


def merge_emotion_vectors(speaker_vector: torch.Tensor, emotion_vector: torch.Tensor, alpha: float) -> torch.Tensor:
    """infer_v2's merge on precomputed emotion vectors (what preprocessing stores per clip)."""
    return speaker_vector + alpha * (emotion_vector - speaker_vector)
