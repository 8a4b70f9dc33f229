"""Hear the voice change during training: a few fixed validation sentences spoken by the model being trained.

At step 0 and at every ``train.val_audio_every``-th validation (and the last one), the main process
speaks ``train.val_audio_samples`` validation items per language with the GPT as it is now: each
item's text, in the voice of its pair's prompt clip, through the base checkpoint's S2Mel and
BigVGAN (the complete synthesis chain, :class:`~indextts_core.synthesis.run.Synthesizer`), decoded
as the generation watch decodes (``train.val_generate_decoding``) and cut at
``train.val_generate_max_ratio`` times the reference's codes (+10): a model that does not stop yet
costs a bounded time.  Its random draws come from its own seeded streams (the global ones are
saved and restored), so training gives the same weights with samples on or off.  The
same items and seeds every time, so only the weights change between two readings.  Each wav is
written to ``<output>/samples/step_<N>/<language>-<id>.wav`` and handed to every metric sink that
takes audio (TensorBoard's audio tab; MLflow artifacts); the time it took is logged as
``time/audio_samples_s``.

It needs the synthesis models in the base folder (``s2mel.pth``, ``hf_cache/campplus_cn_common.bin``,
``hf_cache/bigvgan/``) and the prompt audio on this machine; without them it is off, and says why once.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from indextts_core.errors import InputError
from indextts_core.model.bundle import ModelBundle
from indextts_core.training import data as D
from indextts_core.training.generation_watch import DECODINGS

log = logging.getLogger(__name__)


def pick_items(data: D.TrainingSet, samples: Sequence[D.Sample], per_language: int, seed: int) -> list[D.Sample]:
    """``per_language`` samples of each language with distinct targets, fixed by ``seed``."""
    by_lang: dict[str, dict[int, D.Sample]] = {}
    for s in samples:
        by_lang.setdefault(data.rows[s.target]["language"], {}).setdefault(s.target, s)
    rng = random.Random(seed)
    picked: list[D.Sample] = []
    for lang in sorted(by_lang):
        group = sorted(by_lang[lang].values(), key=lambda s: data.rows[s.target]["id"])
        rng.shuffle(group)
        picked += group[:per_language]
    return picked


def why_unavailable(bundle: ModelBundle, rows: Sequence[dict[str, Any]],
                    read_audio: Callable[[str], bytes] | None) -> str | None:
    """Why samples cannot be spoken here (None: they can)."""
    from indextts_core.synthesis.chain import missing_synthesis_models

    problem = missing_synthesis_models(bundle)
    if problem:
        return problem
    if read_audio is None:
        remote = [r["audio"] for r in rows if not Path(r["audio"]).is_file()]
        if remote:
            return f"prompt audio {remote[0]} is not a file on this machine"
    return None


class AudioSamples:
    """The fixed items of a run and how they are spoken (see the module docstring)."""

    def __init__(self, bundle: ModelBundle, tokenizer: Path, data: D.TrainingSet, samples: Sequence[D.Sample],
                 per_language: int, every: int, seed: int, diffusion_steps: int, out_dir: Path,
                 read_audio: Callable[[str], bytes] | None = None, decoding: str = "infer_v2",
                 max_ratio: float = 3.0):
        self.bundle, self.tokenizer, self.data = bundle, tokenizer, data
        self.opts = DECODINGS[decoding].model_copy(update={"seed": seed})
        self.max_ratio = max_ratio
        self.items = pick_items(data, samples, per_language, seed) if per_language > 0 else []
        self.every, self.seed, self.diffusion_steps = max(1, every), seed, diffusion_steps
        self.out_dir = out_dir
        self.read_audio = read_audio or (lambda uri: Path(uri).read_bytes())
        self.seconds = 0.0
        self._validations = 0
        self._synth: Any = None
        self._states: dict[str, Any] = {}
        reason = why_unavailable(bundle, [data.rows[s.prompt] for s in self.items], read_audio) if self.items else None
        if reason is not None:
            log.info("no audio samples during training: %s", reason)
            self.items = []

    def __bool__(self) -> bool:
        return bool(self.items)

    def due(self, final: bool = False) -> bool:
        """Step 0 (the first call), every ``every``-th validation after it, and the last one."""
        n = self._validations
        self._validations += 1
        return bool(self.items) and (final or n % self.every == 0)

    @torch.no_grad()
    def __call__(self, model: nn.Module, step: int, device: torch.device) -> list[tuple[str, Path, Any]]:
        """Speak every item with ``model``; ``(tag, wav path, float samples at 22.05 kHz)`` per item."""
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):  # training's streams untouched
            return self._speak(model, step, device)

    def _speak(self, model: nn.Module, step: int, device: torch.device) -> list[tuple[str, Path, Any]]:
        from indextts_core.synthesis.chain import write_wav
        from indextts_core.synthesis.run import Synthesizer

        start = time.monotonic()
        if self._synth is None:
            self._synth = Synthesizer(self.bundle, self.opts, device=device,
                                      diffusion_steps=self.diffusion_steps, gpt=model, tokenizer=self.tokenizer)
        synth = self._synth
        was_training = model.training
        model.eval()
        out: list[tuple[str, Path, Any]] = []
        try:
            for k, s in enumerate(self.items):
                target, prompt = self.data.rows[s.target], self.data.rows[s.prompt]
                if prompt["audio"] not in self._states:
                    self._states[prompt["audio"]] = synth.prompt(self.read_audio(prompt["audio"]), name=prompt["audio"])
                limit = math.ceil(self.max_ratio * target["code_len"]) + 10 if target.get("code_len") else None
                rng = torch.Generator(device=synth.device).manual_seed(self.seed + k)
                try:
                    spoken = synth.speak(target["text"], target["language"], self._states[prompt["audio"]], rng,
                                         max_mel_tokens=limit, where=f"audio sample {target['id']}")
                except InputError as e:  # a text the tokenizer cannot say is a finding, not a crash
                    log.warning("audio sample %s skipped: %s", target["id"], e)
                    continue
                tag = f"{target['language']}-{target['id']}"
                wav = write_wav(spoken.pcm, self.out_dir / f"step_{step:06d}" / f"{tag}.wav")
                out.append((f"samples/{tag}", wav, (spoken.pcm[0].float() / 32767.0).numpy()))
        finally:
            model.train(was_training)
        self.seconds = time.monotonic() - start
        log.info("step %d: %d audio samples in %.1f s (%s)", step, len(out), self.seconds,
                 self.out_dir / f"step_{step:06d}")
        return out
