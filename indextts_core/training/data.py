"""Training data: preprocessed clips, prompt/target samples, token-budget batches.

A *sample* is a target clip (its text ids and codes are learned) with a prompt clip (speaker
latents) and an emotion clip (emotion vector).  Samples come from a pair file
(``GPT_pairs_train.jsonl``, seed-compatible) or, with fresh prompts, from a
:class:`~indextts_core.pairs.PairingPolicy` drawing new prompts every epoch.

Batching works in two levels:

* :func:`plan_epoch` cuts an epoch into *optimizer steps* of about ``step_tokens`` padded tokens:
  samples are shuffled (seed, epoch), sorted by length within windows, packed greedily, and the
  steps shuffled.  This depends on the data, the seed and the budget only, never on the hardware.
* :func:`split_micro` cuts one step into micro-batches of at most ``micro_tokens`` padded tokens
  (longest first), which is what fits in memory.  Losses are normalised by the whole step's token
  counts and, with padding at the end of each sample (the default layout, see
  :meth:`~indextts_core.model.unified_voice.UnifiedVoice.forward`), a sample's loss does not
  depend on what it is batched with, so the split does not change the step's gradient.

A sample's cost is ``conds + (text + 2) + (codes + 2)`` positions (conditioning prefix of
:func:`conditioning_positions`, framed text, framed codes); a micro-batch costs ``n x`` its longest
sample (``n x`` its longest text plus its longest codes in the released per-segment layout).

With ``train.replay_share`` set, :func:`mix_replay` resamples each epoch's list first (seed, epoch):
every new-language sample once, the replay languages' samples (base languages the model already
speaks) drawn to about that share of the epoch's tokens.

Which files make up the data (pair file or index manifest, and the manifests behind it) is decided
here too (:func:`is_index`, :func:`manifests_of`).

Every feature shard the rows use is checked by content when the :class:`TrainingSet` opens,
against the sha256 preprocessing recorded in ``preprocess.json`` (``shard_sha256``), before any
step runs: a damaged shard is a :class:`~indextts_core.store.objects.CorruptArtifactError` naming
it.  An index written before shard hashes existed loads with a warning that its shards are unverified.

(Some 510 lines: the sample list, the epoch plan, the micro-batch split and the replay mix all use one
cost model of a sample; split apart, each would have to re-derive it.)
"""

from __future__ import annotations

import hashlib
import json
import random
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch

from indextts_core.errors import InputError
from indextts_core.model.config import GPTConfig
from indextts_core.utils.fileio import read_jsonl, sha256_file
from indextts_core.preprocess.pairs import PairingPolicy
from indextts_core.preprocess.shards import ShardReader, verify_shards
from indextts_core.utils.safe_load import safetensors_load

T = TypeVar("T")
U = TypeVar("U")


@dataclass(frozen=True)
class Sample:
    target: int  # row numbers in TrainingSet.rows
    prompt: int
    emotion: int


def conditioning_positions(cfg: GPTConfig) -> int:
    """Length of the conditioning prefix: the speaker latents (perceiver latents) plus the two speed rows
    (2.5: one CAMPPlus row plus two zero rows)."""
    return (1 if cfg.is_v25 else cfg.condition_num_latent) + 2


def sample_cost(text_len: int, code_len: int, *, conds: int) -> int:
    return conds + text_len + 2 + code_len + 2


def padded_cost(text_lens: Sequence[int], code_lens: Sequence[int], pad_at_end: bool = True, *, conds: int) -> int:
    """Positions a batch computes: ``n x`` its longest sample (padding at the end), or ``n x`` its
    longest text plus its longest codes (the released per-segment padding)."""
    if pad_at_end:
        return len(text_lens) * max(sample_cost(t, c, conds=conds) for t, c in zip(text_lens, code_lens))
    return len(text_lens) * (conds + max(text_lens) + 2 + max(code_lens) + 2)


