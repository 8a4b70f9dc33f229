"""The emotion probe: does a model still carry an emotion prompt's emotion into its speech?

With ``evaluate.emotion_prompt`` set, every evaluated model says the first ``evaluate.emotion_items`` ``seen``
items of each language (:func:`~indextts_core.evaluation.evalset.emotion_probe_items`) twice with the item's seed:
*neutral*, with the speaker prompt alone (the emotion comes from the speaker prompt, infer_v2's default: the very
output of the main evaluation pass, same seed and settings), and *emotional*, with the emotion prompt's
Wav2Vec2-BERT features as ``emo_feats`` (what ``synthesize --emotion-prompt`` does).  Per item (both outputs
speech; an output that is not speech gets no figures and is counted):

* ``f0_mean_delta``, ``f0_range_delta`` (Hz) and ``energy_range_delta`` (dB): emotional minus neutral
  (:mod:`~indextts_core.evaluation.prosody`);
* ``toward``: ``1 - dist(emotional, prompt) / dist(neutral, prompt)`` on the prosody vector (F0 mean, F0 range,
  energy range), each feature's difference divided by the prompt's value (:func:`prosody_distance`): 0 = no
  closer than the neutral output, 1 = the prompt's prosody, negative = farther;
* ``emotion_sim_gain``: ``cos(emotional, prompt) - cos(neutral, prompt)`` of the emotion vectors the model itself
  computes for a clip (:func:`emotion_vector`: the clip on the emotion path, the GPT's emotion encoder, as
  ``merge_emovec`` computes them), labelled :data:`EMOTION_ENCODER_LABEL`: the model's own reading, not an
  independent judge.

:func:`summarise_probe` gives per model and language the mean figures and their counts, and ``transfer_kept``:
each model's mean ``toward`` over the base model's (None when the base does not move toward the prompt).
"""

from __future__ import annotations

import logging
import math
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from indextts_core.errors import InputError
from indextts_core.evaluation.evalset import EvalItem
from indextts_core.evaluation.prosody import Prosody, finite_or_none, prosody
from indextts_core.evaluation.scoring import cosine
from indextts_core.evaluation.speech import not_speech

log = logging.getLogger(__name__)

#: The prosody features ``toward`` compares.
FEATURES = ("f0_mean", "f0_range", "energy_range")
#: The per-item transfer figures, in the report's order.
FIGURES = ("f0_mean_delta", "f0_range_delta", "energy_range_delta", "toward", "emotion_sim_gain")
EMOTION_ENCODER_LABEL = "the model's own emotion encoder"
#: The model the others' transfer is compared with.
BASELINE = "base"
#: A prompt feature smaller than this (in its units) is not divided by (its difference is taken as it is).
MIN_SCALE = 1e-6


def prosody_distance(a: Prosody, prompt: Prosody) -> float | None:
    """The RMS over :data:`FEATURES` of ``(a - prompt) / |prompt|`` (each feature relative to the prompt's own
    value, so Hz and dB weigh alike); None when a feature is missing on either side."""
    parts = []
    for f in FEATURES:
        x, p = getattr(a, f), getattr(prompt, f)
        if x is None or p is None:
            return None
        parts.append((x - p) / max(abs(p), MIN_SCALE))
    return float(math.sqrt(sum(d * d for d in parts) / len(parts)))


def transfer_figures(neutral: Prosody, emotional: Prosody, prompt: Prosody,
                     vectors: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None) -> dict[str, float | None]:
    """The figures of one item from its neutral and emotional outputs and the prompt (see the module docstring).
    ``vectors``: the model's emotion vectors of (neutral, emotional, prompt); None: no ``emotion_sim_*``."""
    out: dict[str, float | None] = {}
    for f in FEATURES:
        a, b = getattr(neutral, f), getattr(emotional, f)
        out[f"{f}_delta"] = None if a is None or b is None else float(b - a)
    before, after = prosody_distance(neutral, prompt), prosody_distance(emotional, prompt)
    out["toward"] = 1.0 - after / before if before is not None and after is not None and before > 0 else None
    if vectors is not None:
        neu, emo, ref = vectors
        out["emotion_sim_neutral"], out["emotion_sim_emotional"] = cosine(neu, ref), cosine(emo, ref)
        out["emotion_sim_gain"] = out["emotion_sim_emotional"] - out["emotion_sim_neutral"]
    else:
        out["emotion_sim_gain"] = None
    return {k: finite_or_none(v) for k, v in out.items()}


@torch.no_grad()
def emotion_vector(synth: Any, source: Path | bytes, name: str | None = None) -> torch.Tensor | None:
    """The emotion vector a model computes for a clip: read on the emotion path (16 kHz, 15 s; the
    :class:`~indextts_core.synthesis.run.Synthesizer`'s ``emotion``), then the GPT's ``emotion_vector`` with the
    feature width as length, as ``merge_emovec`` does in inference.  None for a clip the emotion path refuses."""
    from indextts_core.synthesis.chain import INFER_LENGTH

    try:
        feats = synth.emotion(source, name, warn=False)
    except InputError as e:
        log.warning("emotion probe: no emotion vector: %s", e)
        return None
    return synth.models.gpt.emotion_vector(feats, torch.tensor([INFER_LENGTH]))[0].float().cpu()


