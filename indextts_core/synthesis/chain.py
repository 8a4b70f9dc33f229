"""Text -> waveform, in the official inference order: GPT codes, S2Mel, BigVGAN, segments joined with silence.

Two releases, selected by the GPT (``models.gpt.cfg.is_v25``): IndexTTS-2 as ``infer_v2`` runs it,
IndexTTS-2.5 as ``infer_v2_5`` runs it.

For one speaker prompt (:func:`prompt_state`, computed once):

* the prompt at 22.05 kHz gives the reference mel; resampled to 16 kHz its Kaldi fbank gives the
  CAMPPlus style vector (:func:`~indextts_core.model.campplus.campplus_style`) and its Wav2Vec2-BERT
  features the GPT's speaker conditioning; the same file read again at 16 kHz (the official emotion
  path) gives the emotion features used when there is no emotion prompt
  (:mod:`indextts_core.data.prompt_audio`);
* 2.0: the features quantised by the semantic codec are the content whose length-regulated form is
  the decoder's prompt condition; 2.5: the features themselves are regulated (no quantisation).

For each text segment (:func:`speak_segment`):

* the emotion vector (``merge_emovec`` with ``emo_alpha``, lengths as the official code passes
  them; without an emotion prompt the official code forces ``emo_alpha = 1.0``, and so do we); the
  speaker conditioning: 2.0 the speaker latents of the features, 2.5 one row
  ``spk_emb_proj(style)`` (the same CAMPPlus vector the decoder is styled with); GPT decoding
  (the official options), stop trimming;
* 2.0: the teacher-forced latent over the codes, ``S_infer = vq2emb(codes) + gpt_layer(latent)``,
  regulated to ``(code_lens * 1.72).long()`` mel frames;
  2.5: the text positions also get the language row (``langs``), no latent is computed,
  ``S_infer = codec.decode(codes)`` (2T frames for T codes), regulated to
  ``int(2T * 1.72)`` frames (:func:`v25_target_length`);
* then, for both: appended to the prompt condition; the flow-matching decoder (25 Euler steps,
  CFG 0.7) from noise continues the reference mel; the frames after the prompt go through
  BigVGAN; ``clamp(32767 * wav, +-32767)``.

Segments are joined with ``interval_silence_ms`` (200) of zeros.  One ``torch.Generator`` feeds the
GPT's sampling and every segment's noise in turn, so a seed reproduces a waveform.  What differs from
``torch.manual_seed(seed); tts.infer(...)`` with the official code: under its pinned transformers
(4.52) every Wav2Vec2-BERT layer draws one ``torch.rand([])`` from the global CPU stream for layerdrop
even in eval mode, and a first call encodes two prompts (speaker and emotion path), so the official
sampling starts ``2 x num_hidden_layers`` draws later (CPU runs; on CUDA the sampling stream is the
GPU's and is not touched).  :func:`official_stream` spends those draws so that a generator seeded
here continues where the official one would; transformers 5 (ours) no longer draws in eval mode.
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
from indextts_core.model.campplus import CAMPPlus, campplus_style, load_campplus
from indextts_core.model.codec import SemanticCodec
from indextts_core.model.s2mel import FRAMES_PER_CODE, LengthRegulator, MelSpec, load_front, mel_spectrogram, \
    target_lengths
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
    gpt_layer: nn.Module | None  # None for IndexTTS-2.5, which feeds the decoder no GPT latent
    decoder: FlowMatching
    vocoder: BigVGAN
    campplus: CAMPPlus
    mel: MelSpec

    @classmethod
    def load(cls, bundle: ModelBundle, device: str | torch.device = "cpu",
             gpt: UnifiedVoice | None = None) -> SynthesisModels:
        """Every model of a checkpoint folder that synthesis needs, strictly loaded, in eval mode.

        ``gpt``: speak with this GPT instead of the folder's (the model being trained); it must be of
        the folder's release.  A 2.5 folder's codec is its ``codec.pth`` and its ``s2mel.pth`` needs
        no ``gpt_layer`` (one that is there is not read).
        """
        problem = missing_synthesis_models(bundle)
        if problem:
            raise InputError(problem)
        if gpt is not None and gpt.cfg.is_v25 != bundle.is_v25:
            raise InputError(f"{bundle.checkpoint_dir}: an IndexTTS-{'2.5' if bundle.is_v25 else '2'} folder cannot "
                             f"speak with an IndexTTS-{'2.5' if gpt.cfg.is_v25 else '2'} GPT")
        s2mel_cfg = bundle.config["s2mel"]
        if bundle.is_v25:
            regulator, decoder = load_s2mel_v25(bundle.s2mel_path, s2mel_cfg)
            layer = None
        else:
            regulator, layer = load_front(bundle.s2mel_path, s2mel_cfg, bundle.gpt_config.model_dim)
            decoder = load_decoder(bundle.s2mel_path, s2mel_cfg)
        models = cls(gpt if gpt is not None else bundle.load_gpt().eval(), bundle.load_codec(), regulator, layer,
                     decoder, load_bigvgan(bundle.bigvgan_dir),
                     load_campplus(bundle.campplus_path, bundle.campplus_config),
                     MelSpec.from_config(s2mel_cfg["preprocess_params"]))
        for part in (models.codec, models.regulator, models.gpt_layer, models.decoder, models.vocoder,
                     models.campplus):
            if part is not None:
                part.to(device)
        if gpt is None:
            models.gpt.to(device)
        return models


def load_s2mel_v25(path: Path, s2mel_cfg: dict) -> tuple[LengthRegulator, FlowMatching]:
    """The length regulator and the flow-matching decoder of a 2.5 ``s2mel.pth``, each strictly, in eval mode.

    Reads ``{"net": {"length_regulator": ..., "cfm": ...}}`` (``module.`` prefixes removed, as the
    official loader does); a ``gpt_layer`` entry may be there or not and is not read.
    """
    from indextts_core.model.checkpoint import load_state_dict_into
    from indextts_core.utils.safe_load import torch_load

    obj = torch_load(path, "S2Mel weights")
    net = obj.get("net") if isinstance(obj, dict) else None
    if not isinstance(net, dict) or not {"cfm", "length_regulator"} <= set(net):
        raise InputError(f"{path}: not an S2Mel checkpoint (expected {{'net': {{'cfm', 'length_regulator', ...}}}})")
    regulator = LengthRegulator.from_config(s2mel_cfg["length_regulator"])
    decoder = FlowMatching(s2mel_cfg)
    for name, module in (("length_regulator", regulator), ("cfm", decoder)):
        state = {k.removeprefix("module."): v for k, v in net[name].items()}
        load_state_dict_into(module, state, Path(f"{path}[net.{name}]"))  # type: ignore[arg-type]
    return regulator.eval(), decoder.eval()


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
    style: torch.Tensor  # (1, 192) CAMPPlus vector (the decoder's style; 2.5: also the GPT's speaker input)
    prompt_condition: torch.Tensor  # (1, Tp, C)
    campplus_feat: torch.Tensor  # (T', 80)
    emo_feats: torch.Tensor  # (1, T', 1024) the same file on the emotion path (16 kHz directly)


def official_stream(generator: torch.Generator, w2v_layers: int, prompts_encoded: int = 2) -> torch.Generator:
    """Spend the draws the official first ``infer`` call makes before it samples (see the module docstring):
    ``prompts_encoded x w2v_layers`` single ``rand`` draws, on a CPU generator only. Returns ``generator``."""
    if generator.device.type == "cpu":
        for _ in range(prompts_encoded * w2v_layers):
            torch.rand([], generator=generator)
    return generator


@torch.no_grad()
def prompt_state(models: SynthesisModels, wave_22k: torch.Tensor, spk_feats: torch.Tensor, *,
                 wave_16k: torch.Tensor | None = None, emo_feats: torch.Tensor | None = None) -> PromptState:
    """``wave_22k`` (1, N) float in [-1, 1]; ``spk_feats`` the Wav2Vec2-BERT features (1, T, 1024) of its
    16 kHz resampling ``wave_16k`` (computed from ``wave_22k`` when not given).

    The prompt condition regulates ``codec.quantize(spk_feats)``'s embeddings (2.0) or ``spk_feats``
    itself (2.5) to the reference mel's frame count.  ``emo_feats``: the emotion path's features of the
    same file (what speaks when no emotion prompt is given); default ``spk_feats``.
    """
    from indextts_core.data.prompt_audio import to_16k

    content = spk_feats if models.gpt.cfg.is_v25 else models.codec.quantize(spk_feats)[1]
    ref_mel = mel_spectrogram(wave_22k.float(), models.mel)
    style, feat = campplus_style(models.campplus, to_16k(wave_22k) if wave_16k is None else wave_16k)
    condition = models.regulator(content, torch.tensor([ref_mel.size(-1)], device=ref_mel.device))
    return PromptState(spk_feats, ref_mel, style, condition, feat, spk_feats if emo_feats is None else emo_feats)


def prompt_conditioning(gpt: UnifiedVoice, state: PromptState, emo_alpha: float = 1.0,
                        emo_feats: torch.Tensor | None = None,
                        emo_vector: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(speaker conditioning, emotion vector) as infer_v2 computes them for one prompt.

    Every length is the feature width (:data:`INFER_LENGTH`: nothing masked).  Speaker: 2.0 the latents of
    ``state.spk_feats``, 2.5 ``spk_emb_proj(style)``.  Emotion: ``emo_vector`` when given, else
    ``merge_emovec(spk, emo, alpha)`` with the emotion prompt's features ``emo_feats`` and ``emo_alpha``,
    or, without one, the speaker prompt read on the emotion path (``state.emo_feats``) with alpha 1.0.
    """
    infer = torch.tensor([INFER_LENGTH])
    spk = gpt.speaker_projection(state.style) if gpt.cfg.is_v25 else gpt.speaker_latents(state.spk_feats, infer)
    if emo_vector is None:
        emo, alpha = (emo_feats, emo_alpha) if emo_feats is not None else (state.emo_feats, 1.0)
        emo_vector = gpt.merge_emotion(state.spk_feats, emo, infer, infer, alpha)
    return spk, emo_vector