class TrainingSet:
    """The index rows of one or more preprocessed manifests, with their text ids and feature shards.

    ``conds`` is the model's conditioning prefix length (:func:`conditioning_positions`), part of every cost.
    """

    def __init__(self, manifests: Sequence[Path], feature_dir: Path | None = None, *, conds: int):
        self.conds = conds
        if not manifests:
            raise InputError("no manifests to train on")
        self.manifests = [Path(m) for m in manifests]
        index_dir = self.manifests[0].parent
        meta_path = index_dir / "preprocess.json"
        if not meta_path.is_file():
            raise InputError(f"{index_dir}: no preprocess.json next to {self.manifests[0].name} "
                             "(is this the output of 'indextts-train preprocess'?)")
        self.meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if feature_dir is None:
            ref = self.meta["feature_dir"]
            if ref.startswith("store:"):
                raise InputError(f"{meta_path}: features are in the artifact store ({ref}); pass their local folder")
            feature_dir = index_dir / ref
        self.feature_dir = Path(feature_dir)
        text = safetensors_load(index_dir / "text_ids.safetensors", "text ids of the index")
        self._ids, self._offsets = text["ids"], text["offsets"]
        self.rows: list[dict[str, Any]] = []
        for m in self.manifests:
            self.rows.extend(read_jsonl(m))
        self.by_id = {r["id"]: i for i, r in enumerate(self.rows)}
        if len(self.by_id) != len(self.rows):
            raise InputError(f"duplicate clip ids across {', '.join(map(str, self.manifests))}")
        self._shards: dict[str, ShardReader] = {}
        self._lock = threading.Lock()  # loader threads open shards concurrently
        self.shards_verified = self._verify_shards(meta_path)

    def _verify_shards(self, meta_path: Path) -> bool:
        """Check every shard the rows use against ``preprocess.json``'s hashes (False: some had none)."""
        names = sorted({r["shard"] for r in self.rows if r.get("shard")})
        for name in names:
            if not (self.feature_dir / name).is_file():
                raise InputError(f"feature shard {name} not found in {self.feature_dir} (needed by the index "
                                 f"{self.manifests[0].parent}; are the features where preprocess.json says?)")
        return verify_shards(self.feature_dir, names, self.meta, str(meta_path))

    def max_text_id(self) -> int:
        return int(self._ids.max()) if self._ids.numel() else 0

    def cost(self, s: Sample) -> int:
        r = self.rows[s.target]
        return sample_cost(r["text_len"], r["code_len"], conds=self.conds)

    def _shard(self, name: str) -> ShardReader:
        with self._lock:
            if name not in self._shards:
                path = self.feature_dir / name
                if not path.is_file():
                    raise InputError(f"feature shard {name} not found in {self.feature_dir} (needed by the index "
                                     f"{self.manifests[0].parent}; are the features where preprocess.json says?)")
                self._shards[name] = ShardReader(path)
            return self._shards[name]

    def text_ids(self, i: int) -> torch.Tensor:
        r = self.rows[i]["text_row"]
        return self._ids[self._offsets[r]:self._offsets[r + 1]].long()

    def lang(self, i: int) -> int | None:
        """2.5: the row's ``lang_embedding`` index (as preprocessing framed its text); None for 2.0."""
        return self.rows[i].get("lang")

    def codes(self, i: int) -> torch.Tensor:
        r = self.rows[i]
        return self._shard(r["shard"]).codes(r["row"]).long()

    def speaker_latents(self, i: int) -> torch.Tensor:
        r = self.rows[i]
        return self._shard(r["shard"]).speaker_latents(r["row"]).float()

    def emotion_vector(self, i: int) -> torch.Tensor:
        r = self.rows[i]
        return self._shard(r["shard"]).emotion_vector(r["row"]).float()

    def fingerprint(self, extra: Sequence[Path] = ()) -> str:
        """Hash of the index files (manifests, text ids) and the pair files this data comes from."""
        h = hashlib.sha256()
        files = {*self.manifests, self.manifests[0].parent / "text_ids.safetensors", *map(Path, extra)}
        for p in sorted(files, key=lambda q: (q.name, str(q))):
            h.update(p.name.encode() + sha256_file(p).encode())
        h.update(json.dumps(self.meta.get("shards", []), sort_keys=True).encode())
        return h.hexdigest()


