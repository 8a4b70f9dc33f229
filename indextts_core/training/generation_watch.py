"""Validation that listens: decode a fixed, seeded subset of validation pairs at every validation.

At step 0 (the base model) and at every validation after, the same pairs are decoded with the
same random streams, so only the model changes between two readings.  Metrics (see
:mod:`indextts_core.generation.metrics`) are logged overall, per language and for seen / unseen
speakers as ``gen/<group>stop_rate`` and so on, with ``gen/items``; the cost is logged apart as
``time/generate_s`` (a timing, not a property of the model).

The cost is bounded: ``train.val_generate`` pairs (spread over the languages), and each item stops
at ``train.val_generate_max_ratio`` times its reference length (plus 10 codes) or at the model's
``max_mel_tokens``, whichever is smaller.  A model that never stops then reads stop rate 0 and
length ratio at the cap on the first validation.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Sequence
from contextlib import nullcontext

import torch
from torch import nn

from indextts_core.config import GenerationConfig
from indextts_core.generation import build_prompt, decode, item_generators
from indextts_core.generation.metrics import NAMES, item_metrics
from indextts_core.training import data as D
from indextts_core.training import distributed as dd

#: How each reading decodes: infer_v2's defaults (what users hear), or greedy (cheapest, no beams).
DECODINGS = {
    "infer_v2": GenerationConfig(),
    "greedy": GenerationConfig(do_sample=False, num_beams=1, repetition_penalty=1.0),
}
#: Items decoded together (bounds memory: beams x items rows in the KV cache).
_BATCH = 8


def pick_pairs(data: D.TrainingSet, samples: Sequence[D.Sample], n: int, seed: int) -> list[D.Sample]:
    """``n`` validation samples, fixed by ``seed``, taken in turn from each language."""
    by_lang: dict[str, list[D.Sample]] = {}
    for s in samples:
        by_lang.setdefault(data.rows[s.target]["language"], []).append(s)
    rng = random.Random(seed)
    for group in by_lang.values():
        rng.shuffle(group)
    picked: list[D.Sample] = []
    while len(picked) < n and any(by_lang.values()):
        for lang in sorted(by_lang):
            if by_lang[lang] and len(picked) < n:
                picked.append(by_lang[lang].pop())
    return picked


class GenerationWatch:
    """The fixed pairs of a run and how their decodes are measured."""

    def __init__(self, data: D.TrainingSet, samples: Sequence[D.Sample], seen_speakers: set[str], n: int,
                 decoding: str, max_ratio: float, seed: int):
        self.data, self.seen_speakers = data, seen_speakers
        self.samples = pick_pairs(data, samples, n, seed)
        self.opts = DECODINGS[decoding].model_copy(update={"seed": seed})
        self.max_ratio = max_ratio
        self.seconds = 0.0

    def __bool__(self) -> bool:
        return bool(self.samples)

    @torch.no_grad()
    def __call__(self, model: nn.Module, dist: dd.Dist, device: torch.device,
                 amp_dtype: torch.dtype | None) -> dict[str, float]:
        start = time.monotonic()
        loaded = [D.load_sample(self.data, s) for s in self.samples]
        languages = sorted({x.language for x in loaded})
        unseen_any = any(x.speaker not in self.seen_speakers for x in loaded)
        groups = ["", *(f"{lang}/" for lang in languages)]
        if unseen_any:
            groups += ["seen_speakers/", "unseen_speakers/"]
        index = {g: k for k, g in enumerate(groups)}
        sums = torch.zeros(len(groups), 1 + len(NAMES), dtype=torch.float64)
        limit = model.cfg.max_mel_tokens
        was_training = model.training
        model.eval()
        try:
            mine = list(range(len(loaded)))[dist.rank::dist.world]
            for at in range(0, len(mine), _BATCH):
                chunk = mine[at:at + _BATCH]
                items = [loaded[k] for k in chunk]
                ref = [len(x.codes) for x in items]
                cap = min(limit, max(math.ceil(self.max_ratio * r) + 10 for r in ref))
                text = torch.nn.utils.rnn.pad_sequence([x.text_ids for x in items], batch_first=True,
                                                       padding_value=model.cfg.stop_text_token)
                with torch.autocast(device.type, dtype=amp_dtype) if amp_dtype is not None else nullcontext():
                    conds = model.conditioning(torch.stack([x.speaker_latents for x in items]).to(device),
                                               torch.stack([x.emotion_vector for x in items]).to(device))
                    langs = torch.tensor([x.lang for x in items], device=device) if items[0].lang is not None \
                        else None  # 2.5: each item's language row, as inference adds it
                    out = decode(model, build_prompt(model, conds, text.to(device), langs), self.opts,
                                 max_new_tokens=cap,
                                 random=[item_generators(self.opts.seed + k, 1)[0] for k in chunk])
                for j, x in enumerate(items):
                    codes = out.item(j).tolist()
                    # an item cut by its own cap (shorter than the batch's) did not stop either
                    own_cap = min(limit, math.ceil(self.max_ratio * ref[j]) + 10)
                    stopped = bool(out.stopped[j]) and len(codes) < own_cap
                    values = item_metrics(codes[:own_cap], stopped, ref[j])
                    member = ["", f"{x.language}/"]
                    if unseen_any:
                        member.append("seen_speakers/" if x.speaker in self.seen_speakers else "unseen_speakers/")
                    for g in member:
                        sums[index[g]] += torch.tensor([1.0, *values], dtype=torch.float64)
        finally:
            model.train(was_training)
        sums = dd.all_reduce_sum(sums.to(device), dist).cpu()
        metrics: dict[str, float] = {}
        for g, k in index.items():
            n, *totals = sums[k].tolist()
            if n:
                metrics |= {f"gen/{g}{name}": total / n for name, total in zip(NAMES, totals)}
        self.seconds = time.monotonic() - start  # the cost, logged apart (it is not a property of the model)
        return metrics | {"gen/items": float(len(loaded))}


def brief(metrics: dict[str, float], seconds: float) -> str:
    if "gen/stop_rate" not in metrics:
        return ""
    return (f"stop rate {metrics['gen/stop_rate']:.2f}, length ratio {metrics['gen/length_ratio']:.2f}, longest "
            f"run {metrics['gen/longest_run']:.1f}, repeated 4-grams {metrics['gen/repeated_4gram']:.2f} "
            f"({int(metrics['gen/items'])} pairs, {seconds:.1f} s)")