@dataclass
class Segment:
    codes: torch.Tensor  # (1, M) after stop trimming
    code_lens: torch.Tensor
    stopped: bool
    latent: torch.Tensor | None  # (1, M, D) the teacher-forced GPT latent; None for 2.5 (unused) or no codes
    vc_target: torch.Tensor  # (1, 80, frames)
    pcm: torch.Tensor  # (1, frames * 256) on the int16 scale
    noise: torch.Tensor


def v25_target_length(decoded_frames: int, duration_factor: float = 1.0) -> int:
    """infer_v2_5's mel frames for ``decoded_frames`` rows of ``codec.decode`` (2 per code):
    ``int(frames * 1.72 * duration_factor)`` in Python floats, truncated."""
    return int(decoded_frames * FRAMES_PER_CODE * duration_factor)


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
    langs: torch.Tensor | None = None,
) -> Segment:
    """One text segment (1, L) in the prompt's voice.

    ``noise`` (1, 80, frames) replaces the decoder's draw from ``random`` (replaying a recorded run);
    ``latent_adapter`` maps the GPT latent before ``gpt_layer`` (2.0 only; only tests of mismatched
    tiny models need it).  ``langs`` (1,): the segment's ``lang_embedding`` row, required by a 2.5
    GPT (``EncodedLine.lang``) and refused by a 2.0 one.
    """
    gpt = models.gpt
    v25 = gpt.cfg.is_v25
    if v25 and langs is None:
        raise ValueError("IndexTTS-2.5 speaks with a language row: pass langs (the encoded line's lang)")
    if v25 and latent_adapter is not None:
        raise ValueError("latent_adapter maps IndexTTS-2's GPT latent; 2.5 feeds the decoder codec.decode(codes)")
    spk, emo_vector = prompt_conditioning(gpt, state, opts.emo_alpha, emo_feats, emo_vector)
    out = decode(gpt, build_prompt(gpt, gpt.conditioning(spk, emo_vector), text_ids, langs=langs), opts,
                 random=random)
    codes, code_lens = out.codes, out.lengths
    if codes.size(1) == 0:  # the GPT stopped at once: nothing to say (the official code fails here)
        empty = torch.zeros(1, models.mel.n_mels, 0, device=codes.device)
        return Segment(codes, code_lens, bool(out.stopped.all()), None, empty, torch.zeros(1, 0), empty)
    if v25:
        latent = None
        s_infer = models.codec.decode(codes)
        frames = torch.tensor([v25_target_length(s_infer.size(1))], device=s_infer.device)
    else:
        latent = gpt.gpt_latent(spk, emo_vector, text_ids, torch.tensor([text_ids.size(1)]), codes,
                                torch.tensor([codes.size(1)]))
        adapted = latent_adapter(latent) if latent_adapter is not None else latent
        s_infer = models.codec.embed_codes(codes) + models.gpt_layer(adapted)
        frames = target_lengths(code_lens)
    cond = models.regulator(s_infer, frames)
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