def load_pairs(path: Path, data: TrainingSet) -> list[Sample]:
    """Samples of a pair file; every id must be in ``data``."""
    samples = []
    for lineno, row in enumerate(read_jsonl(path), start=1):
        missing = [k for k in ("target", "prompt", "emotion") if k not in row]
        if missing:
            raise InputError(f"{path}:{lineno}: missing field(s) {', '.join(missing)} (a pair file has target, prompt "
                             "and emotion clip ids; is this the output of 'indextts-train build-pairs'?)")
        try:
            samples.append(Sample(data.by_id[row["target"]], data.by_id[row["prompt"]], data.by_id[row["emotion"]]))
        except KeyError as e:
            raise InputError(f"{path}:{lineno}: clip {e.args[0]!r} is not in the index "
                             f"({', '.join(m.name for m in data.manifests)})") from None
    if not samples:
        raise InputError(f"{path}: no pairs")
    return samples


def is_index(path: Path) -> bool:
    """True for a preprocessed index manifest (rows with a feature shard), False for a pair file."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: not found")
    with path.open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                try:
                    return "shard" in json.loads(line)
                except json.JSONDecodeError:
                    raise InputError(f"{path}:1: not JSON") from None
    raise InputError(f"{path}: empty")


def index_manifests(path: Path) -> list[Path]:
    """An index manifest and the standard manifests next to it (the pool fresh prompts are drawn from)."""
    return [path] + [path.parent / n for n in ("train_manifest.jsonl", "val_manifest.jsonl")
                     if (path.parent / n).is_file() and (path.parent / n).resolve() != path.resolve()]


def manifests_of(path: Path) -> list[Path]:
    """The index manifests behind a pair file or an index manifest."""
    return index_manifests(path) if is_index(path) else pairs_manifests(path)


def pairs_manifests(path: Path) -> list[Path]:
    """The index manifests a pair file refers to (its .json sidecar), or the standard ones next to it."""
    side = path.with_suffix(".json")
    if side.is_file():
        return [path.parent / m for m in json.loads(side.read_text(encoding="utf-8"))["manifests"]]
    found = [path.parent / n for n in ("train_manifest.jsonl", "val_manifest.jsonl") if (path.parent / n).is_file()]
    if not found:
        raise InputError(f"{path}: cannot tell which index it belongs to (no {side.name}, no train_manifest.jsonl "
                         "next to it)")
    return found


def fresh_samples(data: TrainingSet, targets: Sequence[int], policy: PairingPolicy, epoch: int) -> list[Sample]:
    """New prompts for every target, drawn for this epoch from all clips of ``data``."""
    rows = [data.rows[i] for i in targets]
    pairs, _ = policy.pairs(rows, data.rows, epoch=epoch)
    return [Sample(data.by_id[p.target], data.by_id[p.prompt], data.by_id[p.emotion]) for p in pairs]


def _rng(seed: int, epoch: int, salt: str) -> random.Random:
    digest = hashlib.sha256(f"{seed}\x00{epoch}\x00{salt}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def language_base(language: str) -> str:
    """A row's language without its region (``zh-CN`` -> ``zh``), as languages are compared for replay."""
    return str(language).split("-")[0]


def is_replay(language: str, replay: Iterable[str], new: Iterable[str] = ()) -> bool:
    """True for a language of ``replay`` that is not one of the run's ``new`` languages (base codes compared)."""
    base = language_base(language)
    return base in {language_base(x) for x in replay} and base not in {language_base(x) for x in new}


@dataclass(frozen=True)
class ReplayMix:
    """What one epoch's sample list holds of the replay languages (see :func:`mix_replay`)."""

    epoch: int
    new_samples: int  # samples of the new language(s), each kept once
    new_tokens: int
    replay_available: int  # distinct replay samples in the data's list for this epoch
    replay_drawn: int  # replay samples in the epoch (repeats counted)
    replay_tokens: int
    share: float | None  # the share asked for (None: the data's natural mix)

    @property
    def token_share(self) -> float:
        """The replay samples' share of the epoch's tokens (:meth:`TrainingSet.cost`)."""
        return self.replay_tokens / max(1, self.new_tokens + self.replay_tokens)

    def record(self) -> dict[str, Any]:
        """Plain values for ``train.json`` and the run summary."""
        return {"epoch": self.epoch, "new_samples": self.new_samples, "new_tokens": self.new_tokens,
                "replay_available": self.replay_available, "replay_drawn": self.replay_drawn,
                "replay_tokens": self.replay_tokens, "token_share": round(self.token_share, 4)}


