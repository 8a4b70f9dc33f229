"""Prompt/target pairs: each target clip is conditioned on *other* clips of its speaker.

Training on a clip conditioned on itself teaches the model to copy the prompt (the community's
"prompt bleeding"); every target here gets ``pairs_per_target`` prompts drawn from the other clips
of the same speaker.  The emotion vector comes from the prompt (default), the target, or either at
random (``mix``).  A speaker with a single clip cannot be paired: it is reported and skipped, unless
``allow_self_prompt`` lets that clip prompt itself.

:class:`PairingPolicy` is deterministic for a seed and an epoch, so the same object writes the pair
files (epoch 0) and gives the trainer fresh prompts every epoch (epoch 1, 2, ...).
"""

from __future__ import annotations

import hashlib
import random
import statistics
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from indextts_core.config import PairsConfig

from indextts_core.utils.fileio import atomic_write, read_jsonl, write_json, write_jsonl

#: Bump when the pair files change for the same inputs (invalidates cached results).
STAGE_VERSION = "1"


@dataclass(frozen=True)
class Pair:
    target: str  # clip id: text ids and codes to learn
    prompt: str  # clip id: speaker latents
    emotion: str  # clip id: emotion vector
    speaker: str
    language: str


@dataclass
class PairingStats:
    targets: int = 0
    pairs: int = 0
    per_speaker: dict[str, int] = field(default_factory=dict)
    skipped_speakers: dict[str, int] = field(default_factory=dict)  # speaker -> clips left unpaired
    self_prompted: int = 0
    short_of_prompts: int = 0  # targets with fewer other clips than pairs_per_target
    imbalance: float = 0.0  # most pairs of one speaker / median
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class PairingPolicy:
    """How prompts are drawn: the ``pairs:`` section of the run configuration plus the run's seed."""

    config: PairsConfig = field(default_factory=PairsConfig)
    seed: int = 1234
    mix_target_share: ClassVar[float] = 0.5
    imbalance_warning: ClassVar[float] = 5.0

    def _rng(self, epoch: int, target: str) -> random.Random:
        digest = hashlib.sha256(f"{self.seed}\x00{epoch}\x00{target}".encode()).digest()
        return random.Random(int.from_bytes(digest[:8], "big"))

    def pairs(self, targets: Sequence[Mapping[str, Any]], pool: Sequence[Mapping[str, Any]] | None = None,
              epoch: int = 0) -> tuple[list[Pair], PairingStats]:
        """Pairs for ``targets`` with prompts from ``pool`` (default: the targets themselves).

        Rows need ``id``, ``speaker`` and ``language``.  Deterministic for (seed, epoch, ids).
        """
        pool = targets if pool is None else pool
        by_speaker: dict[str, list[str]] = defaultdict(list)
        for row in pool:
            by_speaker[row["speaker"]].append(row["id"])
        for ids in by_speaker.values():
            ids.sort()
        stats = PairingStats(targets=len(targets))
        per_speaker: Counter[str] = Counter()
        out: list[Pair] = []
        for row in targets:
            tid, spk = row["id"], row["speaker"]
            others = [i for i in by_speaker.get(spk, []) if i != tid]
            rng = self._rng(epoch, tid)
            if not others:
                if not self.config.allow_self_prompt:
                    stats.skipped_speakers[spk] = stats.skipped_speakers.get(spk, 0) + 1
                    continue
                prompts = [tid]
                stats.self_prompted += 1
            else:
                k = min(self.config.pairs_per_target, len(others))
                if k < self.config.pairs_per_target:
                    stats.short_of_prompts += 1
                prompts = rng.sample(others, k)
            for prompt in prompts:
                if self.config.emotion_source == "prompt":
                    emotion = prompt
                elif self.config.emotion_source == "target":
                    emotion = tid
                else:
                    emotion = tid if rng.random() < self.mix_target_share else prompt
                out.append(Pair(tid, prompt, emotion, spk, row["language"]))
                per_speaker[spk] += 1
        stats.pairs = len(out)
        stats.per_speaker = dict(sorted(per_speaker.items()))
        if per_speaker:
            stats.imbalance = round(max(per_speaker.values()) / statistics.median(per_speaker.values()), 3)
            if stats.imbalance > self.imbalance_warning:
                top = max(per_speaker, key=per_speaker.__getitem__)
                stats.warnings.append(f"speaker imbalance: {top} has {per_speaker[top]} pairs, "
                                      f"{stats.imbalance:.1f}x the median speaker")
        if stats.skipped_speakers:
            stats.warnings.append(f"{len(stats.skipped_speakers)} speaker(s) with a single clip skipped "
                                  f"({', '.join(sorted(stats.skipped_speakers)[:10])}); allow_self_prompt pairs them "
                                  "with themselves")
        return out, stats


@dataclass
class PairsResult:
    path: Path
    report_json: Path
    report_md: Path
    stats: PairingStats


def build_pairs(index: Path, output: Path, policy: PairingPolicy, prompt_pool: Sequence[Path] = ()) -> PairsResult:
    """Write the pairs of the targets in ``index`` (a preprocessed manifest) to ``output`` (JSONL).

    Prompts come from ``index`` and every manifest of ``prompt_pool`` (e.g. train and val).  Next to
    ``output`` go ``<output stem>.json`` (the manifests the ids refer to, relative to ``output``;
    the policy; the statistics) and ``<output stem>.md``.
    """
    targets = read_jsonl(index)
    pool_paths = [index] + [p for p in prompt_pool if Path(p).resolve() != Path(index).resolve()]
    pool = [row for p in pool_paths for row in read_jsonl(p)]
    pairs, stats = policy.pairs(targets, pool)
    write_jsonl(output, [asdict(p) for p in pairs])
    report_json, report_md = output.with_suffix(".json"), output.with_suffix(".md")
    import os

    write_json(report_json, {
        "format": "indextts-pairs/1",
        "manifests": [os.path.relpath(p, output.parent) for p in pool_paths],
        "policy": asdict(policy), "stats": asdict(stats),
    })
    lines = [f"# Pairs: {output.name}", "", f"- targets: {stats.targets}, pairs: {stats.pairs} "
             f"({policy.config.pairs_per_target} per target, emotion from {policy.config.emotion_source})",
             f"- speakers paired: {len(stats.per_speaker)}; skipped (single clip): {len(stats.skipped_speakers)}; "
             f"self-prompted: {stats.self_prompted}; targets short of prompts: {stats.short_of_prompts}",
             f"- imbalance (most / median pairs per speaker): {stats.imbalance}"]
    lines += [f"- warning: {w}" for w in stats.warnings]
    lines += ["", "| speaker | pairs |", "|---|---:|"] + [f"| {k} | {v} |" for k, v in stats.per_speaker.items()]
    with atomic_write(report_md) as f:
        f.write("\n".join(lines) + "\n")
    return PairsResult(output, report_json, report_md, stats)
