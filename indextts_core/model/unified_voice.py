"""IndexTTS-2's GPT stage ("UnifiedVoice v2"), written for training.

Parameter names and shapes are the released ones, so the official ``gpt.pth`` loads strictly
and :meth:`UnifiedVoice.state_dict` is the official key set (665 keys at full size).

One teacher-forced pass sees ``[conds (32 + 2) | text (L + 2) | mel (M + 2)]``:

* ``conds``: 32 speaker latents with the emotion vector added to each, then the two speed rows
  ``speed_emb(1)``, ``speed_emb(0)`` (always these two, as in the released forward and inference);
* text: ``[start] + ids + stops`` -> targets ``ids + stops``, positions restarting at 0;
* mel: ``[start_mel] + codes + stops`` -> targets ``codes + stops``, positions restarting at 0.

Positions at or beyond each sample's length are set to the stop token (on copies: the caller's
tensors are never modified), and no attention mask is applied besides the causal one, exactly as
released, so a shorter sample's mel positions also attend to its padded text positions.

IndexTTS-2.5 (``cfg.is_v25``, set by a ``version: 2.5`` config) is the same class with
``spk_cond_mode="campplus"``: no speaker conformer/perceiver and no ``speed_emb``; the speaker is
one row ``spk_emb_proj(campplus)`` (Linear 192 -> D), so ``conds`` is ``[spk + emo, 0, 0]``
(3 rows); and ``lang_embedding`` (107 rows, one per entry of the official language table plus
one) is added to every text position.  The released inference adds it (``prepare_gpt_inputs``)
but the released ``forward`` does not: here ``forward(..., langs=...)`` adds it exactly as
inference does, so training sees what inference will feed; ``langs=None`` is the released
forward (what the golden outputs were made with).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from indextts_core.model.conformer import ConformerEncoder
from indextts_core.model.config import GPTConfig
from indextts_core.model.gpt2 import GPT2
from indextts_core.model.perceiver import PerceiverResampler

#: Width of the conditioning features (Wav2Vec2-BERT hidden size), fixed in the released model.
COND_INPUT_DIM = 1024
#: Width of a CAMPPlus speaker vector, the 2.5 speaker input.
CAMPPLUS_DIM = 192
#: Rows of the 2.5 ``lang_embedding``: ``len(LANGUAGE_DICT) + 1`` in the official tokenizer module.
LANG_EMBEDDING_ROWS = 107


class LearnedPositionEmbeddings(nn.Module):
    def __init__(self, seq_len: int, dim: int):
        super().__init__()
        self.emb = nn.Embedding(seq_len, dim)
        nn.init.normal_(self.emb.weight, std=0.02)

    def forward(self, length: int) -> torch.Tensor:
        """Rows 0..length-1 (segment-local positions), shape (length, dim)."""
        if length > self.emb.num_embeddings:
            raise ValueError(f"sequence of {length} positions exceeds the table of {self.emb.num_embeddings}")
        return self.emb.weight[:length]


@dataclass
class GPTOutput:
    """Teacher-forced outputs.  Logits are (B, positions, vocabulary)."""

    text_logits: torch.Tensor | None  # (B, L + 2, text rows); None when not requested
    mel_logits: torch.Tensor  # (B, M + 2, number_mel_codes)
    text_targets: torch.Tensor  # (B, L + 2)
    mel_targets: torch.Tensor  # (B, M + 2)
    text_lengths: torch.Tensor  # (B,)
    mel_lengths: torch.Tensor  # (B,)
    mel_latent: torch.Tensor  # (B, M + 2, D): final-normed hidden states over the mel segment


def pad_beyond(tokens: torch.Tensor, lengths: torch.Tensor, value: int) -> torch.Tensor:
    """A copy of ``tokens`` (B, N) with every position >= the sample's length set to ``value``."""
    keep = torch.arange(tokens.size(1), device=tokens.device)[None, :] < lengths.to(tokens.device)[:, None]
    return torch.where(keep, tokens, torch.full_like(tokens, value))