def mix_replay(data: TrainingSet, samples: Sequence[Sample], share: float | None, replay: Sequence[str],
               new: Sequence[str], seed: int, epoch: int) -> tuple[list[Sample], ReplayMix]:
    """One epoch's samples with the replay languages at about ``share`` of its tokens.

    Replay samples are those whose target clip's language is in ``replay`` and not in ``new`` (the
    run's languages).  Every other sample is kept once; replay samples are drawn in a seeded order
    (seed, epoch), without replacement while any is left, then again in a new order, for as long as
    a draw brings their tokens closer to ``share / (1 - share)`` of the other samples' tokens (one
    at least when ``share`` > 0).  ``share`` None keeps the list as it is (the natural mix, still
    measured).  A pure function of the data, the seed and the epoch, so a resumed run plans the same
    epochs.  Raises :class:`InputError` when ``share`` is set and the data has no replay sample.
    """
    is_rep = [is_replay(data.rows[s.target]["language"], replay, new) for s in samples]
    kept = [s for s, r in zip(samples, is_rep) if not r]
    pool = [s for s, r in zip(samples, is_rep) if r]
    new_tokens = sum(data.cost(s) for s in kept)
    if share is None:
        mix = ReplayMix(epoch, len(kept), new_tokens, len(pool), len(pool), sum(data.cost(s) for s in pool), None)
        return list(samples), mix
    if not pool or not kept:
        found = sorted({data.rows[s.target]["language"] for s in samples})
        what = "no clip of the replay languages" if not pool else "only replay-language clips"
        raise InputError(f"train.replay_share {share}: the training data has {what} (train.replay_languages: "
                         f"{', '.join(replay) or 'none'}; the run's language: {', '.join(new) or 'unknown'}; "
                         f"languages found: {', '.join(found)}); add the base languages' clips as ingest manifests, "
                         "or leave replay_share unset")
    target = new_tokens * share / (1 - share)
    rng = _rng(seed, epoch, "replay")
    drawn: list[Sample] = []
    tokens = 0
    order: list[Sample] = []
    while target > 0:
        if not order:  # a new pass over the pool: without replacement within it
            order = list(pool)
            rng.shuffle(order)
        cost = data.cost(order[-1])
        if drawn and tokens + cost / 2 > target:  # this draw would move the share away from the target
            break
        drawn.append(order.pop())
        tokens += cost
    return kept + drawn, ReplayMix(epoch, len(kept), new_tokens, len(pool), len(drawn), tokens, share)


def mix_line(mixes: Sequence[ReplayMix], share: float | None) -> str | None:
    """One log line on the replay mix of a run's epochs (None when the data has no replay sample)."""
    if not mixes or not mixes[0].replay_available:
        return None
    shares = ", ".join(f"{100 * m.token_share:.1f}%" for m in mixes)
    if share is None:
        return (f"replay: {mixes[0].replay_available} replay-language samples kept as the data has them ({shares} "
                "of each epoch's tokens; train.replay_share sets a share)")
    drawn = "/".join(str(m.replay_drawn) for m in mixes)
    return (f"replay (train.replay_share {share:.2f}): {drawn} samples drawn per epoch from "
            f"{mixes[0].replay_available} replay-language samples, {shares} of the tokens, beside "
            f"{mixes[0].new_samples} new-language samples")


