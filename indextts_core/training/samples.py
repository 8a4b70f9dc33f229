"""The samples of a run: the pair file's, or fresh prompts drawn for the same targets every epoch; and validation's."""

from __future__ import annotations

from pathlib import Path

from indextts_core.errors import InputError
from indextts_core.preprocess.pairs import PairingPolicy
from indextts_core.training import data as D
from indextts_core.utils.fileio import read_jsonl


class SampleSource:
    """Training samples per epoch: the pair file's, or fresh prompts for the same targets every epoch."""

    def __init__(self, data: D.TrainingSet, path: Path, fresh: bool, policy: PairingPolicy):
        self.data, self.policy = data, policy
        is_index = D.is_index(path)
        self.fresh = fresh or is_index
        self.pairs: list[D.Sample] | None = None
        if is_index:
            self.targets = [data.by_id[r["id"]] for r in read_jsonl(path)]
        else:
            self.pairs = D.load_pairs(path, data)
            seen: dict[int, None] = {}
            for s in self.pairs:
                seen.setdefault(s.target, None)
            self.targets = list(seen)
        if not self.targets:
            raise InputError(f"{path}: nothing to train on")

    def epoch(self, e: int) -> list[D.Sample]:
        if not self.fresh:
            assert self.pairs is not None
            return self.pairs
        samples = D.fresh_samples(self.data, self.targets, self.policy, e)
        if not samples:
            raise InputError("fresh prompts: no target could be paired (every speaker has a single clip?)")
        return samples

    def seen_speakers(self) -> set[str]:
        return {self.data.rows[t]["speaker"] for t in self.targets}


def validation_samples(data: D.TrainingSet, path: Path | None, policy: PairingPolicy) -> list[D.Sample]:
    """The validation samples: a pair file's, or (an index manifest) the epoch-0 prompts of ``policy``; none."""
    if path is None:
        return []
    if D.is_index(path):
        targets = [data.by_id[r["id"]] for r in read_jsonl(path)]
        return D.fresh_samples(data, targets, policy, 0)
    return D.load_pairs(Path(path), data)


def open_data(train: Path, val: Path | None, feature_dir: Path | None, conds: int) -> D.TrainingSet:
    """The training set behind the train and validation files (their manifests, without duplicates)."""
    manifests = D.manifests_of(train)
    if val is not None:
        manifests += [m for m in D.manifests_of(val) if m.resolve() not in {x.resolve() for x in manifests}]
    return D.TrainingSet(manifests, feature_dir, conds=conds)
