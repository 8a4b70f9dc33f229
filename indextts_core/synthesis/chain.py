"""Text -> waveform, in infer_v2's order: GPT codes, S2Mel, BigVGAN, segments joined with silence.

For one speaker prompt (:func:`prompt_state`, computed once):

* the prompt at 22.05 kHz gives the reference mel; at 16 kHz its Kaldi fbank gives the CAMPPlus
  style vector; its Wav2Vec2-BERT features give the GPT's speaker conditioning and, quantised by
  the semantic codec, the content whose length-regulated form is the decoder's prompt condition.

For each text segment (:func:`speak_segment`):

* the emotion vector (``merge_emovec`` with ``emo_alpha``, lengths as infer_v2 passes them), GPT
  decoding (infer_v2's options), stop trimming, the teacher-forced latent over the codes;
* ``S_infer = vq2emb(codes) + gpt_layer(latent)``, regulated to ``(code_lens * 1.72).long()`` mel
  frames and appended to the prompt condition; the flow-matching decoder (25 Euler steps, CFG
  0.7) from noise continues the reference mel; the frames after the prompt go through BigVGAN;
  ``clamp(32767 * wav, +-32767)``.

Segments are joined with ``interval_silence_ms`` (200) of zeros.  One ``torch.Generator`` feeds the
GPT's sampling and every segment's noise in turn, as infer_v2's single seeded stream does, so a
seed reproduces a waveform.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from indextts_core.config import GenerationConfig
from indextts_core.errors import InputError
from indextts_core.generation.decode import decode
from indextts_core.generation.prompt import build_prompt
from indextts_core.model.bigvgan import BigVGAN, load_bigvgan, to_pcm
from indextts_core.model.bundle import ModelBundle
from indextts_core.model.campplus import CAMPPlus, load_campplus, style_features
from indextts_core.model.codec import SemanticCodec
from indextts_core.model.s2mel import LengthRegulator, MelSpec, load_front, mel_spectrogram, target_lengths
from indextts_core.model.s2mel_decoder import FlowMatching, load_decoder
from indextts_core.model.unified_voice import UnifiedVoice

SAMPLE_RATE = 22050
#: infer_v2 passes the feature width as every conditioning length (no masking of a single prompt).
INFER_LENGTH = 1024


@dataclass
class SynthesisModels:
    gpt: UnifiedVoice
    codec: SemanticCodec
    regulator: LengthRegulator
    gpt_layer: nn.Module
    decoder: FlowMatching
    vocoder: BigVGAN
    campplus: CAMPPlus
    mel: MelSpec

    @classmethod
    def load(cls, bundle: ModelBundle, device: str | torch.device = "cpu",
             gpt: UnifiedVoice | None = None) -> SynthesisModels:
        """Every model of a checkpoint folder that synthesis needs, strictly loaded, in eval mode.

        ``gpt``: speak with this GPT instead of the folder's (the model being trained).
        """
        problem = missing_synthesis_models(bundle)
        if problem:
            raise InputError(problem)
        s2mel_cfg = bundle.config["s2mel"]
        regulator, layer = load_front(bundle.s2mel_path, s2mel_cfg, bundle.gpt_config.model_dim)
        models = cls(gpt if gpt is not None else bundle.load_gpt().eval(), bundle.load_codec(), regulator, layer,
                     load_decoder(bundle.s2mel_path, s2mel_cfg), load_bigvgan(bundle.bigvgan_dir),
                     load_campplus(bundle.campplus_path, bundle.campplus_config),
                     MelSpec.from_config(s2mel_cfg["preprocess_params"]))
        for part in (models.codec, models.regulator, models.gpt_layer, models.decoder, models.vocoder,
                     models.campplus):
            part.to(device)
        if gpt is None:
            models.gpt.to(device)
        return models


def missing_synthesis_models(bundle: ModelBundle) -> str | None:
    """What a checkpoint folder lacks for synthesis (None: nothing), naming the file."""
    if not bundle.config.get("s2mel"):
        return f"{bundle.checkpoint_dir / 'config.yaml'}: no s2mel section (is this an IndexTTS-2 folder?)"
    for what, path in (("S2Mel weights", bundle.s2mel_path), ("CAMPPlus weights", bundle.campplus_path),
                       ("BigVGAN folder", bundle.bigvgan_dir), ("Wav2Vec2-BERT folder", bundle.w2v_bert_dir),
                       ("semantic codec", bundle.codec_path)):
        if not path.exists():
            return (f"{path}: {what} missing (synthesis needs them: the checkpoint folder's s2mel.pth and its "
                    "hf_cache/, or --hf-cache)")
    return None


@dataclass
class PromptState:
    """What one speaker prompt contributes to every segment."""

    spk_feats: torch.Tensor  # (1, T, 1024) normalised Wav2Vec2-BERT features
    ref_mel: torch.Tensor  # (1, 80, Tp)
    style: torch.Tensor  # (1, 192)
    prompt_condition: torch.Tensor  # (1, Tp, C)
    campplus_feat: torch.Tensor  # (T', 80)


@torch.no_grad()
def prompt_state(models: SynthesisModels, wave_22k: torch.Tensor, spk_feats: torch.Tensor) -> PromptState:
    """``wave_22k`` (1, N) float in [-1, 1]; ``spk_feats`` its Wav2Vec2-BERT features (1, T, 1024)."""
    import torchaudio

    wave_16k = torchaudio.transforms.Resample(SAMPLE_RATE, 16000).to(wave_22k.device)(wave_22k)  # as infer_v2
    _, s_ref = models.codec.quantize(spk_feats)
    ref_mel = mel_spectrogram(wave_22k.float(), models.mel)
    feat = style_features(wave_16k)
    style = models.campplus(feat.unsqueeze(0))
    condition = models.regulator(s_ref, torch.tensor([ref_mel.size(-1)], device=ref_mel.device))
    return PromptState(spk_feats, ref_mel, style, condition, feat)


@dataclass
class Segment:
    codes: torch.Tensor  # (1, M) after stop trimming
    code_lens: torch.Tensor
    stopped: bool
    latent: torch.Tensor  # (1, M, D)
    vc_target: torch.Tensor  # (1, 80, frames)
    pcm: torch.Tensor  # (1, frames * 256) on the int16 scale
    noise: torch.Tensor


@torch.no_grad()
def speak_segment(
    models: SynthesisModels,
    state: PromptState,
    text_ids: torch.Tensor,
    opts: GenerationConfig,
    *,
    emo_feats: torch.Tensor | None = None,
    emo_vector: torch.Tensor | None = None,
    random: torch.Generator | None = None,
    noise: torch.Tensor | None = None,
    diffusion_steps: int = 25,
    cfg_rate: float = 0.7,
    latent_adapter: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> Segment:
    """One text segment (1, L) in the prompt's voice.

    ``noise`` (1, 80, frames) replaces the decoder's draw from ``random`` (replaying a recorded run);
    ``latent_adapter`` maps the GPT latent before ``gpt_layer`` (only tests of mismatched tiny models need it).
    """
    gpt = models.gpt
    infer = torch.tensor([INFER_LENGTH])
    spk = gpt.speaker_latents(state.spk_feats, infer)
    if emo_vector is None:
        emo = emo_feats if emo_feats is not None else state.spk_feats
        emo_vector = gpt.merge_emotion(state.spk_feats, emo, infer, infer, opts.emo_alpha)
    out = decode(gpt, build_prompt(gpt, gpt.conditioning(spk, emo_vector), text_ids), opts, random=random)
    codes, code_lens = out.codes, out.lengths
    latent = gpt.gpt_latent(spk, emo_vector, text_ids, torch.tensor([text_ids.size(1)]), codes,
                            torch.tensor([codes.size(1)]))
    adapted = latent_adapter(latent) if latent_adapter is not None else latent
    s_infer = models.codec.embed_codes(codes) + models.gpt_layer(adapted)
    cond = models.regulator(s_infer, target_lengths(code_lens))
    cat = torch.cat((state.prompt_condition, cond), dim=1)
    if noise is None:
        noise = torch.randn((1, models.mel.n_mels, cat.size(1)), generator=random, device=cat.device)
    mel = models.decoder.solve_euler(noise, torch.tensor([cat.size(1)]), state.ref_mel, cat, state.style,
                                     diffusion_steps, cfg_rate)
    vc_target = mel[:, :, state.ref_mel.size(-1):]
    pcm = to_pcm(models.vocoder(vc_target.float()))
    return Segment(codes, code_lens, bool(out.stopped.all()), latent, vc_target, pcm, noise)


def join_segments(pcms: Sequence[torch.Tensor], interval_silence_ms: int = 200) -> torch.Tensor:
    """infer_v2's join: segment, silence, segment, ... (1, N) on the int16 scale."""
    if not pcms:
        return torch.zeros(1, 0)
    silence = torch.zeros(1, int(SAMPLE_RATE * interval_silence_ms / 1000))
    parts: list[torch.Tensor] = []
    for k, p in enumerate(pcms):
        if k:
            parts.append(silence)
        parts.append(p.cpu())
    return torch.cat(parts, dim=1)


def write_wav(pcm: torch.Tensor, path: Path) -> Path:
    """Write (1, N) int16-scale samples as 16-bit PCM at 22.05 kHz, atomically."""
    import soundfile as sf

    from indextts_core.utils.fileio import atomic_path

    samples = pcm.squeeze(0).clamp(-32767, 32767).to(torch.int16).numpy().astype(np.int16)
    with atomic_path(path) as tmp:
        sf.write(str(tmp), samples, SAMPLE_RATE, subtype="PCM_16", format="WAV")
    return path