def _pack(data: TrainingSet, samples: Sequence[Sample], ordered: Sequence[int], budget: int,
          pad_at_end: bool = True) -> list[list[int]]:
    """Greedy packing of ``ordered`` into groups whose padded cost stays within ``budget`` (one sample at least)."""
    groups: list[list[int]] = []
    current: list[int] = []
    max_text = max_code = max_total = 0
    for i in ordered:
        r = data.rows[samples[i].target]
        t, c = max(max_text, r["text_len"]), max(max_code, r["code_len"])
        total = max(max_total, data.cost(samples[i]))
        width = total if pad_at_end else data.conds + t + 2 + c + 2
        if current and (len(current) + 1) * width > budget:
            groups.append(current)
            current, t, c, total = [], r["text_len"], r["code_len"], data.cost(samples[i])
        current.append(i)
        max_text, max_code, max_total = t, c, total
    if current:
        groups.append(current)
    return groups


def plan_epoch(data: TrainingSet, samples: Sequence[Sample], step_tokens: int, seed: int, epoch: int,
               window: int = 512, min_per_step: int = 1, pad_at_end: bool = True) -> list[list[int]]:
    """Optimizer steps for one epoch: lists of indices into ``samples`` (see the module docstring)."""
    order = list(range(len(samples)))
    _rng(seed, epoch, "order").shuffle(order)
    steps: list[list[int]] = []
    for start in range(0, len(order), window):
        chunk = sorted(order[start:start + window], key=lambda i: (-data.cost(samples[i]), i))
        steps.extend(_pack(data, samples, chunk, step_tokens, pad_at_end))
    _rng(seed, epoch, "steps").shuffle(steps)
    if min_per_step > 1:  # every data-parallel rank needs at least one sample per step
        merged: list[list[int]] = []
        for s in steps:
            if merged and len(s) < min_per_step:
                merged[-1] = merged[-1] + s
            else:
                merged.append(s)
        if len(merged) > 1 and len(merged[0]) < min_per_step:
            merged[1] = merged[0] + merged[1]
            merged = merged[1:]
        steps = merged
    return steps


def by_cost(data: TrainingSet, samples: Sequence[Sample], indices: Sequence[int]) -> list[int]:
    """``indices`` longest first (ties by index), the order micro-batches and rank shares are cut in."""
    return sorted(indices, key=lambda i: (-data.cost(samples[i]), i))


def rank_share(data: TrainingSet, samples: Sequence[Sample], step: Sequence[int], rank: int, world: int) -> list[int]:
    """This rank's samples of a step: dealt longest first, so every rank gets a similar amount of work."""
    return by_cost(data, samples, step)[rank::world]


def split_micro(data: TrainingSet, samples: Sequence[Sample], step: Sequence[int], micro_tokens: int,
                pad_at_end: bool = True) -> list[list[int]]:
    """Micro-batches of one step, longest first, each within ``micro_tokens`` (one sample at least)."""
    return _pack(data, samples, by_cost(data, samples, step), micro_tokens, pad_at_end)


def step_counts(data: TrainingSet, samples: Sequence[Sample], step: Sequence[int]) -> tuple[int, int]:
    """Counted (text, mel) target positions of a step: each sample's tokens plus its first stop token."""
    rows = [data.rows[samples[i].target] for i in step]
    return sum(r["text_len"] + 1 for r in rows), sum(r["code_len"] + 1 for r in rows)


def planned_padding(data: TrainingSet, epoch_samples: Sequence[Sequence[Sample]], plans: Sequence[list[list[int]]],
                    micro_tokens: int, pad_at_end: bool = True) -> float:
    """Share of padded positions in the micro-batches of every planned step of a run."""
    real = padded = 0
    for samples, plan in zip(epoch_samples, plans):
        for step in plan:
            for micro in split_micro(data, samples, step, micro_tokens, pad_at_end):
                rows = [data.rows[samples[i].target] for i in micro]
                real += sum(sample_cost(r["text_len"], r["code_len"], conds=data.conds) for r in rows)
                padded += padded_cost([r["text_len"] for r in rows], [r["code_len"] for r in rows], pad_at_end,
                                      conds=data.conds)
    return 1 - real / max(1, padded)