def probe_model(synth: Any, name: str, chosen: Sequence[tuple[int, EvalItem]], neutral: Mapping[str, Any],
                states: Mapping[str, Any], prompt_bytes: bytes, prompt_name: str, prompt_prosody: Prosody,
                out_dir: Path, seed: int, *, limit_of: Callable[[EvalItem], int | None],
                wave_16k: Callable[[torch.Tensor], np.ndarray]) -> list[dict[str, Any]]:
    """One model's probe rows: each chosen ``(k, item)`` said with the emotion prompt (seed ``seed + k``, the same
    code limit as the main pass, ``limit_of(item)``), next to its neutral output ``neutral[item.id]`` (the main
    pass's :class:`~indextts_core.synthesis.run.Spoken`); both wavs under ``out_dir/audio/emotion/<name>/``."""
    from indextts_core.synthesis.chain import write_wav

    folder = out_dir / "audio" / "emotion" / name
    emo_feats = synth.emotion(prompt_bytes, prompt_name)
    prompt_vec = emotion_vector(synth, prompt_bytes, prompt_name)
    rows = []
    for k, item in chosen:
        t = time.monotonic()
        random = torch.Generator(device=synth.device).manual_seed(seed + k)
        spoken = synth.speak(item.text, item.language, states[item.prompt_audio], random, emo_feats=emo_feats,
                             max_mel_tokens=limit_of(item), where=f"emotion probe item {item.id}")
        calm = neutral[item.id]
        paths = {"neutral": write_wav(calm.pcm, folder / f"{item.id}-neutral.wav"),
                 "emotional": write_wav(spoken.pcm, folder / f"{item.id}-emotional.wav")}
        waves = {"neutral": wave_16k(calm.pcm), "emotional": wave_16k(spoken.pcm)}
        why = {"neutral": not_speech(waves["neutral"], calm.stopped),
               "emotional": not_speech(waves["emotional"], spoken.stopped)}
        row: dict[str, Any] = {"model": name, "id": item.id, "language": item.language, "group": item.group,
                               "text": item.text, "prompt_id": item.prompt_id, "emotion_prompt": prompt_name,
                               **{f"{side}_wav": p.relative_to(out_dir).as_posix() for side, p in paths.items()},
                               **{f"{side}_not_speech": w for side, w in why.items()},
                               "scored": why["neutral"] is None and why["emotional"] is None}
        if row["scored"]:
            said = {side: prosody(w) for side, w in waves.items()}
            vecs = [emotion_vector(synth, paths["neutral"]), emotion_vector(synth, paths["emotional"]), prompt_vec]
            row |= {f"{side}_{k2}": v for side, p in said.items() for k2, v in p.as_dict().items()}
            row |= transfer_figures(said["neutral"], said["emotional"], prompt_prosody,
                                    tuple(vecs) if all(v is not None for v in vecs) else None)  # type: ignore[arg-type]
        row["seconds"] = round(time.monotonic() - t, 3)
        rows.append(row)
    return rows


def _mean(values: Sequence[float]) -> float | None:
    return float(np.mean(values)) if values else None


def summarise_probe(rows: Sequence[Mapping[str, Any]], models: Sequence[str], baseline: str = BASELINE
                    ) -> dict[str, Any]:
    """Per model and language (and ``all``): ``items``, ``scored``, ``not_speech`` (items with an output that is
    not speech), the mean of each of :data:`FIGURES` over the scored items that have it (None without any) and
    ``n`` of each (``n_<figure>``); ``transfer_kept[model][language]``: the model's mean ``toward`` over the
    ``baseline``'s (None when either is missing or the baseline's is not above 0), for every other model."""
    groups: dict[tuple[str, str], list[Mapping[str, Any]]] = defaultdict(list)
    for r in rows:
        groups[(r["model"], r["language"])].append(r)
        groups[(r["model"], "all")].append(r)
    by_model: dict[str, dict[str, dict[str, Any]]] = {m: {} for m in models if any(r["model"] == m for r in rows)}
    for (model, lang), rs in sorted(groups.items()):
        scored = [r for r in rs if r.get("scored")]
        entry: dict[str, Any] = {"items": len(rs), "scored": len(scored), "not_speech": len(rs) - len(scored)}
        for f in FIGURES:
            values = [float(r[f]) for r in scored if r.get(f) is not None]
            entry[f], entry[f"n_{f}"] = _mean(values), len(values)
        by_model.setdefault(model, {})[lang] = entry
    kept: dict[str, dict[str, float | None]] = {}
    base = by_model.get(baseline, {})
    for model, langs in by_model.items():
        if model == baseline or not base:
            continue
        kept[model] = {}
        for lang, entry in langs.items():
            ref = (base.get(lang) or {}).get("toward")
            ours = entry.get("toward")
            kept[model][lang] = ours / ref if ours is not None and ref is not None and ref > 0 else None
    return {"by_model": by_model, "transfer_kept": kept, "baseline": baseline if base else None,
            "encoder_label": EMOTION_ENCODER_LABEL}