def frame(tokens: torch.Tensor, lengths: torch.Tensor, start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, targets), both (B, N + 2): ``[start] + seq + [stop]`` and ``seq + [stop, stop]``.

    ``seq`` is ``tokens`` with positions beyond each length replaced by ``stop``.
    """
    seq = F.pad(pad_beyond(tokens, lengths, stop), (0, 1), value=stop)
    return F.pad(seq, (1, 0), value=start), F.pad(seq, (0, 1), value=stop)


class UnifiedVoice(nn.Module):
    def __init__(self, cfg: GPTConfig, dropout: float = 0.1):
        super().__init__()
        self.cfg = cfg
        d, spk, emo = cfg.model_dim, cfg.condition_module, cfg.emo_condition_module
        # registration order = the released state-dict order
        if cfg.is_v25:
            self.spk_emb_proj = nn.Linear(CAMPPLUS_DIM, d)
        else:
            self.conditioning_encoder = ConformerEncoder(COND_INPUT_DIM, spk.output_size, spk.attention_heads,
                                                         spk.linear_units, spk.num_blocks)
            self.perceiver_encoder = PerceiverResampler(d, spk.output_size, cfg.condition_num_latent,
                                                        spk.attention_heads, spk.perceiver_mult)
            self.speed_emb = nn.Embedding(2, d)
            nn.init.zeros_(self.speed_emb.weight)
        self.emo_conditioning_encoder = ConformerEncoder(COND_INPUT_DIM, emo.output_size, emo.attention_heads,
                                                         emo.linear_units, emo.num_blocks)
        self.emo_perceiver_encoder = PerceiverResampler(COND_INPUT_DIM, emo.output_size, 1, emo.attention_heads,
                                                        emo.perceiver_mult)
        self.text_embedding = nn.Embedding(cfg.text_vocab_rows, d)
        if cfg.is_v25:
            self.lang_embedding = nn.Embedding(LANG_EMBEDDING_ROWS, d)  # default N(0, 1) init, as released
        self.emo_layer = nn.Linear(d, d)
        self.emovec_layer = nn.Linear(COND_INPUT_DIM, d)
        self.mel_embedding = nn.Embedding(cfg.number_mel_codes, d)
        self.gpt = GPT2(d, cfg.layers, cfg.heads, dropout)
        self.mel_pos_embedding = LearnedPositionEmbeddings(cfg.mel_positions, d)
        self.text_pos_embedding = LearnedPositionEmbeddings(cfg.text_positions, d)
        self.final_norm = nn.LayerNorm(d)
        self.text_head = nn.Linear(d, cfg.text_vocab_rows)
        self.mel_head = nn.Linear(d, cfg.number_mel_codes)
        nn.init.normal_(self.text_embedding.weight, std=0.02)
        nn.init.normal_(self.mel_embedding.weight, std=0.02)

    # ------------------------------------------------------------------ conditioning
    def speaker_latents(self, feats: torch.Tensor, lengths: torch.Tensor, exact_padding: bool = False) -> torch.Tensor:
        """Speaker conditioning: (B, T, 1024) features -> (B, 32, D) latents (IndexTTS-2).

        ``exact_padding=True``: each clip of a padded batch gets exactly its solo result (see the
        conformer); by default a padded batch reproduces the released model, padding leak included.
        2.5 has no such path: use :meth:`speaker_projection` on a CAMPPlus vector.
        """
        if self.cfg.is_v25:
            raise ValueError("IndexTTS-2.5 conditions on a CAMPPlus vector: use speaker_projection(campplus)")
        x, mask = self.conditioning_encoder(feats, lengths, exact_padding)
        keys = F.pad(mask.squeeze(1), (self.cfg.condition_num_latent, 0), value=True)
        return self.perceiver_encoder(x, keys)

    def speaker_projection(self, campplus: torch.Tensor) -> torch.Tensor:
        """IndexTTS-2.5's speaker row: (B, 192) or (B, 1, 192) CAMPPlus vectors -> (B, 1, D)."""
        if not self.cfg.is_v25:
            raise ValueError("speaker_projection is IndexTTS-2.5's speaker path; 2.0 uses speaker_latents(features)")
        if campplus.size(-1) != CAMPPLUS_DIM or campplus.dim() not in (2, 3):
            raise ValueError(f"expected CAMPPlus vectors (B, {CAMPPLUS_DIM}) or (B, 1, {CAMPPLUS_DIM}), "
                             f"got {tuple(campplus.shape)}")
        out = self.spk_emb_proj(campplus)
        return out if out.dim() == 3 else out.unsqueeze(1)

    def emotion_embedding(self, feats: torch.Tensor, lengths: torch.Tensor, exact_padding: bool = False) -> torch.Tensor:
        """The emotion perceiver's output (B, 1024), before the two projections."""
        x, mask = self.emo_conditioning_encoder(feats, lengths, exact_padding)
        keys = F.pad(mask.squeeze(1), (1, 0), value=True)
        return self.emo_perceiver_encoder(x, keys).squeeze(1)

    def emotion_vector(self, feats: torch.Tensor, lengths: torch.Tensor, exact_padding: bool = False) -> torch.Tensor:
        """Emotion vector (B, D): ``emo_layer(emovec_layer(emotion_embedding))``."""
        return self.emo_layer(self.emovec_layer(self.emotion_embedding(feats, lengths, exact_padding)))

    def merge_emotion(self, spk_feats: torch.Tensor, emo_feats: torch.Tensor, spk_lengths: torch.Tensor,
                      emo_lengths: torch.Tensor, alpha: float = 1.0) -> torch.Tensor:
        """``base + alpha * (emo - base)``, base being the speaker prompt's own emotion vector."""
        emo = self.emotion_vector(emo_feats, emo_lengths)
        base = self.emotion_vector(spk_feats, spk_lengths)
        return base + alpha * (emo - base)

    def conditioning(self, speaker_latents: torch.Tensor, emotion_vector: torch.Tensor) -> torch.Tensor:
        """The prefix: latents + emotion vector, then two rows.

        2.0: (B, 32 + 2, D), the rows are ``speed_emb(1)``, ``speed_emb(0)``; 2.5: (B, 1 + 2, D) from
        :meth:`speaker_projection`, the two rows are zeros.
        """
        b = speaker_latents.size(0)
        if self.cfg.is_v25:
            return torch.cat((speaker_latents + emotion_vector.unsqueeze(1),
                              speaker_latents.new_zeros(b, 2, speaker_latents.size(2))), dim=1)
        speed = self.speed_emb.weight
        return torch.cat((speaker_latents + emotion_vector.unsqueeze(1),
                          speed[1].expand(b, 1, -1), speed[0].expand(b, 1, -1)), dim=1)

    # ------------------------------------------------------------------ teacher-forced pass
    def forward(
        self,
        speaker_latents: torch.Tensor,
        emotion_vector: torch.Tensor,
        text_ids: torch.Tensor,
        text_lengths: torch.Tensor,
        codes: torch.Tensor,
        code_lengths: torch.Tensor,
        with_text_logits: bool = True,
        pad_at_end: bool = False,
        langs: torch.Tensor | None = None,
    ) -> GPTOutput:
        """One teacher-forced pass over a padded batch (inputs are never modified).

        speaker_latents (B, 32, D) (2.5: (B, 1, D)), emotion_vector (B, D), text_ids (B, L),
        codes (B, M), lengths (B,).  ``langs`` (B,), 2.5 only: each sample's row of
        ``lang_embedding``, added to every text position as inference adds it (None: the released
        forward, which leaves it out).

        ``pad_at_end=False`` is the released layout: the text and mel segments are each padded to
        the batch's longest, so a shorter sample's mel positions attend to its padded text.
        ``pad_at_end=True`` packs each sample as ``[conds | its text | its mel]`` and puts all its
        padding after that: no real position sees padding, so every sample gets exactly the
        numbers it gets alone (the layout inference runs in), whatever it is batched with.  The
        outputs have the same shapes and meaning in both layouts.
        """
        cfg = self.cfg
        text_in, text_tgt = frame(text_ids, text_lengths, cfg.start_text_token, cfg.stop_text_token)
        mel_in, mel_tgt = frame(codes, code_lengths, cfg.start_mel_token, cfg.stop_mel_token)
        text_emb = self.text_embedding(text_in) + self.text_pos_embedding(text_in.size(1))
        if langs is not None:
            text_emb = text_emb + self.language_rows(langs)
        mel_emb = self.mel_embedding(mel_in) + self.mel_pos_embedding(mel_in.size(1))
        conds = self.conditioning(speaker_latents, emotion_vector)
        c, lt, lm = conds.size(1), text_in.size(1), mel_in.size(1)
        x = torch.cat((conds, text_emb, mel_emb), dim=1)
        if not pad_at_end:
            hidden = self.final_norm(self.gpt(x)[:, c:])
            text_h, mel_h = hidden[:, :lt], hidden[:, lt:]
        else:
            text_real = text_lengths.to(x.device)[:, None] + 2  # [start] + ids + [stop]
            mel_real = code_lengths.to(x.device)[:, None] + 2
            width = c + int((text_real + mel_real).max())
            pos = torch.arange(width, device=x.device)[None, :]
            # packed position -> position in the segment-padded layout (padding points at position 0)
            source = torch.where(pos < c + text_real, pos, pos - text_real + lt)
            source = torch.where(pos < c + text_real + mel_real, source, torch.zeros_like(source))
            packed = x.gather(1, source[..., None].expand(-1, -1, x.size(2)))
            hidden = self.final_norm(self.gpt(packed))
            text_h = hidden[:, c:c + lt] if c + lt <= width else F.pad(hidden[:, c:], (0, 0, 0, c + lt - width))
            mel_pos = (c + text_real + torch.arange(lm, device=x.device)[None, :]).clamp(max=width - 1)
            mel_h = hidden.gather(1, mel_pos[..., None].expand(-1, -1, hidden.size(2)))
        return GPTOutput(
            text_logits=self.text_head(text_h) if with_text_logits else None,
            mel_logits=self.mel_head(mel_h),
            text_targets=text_tgt, mel_targets=mel_tgt,
            text_lengths=text_lengths, mel_lengths=code_lengths, mel_latent=mel_h,
        )

    def language_rows(self, langs: torch.Tensor) -> torch.Tensor:
        """(B, 1, D): each sample's ``lang_embedding`` row (2.5 only), to add to its text embeddings."""
        if not self.cfg.is_v25:
            raise ValueError("langs is IndexTTS-2.5's language embedding; a 2.0 model has none")
        return self.lang_embedding(langs.long().reshape(-1)).unsqueeze(1)

    def gpt_latent(self, speaker_latents: torch.Tensor, emotion_vector: torch.Tensor, text_ids: torch.Tensor,
                   text_lengths: torch.Tensor, codes: torch.Tensor, code_lengths: torch.Tensor,
                   langs: torch.Tensor | None = None) -> torch.Tensor:
        """The latent the S2M stage consumes: (B, M, D), the mel positions minus the two added ones."""
        out = self.forward(speaker_latents, emotion_vector, text_ids, text_lengths, codes, code_lengths,
                           with_text_logits=False, langs=langs)
        return out.mel_latent[:, :-2]