@dataclass
class LoadedSample:
    text_ids: torch.Tensor
    codes: torch.Tensor
    speaker_latents: torch.Tensor
    emotion_vector: torch.Tensor
    language: str
    speaker: str
    ids: tuple[str, str, str]  # target, prompt, emotion clip ids
    lang: int | None = None  # 2.5: the target's lang_embedding row


def load_sample(data: TrainingSet, s: Sample) -> LoadedSample:
    r = data.rows[s.target]
    return LoadedSample(data.text_ids(s.target), data.codes(s.target), data.speaker_latents(s.prompt),
                        data.emotion_vector(s.emotion), r["language"], r["speaker"],
                        (r["id"], data.rows[s.prompt]["id"], data.rows[s.emotion]["id"]), data.lang(s.target))


@dataclass
class Batch:
    speaker_latents: torch.Tensor  # (B, latents, D)
    emotion_vectors: torch.Tensor  # (B, D)
    text_ids: torch.Tensor  # (B, L) padded with 0 (replaced by stop tokens in the model)
    text_lengths: torch.Tensor
    codes: torch.Tensor  # (B, M)
    code_lengths: torch.Tensor
    languages: list[str]
    speakers: list[str]
    sample_ids: list[tuple[str, str, str]]
    real_tokens: int
    padded_tokens: int
    langs: torch.Tensor | None = None  # (B,) 2.5: lang_embedding rows, added to the text as inference adds them

    def to(self, device: torch.device) -> Batch:
        nb = device.type == "cuda"
        return Batch(self.speaker_latents.to(device, non_blocking=nb), self.emotion_vectors.to(device, non_blocking=nb),
                     self.text_ids.to(device, non_blocking=nb), self.text_lengths.to(device),
                     self.codes.to(device, non_blocking=nb), self.code_lengths.to(device), self.languages,
                     self.speakers, self.sample_ids, self.real_tokens, self.padded_tokens,
                     self.langs.to(device) if self.langs is not None else None)


def collate(loaded: Sequence[LoadedSample], pin: bool = False, pad_at_end: bool = True, *, conds: int) -> Batch:
    tl = torch.tensor([len(x.text_ids) for x in loaded])
    cl = torch.tensor([len(x.codes) for x in loaded])
    b = Batch(
        speaker_latents=torch.stack([x.speaker_latents for x in loaded]),
        emotion_vectors=torch.stack([x.emotion_vector for x in loaded]),
        text_ids=torch.nn.utils.rnn.pad_sequence([x.text_ids for x in loaded], batch_first=True),
        text_lengths=tl,
        codes=torch.nn.utils.rnn.pad_sequence([x.codes for x in loaded], batch_first=True),
        code_lengths=cl,
        languages=[x.language for x in loaded],
        speakers=[x.speaker for x in loaded],
        sample_ids=[x.ids for x in loaded],
        real_tokens=int(sum(sample_cost(int(a), int(c), conds=conds) for a, c in zip(tl, cl))),
        padded_tokens=padded_cost(tl.tolist(), cl.tolist(), pad_at_end, conds=conds),
        langs=torch.tensor([x.lang for x in loaded]) if loaded and loaded[0].lang is not None else None,
    )
    if pin:
        b.speaker_latents, b.emotion_vectors = b.speaker_latents.pin_memory(), b.emotion_vectors.pin_memory()
        b.text_ids, b.codes = b.text_ids.pin_memory(), b.codes.pin_memory()
    return b


def prefetch(fn: Callable[[T], U], items: Iterable[T], workers: int, lookahead: int = 4) -> Iterator[U]:
    """``fn(item)`` for every item, in order, computed up to ``lookahead`` items ahead on ``workers`` threads.

    Loading is deterministic (no random generator is touched), so threads change timing only.
    """
    if workers <= 0:
        for item in items:
            yield fn(item)
        return
    from concurrent.futures import Future, ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="indextts-loader") as pool:
        pending: deque[Future[U]] = deque()
        it = iter(items)
        for item in it:
            pending.append(pool.submit(fn, item))
            if len(pending) >= lookahead:
                break
        while pending:
            result = pending.popleft().result()
            for item in it:
                pending.append(pool.submit(fn, item))
                break
            yield result
