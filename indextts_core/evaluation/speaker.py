"""Speaker similarity by an independent verifier, and the scale that makes its numbers readable.

The checkpoint's own CAMPPlus is the speaker input of IndexTTS-2.5, so a similarity it scores
flatters the model.  :class:`XVectorEmbedder` scores with a speaker verification model that the
TTS never saw: any Hugging Face ``*ForXVector`` folder (``WavLMForXVector`` as in
``microsoft/wavlm-base-plus-sv``, ``Wav2Vec2ForXVector``, ``UniSpeechSatForXVector``) with its
feature extractor.  It has the interface of the evaluation's ``SpeakerEmbedder``: call it on a
16 kHz wave for a vector, :meth:`XVectorEmbedder.similarity` for a cosine with another vector.

A cosine means little on its own: :func:`speaker_scale` measures, on real recordings, what the same
encoder gives two clips of one speaker (the same-speaker ceiling) and two clips of two speakers
(the different-speaker floor), per language, so a synthesized clip's similarity reads against both.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from indextts_core.errors import InputError
from indextts_core.evaluation.scoring import cosine

log = logging.getLogger(__name__)

#: How the report names the similarity that the checkpoint's own encoder scores.
OWN_ENCODER_LABEL = "the model's own speaker encoder (CAMPPlus)"
#: The sample rate the verifiers take.
VERIFIER_SR = 16000
#: Clips shorter than this are not embedded (as the evaluation's ``SpeakerEmbedder``): similarity 0.
MIN_EMBED_S = 0.2

#: ``(language, speaker, clip id, 16 kHz wave)``: one real recording for :func:`speaker_scale`.
Clip = tuple[str, str, str, np.ndarray]


def _xvector_architecture(folder: Path) -> tuple[Path, str]:
    """The folder's ``config.json`` and its ``...ForXVector`` architecture; an InputError naming the file otherwise."""
    path = folder / "config.json"
    if not folder.is_dir():
        raise InputError(f"{folder}: speaker verifier folder not found (evaluate.speaker_verifier or "
                         "download.speaker_verifier)")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{path}: missing; not a speaker verification model folder in the Hugging Face "
                         "layout") from None
    except (OSError, ValueError) as e:
        raise InputError(f"{path}: cannot be read ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    archs = config.get("architectures") if isinstance(config, dict) else None
    found = [a for a in archs if isinstance(a, str) and a.endswith("ForXVector")] if isinstance(archs, list) else []
    if not found:
        raise InputError(f"{path}: not a speaker verification model (architectures {archs!r}, none ending in "
                         "ForXVector; e.g. WavLMForXVector as in microsoft/wavlm-base-plus-sv)")
    return path, found[0]


def _min_samples(config: Any) -> int:
    """The fewest samples the model embeds: two frames out of its TDNN stack (the statistics pooling takes a
    standard deviation), traced back through its conv feature encoder."""
    frames = 2 + sum((k - 1) * d for k, d in zip(config.tdnn_kernel, config.tdnn_dilation))
    samples = frames
    for kernel, stride in reversed(list(zip(config.conv_kernel, config.conv_stride))):
        samples = (samples - 1) * stride + kernel
    return int(samples)


class XVectorEmbedder:
    """L2-normalised x-vectors of 16 kHz audio from a Hugging Face ``*ForXVector`` model (eval mode, no grad).

    ``name``: the architecture and the folder's name; ``label``: how the report names the judge.
    A clip too short for the model's TDNN stack (about 0.3 s for WavLM base) is padded with silence.
    """

    def __init__(self, model: Any, feature_extractor: Any, architecture: str, name: str,
                 device: str | torch.device = "cpu"):
        self.device = torch.device(device)
        self.model = model.eval().to(self.device)
        self.feature_extractor = feature_extractor
        self.architecture = architecture
        self.name = name
        self.label = f"independent verifier ({architecture})"
        self.min_samples = _min_samples(model.config)

    @torch.no_grad()
    def __call__(self, wave_16k: np.ndarray | torch.Tensor) -> torch.Tensor:
        wave = torch.as_tensor(wave_16k, dtype=torch.float32).reshape(-1).cpu().numpy()
        if len(wave) < self.min_samples:
            wave = np.pad(wave, (0, self.min_samples - len(wave)))
        inputs = self.feature_extractor(wave, sampling_rate=VERIFIER_SR, return_tensors="pt")
        inputs = {k: v.to(self.device) for k, v in inputs.items() if k in ("input_values", "attention_mask")}
        vec = self.model(**inputs).embeddings[0].float()
        return torch.nn.functional.normalize(vec, dim=-1).cpu()

    def similarity(self, wave_16k: np.ndarray, vec: torch.Tensor) -> float:
        """Cosine with ``vec``; 0 for a clip under 0.2 s or a non-finite embedding (as ``SpeakerEmbedder``)."""
        if len(wave_16k) < MIN_EMBED_S * VERIFIER_SR:
            return 0.0
        mine = self(wave_16k)
        return cosine(mine, vec) if bool(torch.isfinite(mine).all()) else 0.0


def open_speaker_verifier(folder: str | Path, device: str | torch.device = "cpu") -> XVectorEmbedder:
    """The ``*ForXVector`` model and feature extractor in ``folder`` (Hugging Face layout, nothing downloaded);
    an InputError naming ``config.json`` when it is missing or names no ``...ForXVector`` architecture."""
    from transformers import AutoFeatureExtractor, AutoModelForAudioXVector
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    root = Path(folder)
    _, architecture = _xvector_architecture(root)
    if not (root / "preprocessor_config.json").is_file():
        raise InputError(f"{root / 'preprocessor_config.json'}: missing; the speaker verifier needs its feature "
                         "extractor's settings")
    try:
        model = AutoModelForAudioXVector.from_pretrained(str(root), local_files_only=True)
        extractor = AutoFeatureExtractor.from_pretrained(str(root), local_files_only=True)
    except (OSError, ValueError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise InputError(f"{root}: cannot load the speaker verifier {architecture} ({first})") from None
    log.info("speaker verifier: %s from %s", architecture, root)
    return XVectorEmbedder(model, extractor, architecture, f"{architecture} ({root.name})", device)


def _rank(seed: int, a: str, b: str) -> str:
    return hashlib.sha256(f"{seed}\0{a}\0{b}".encode()).hexdigest()


def _pick(pairs: list[tuple[int, int]], ids: Sequence[str], max_pairs: int, seed: int) -> list[tuple[int, int]]:
    """The ``max_pairs`` pairs first in the sha256 ranking of their clip ids (ids in sorted order, so a pair
    ranks the same whichever way round it is given)."""
    def key(p: tuple[int, int]) -> str:
        return _rank(seed, *sorted((ids[p[0]], ids[p[1]])))
    return sorted(pairs, key=key)[:max(0, max_pairs)]


def speaker_scale(clips: Sequence[Clip], embed: Callable[[np.ndarray], torch.Tensor], *, max_pairs: int = 64,
                  seed: int = 0, known: Mapping[str, torch.Tensor] | None = None) -> dict[str, dict]:
    """Per language, what ``embed`` scores on real recordings: ``ceiling``, the mean cosine of two different clips
    of one speaker, and ``floor``, that of clips of two different speakers; each ``{"mean": float | None, "n":
    pairs}``.  Pairs are chosen by a sha256 ranking of their clip ids with ``seed``, at most ``max_pairs`` of each
    kind per language; each clip is embedded once.  A language with one speaker has no floor, a speaker with one
    clip no ceiling pair; clips under 0.2 s are left out.  Enumerating the pairs is quadratic in a language's clips:
    pass a sample (the evaluation set's), not a whole corpus.  ``known``: vectors ``embed`` already gave, by clip
    id (not computed again)."""
    by_lang: dict[str, list[tuple[str, str, np.ndarray]]] = defaultdict(list)
    seen: set[tuple[str, str]] = set()
    for language, speaker, clip_id, wave in clips:
        if (language, clip_id) in seen:
            raise InputError(f"speaker scale: clip id {clip_id!r} appears twice in language {language!r}")
        seen.add((language, clip_id))
        if len(wave) < MIN_EMBED_S * VERIFIER_SR:
            log.debug("speaker scale: %s is under %.1f s; left out", clip_id, MIN_EMBED_S)
            continue
        by_lang[language].append((speaker, clip_id, wave))
    out: dict[str, dict] = {}
    for language, rows in sorted(by_lang.items()):
        ids = [clip_id for _, clip_id, _ in rows]
        same, other = [], []
        for i in range(len(rows)):
            for j in range(i + 1, len(rows)):
                (same if rows[i][0] == rows[j][0] else other).append((i, j))
        chosen = {"ceiling": _pick(same, ids, max_pairs, seed), "floor": _pick(other, ids, max_pairs, seed)}
        vectors: dict[int, torch.Tensor] = {}
        for i in sorted({k for pairs in chosen.values() for p in pairs for k in p}):
            vectors[i] = known[ids[i]] if known and ids[i] in known else embed(rows[i][2])
        out[language] = {}
        for kind, pairs in chosen.items():
            scores = [cosine(vectors[i], vectors[j]) for i, j in pairs]
            scores = [s for s in scores if np.isfinite(s)]
            out[language][kind] = {"mean": float(np.mean(scores)) if scores else None, "n": len(scores)}
        log.info("speaker scale %s: ceiling %s (%d pairs), floor %s (%d pairs)", language,
                 out[language]["ceiling"]["mean"], out[language]["ceiling"]["n"], out[language]["floor"]["mean"],
                 out[language]["floor"]["n"])
    return out
