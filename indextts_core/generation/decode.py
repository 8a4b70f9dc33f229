"""Generating semantic codes with the GPT, as the official ``inference_speech`` does, with a KV cache.

One prompt pass encodes ``[pad][conds][text]`` plus the ``start_mel`` token; each later step feeds
one code.  Exactly as released (``GPT2InferenceModel``), the k-th generated code (k >= 1) is fed
with mel position **k + 1** (the training layout uses k): an exported model is judged the way the
official inference will run it.

Options and their meaning follow transformers' ``generate`` as infer_v2 calls it (see
:class:`~indextts_core.config.GenerationConfig`): greedy or sampling (temperature, top-k, top-p;
the repetition penalty first), beam search or beam sampling with ``2 * num_beams`` candidates per
step, finished hypotheses kept in a best-``num_beams`` list scored ``sum_logprobs / len **
length_penalty``, the repetition penalty applied to every code already in the sequence including
the prompt's placeholder ids (1 and ``start_mel``), and the stop code doubling as padding after an
item's end.

``random``: None uses torch's global generator (as infer_v2 does); one ``torch.Generator`` is
shared by the batch (official batching); a list gives every item its own stream, so an item
decodes the same codes alone or in any batch (``GenerationConfig.batch_exact``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from indextts_core.generation.prompt import Prompt
from indextts_core.model.gpt2 import KV
from indextts_core.model.unified_voice import UnifiedVoice

if TYPE_CHECKING:
    from indextts_core.config import GenerationConfig

Random = torch.Generator | list[torch.Generator] | None


@dataclass
class Decoded:
    """Generated codes of a batch, trimmed as infer_v2 trims them."""

    codes: torch.Tensor  # (B, T): codes up to the longest item's stop, stop-padded after each item's end
    lengths: torch.Tensor  # (B,): codes before the first stop code
    stopped: torch.Tensor  # (B,) bool: the item produced the stop code within the limit
    sequences: torch.Tensor  # (B, N): the raw generated sequences, as transformers returns them
    logits: torch.Tensor | None = None  # (B, N, V) raw logits of each step (greedy / sampling, on request)
    scores: torch.Tensor | None = None  # (B,) beam search: the chosen hypothesis' score

    def item(self, i: int) -> torch.Tensor:
        """Item ``i``'s codes without the stop code and padding."""
        return self.codes[i, : int(self.lengths[i])]


def trim_at_stop(sequences: torch.Tensor, stop: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """infer_v2's trimming: (codes cut to the longest item, lengths before the first stop, stopped)."""
    is_stop = sequences == stop
    stopped = is_stop.any(dim=1)
    first = torch.where(stopped, is_stop.int().argmax(dim=1), torch.full_like(stopped, sequences.size(1),
                                                                              dtype=torch.long))
    return sequences[:, : int(first.max()) if len(first) else 0], first, stopped


class _Stepper:
    """The GPT with its KV cache over a batch of prompts (rows may be repeated for beams)."""

    def __init__(self, model: UnifiedVoice, prompt: Prompt, repeat: int, use_cache: bool = True):
        self.model, self.use_cache = model, use_cache
        cfg = model.cfg
        embeds = prompt.embeds.repeat_interleave(repeat, 0)
        valid = prompt.valid.repeat_interleave(repeat, 0)
        start = model.mel_embedding.weight[cfg.start_mel_token] + model.mel_pos_embedding.emb.weight[0]
        x = torch.cat((embeds, start.expand(embeds.size(0), 1, -1)), dim=1)
        self.valid = F.pad(valid, (0, 1), value=True)
        n = x.size(1)
        causal = torch.ones(n, n, dtype=torch.bool, device=x.device).tril()
        mask = causal[None] & self.valid[:, None, :]
        mask |= torch.eye(n, dtype=torch.bool, device=x.device)[None]  # padding rows see themselves: no NaN
        self.inputs = x if not use_cache else None  # the no-cache path re-runs everything
        self.cache: list[KV] | None = None
        self.fed = 1  # mel tokens fed so far (start_mel)
        self.logits = self._run(x, mask[:, None])

    def _run(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h, cache = self.model.gpt.step(x, self.cache if self.use_cache else None, mask)
        if self.use_cache:
            self.cache = cache
        return self.model.mel_head(self.model.final_norm(h[:, -1]))

    def feed(self, tokens: torch.Tensor) -> torch.Tensor:
        """Append one code per row; the logits of the next step (rows, V)."""
        pos_table = self.model.mel_pos_embedding.emb.weight
        pos = self.fed + 1  # the official decode's position for the k-th code: k + 1
        if pos >= pos_table.size(0):
            raise ValueError(f"decoding past the mel position table ({pos_table.size(0)} rows): lower max_mel_tokens")
        emb = (self.model.mel_embedding(tokens) + pos_table[pos])[:, None]
        self.valid = F.pad(self.valid, (0, 1), value=True)
        self.fed += 1
        if self.use_cache:
            return self._run(emb, self.valid[:, None, None, :])
        assert self.inputs is not None
        self.inputs = torch.cat((self.inputs, emb), dim=1)
        n = self.inputs.size(1)
        mask = torch.ones(n, n, dtype=torch.bool, device=emb.device).tril()[None] & self.valid[:, None, :]
        mask |= torch.eye(n, dtype=torch.bool, device=emb.device)[None]
        return self._run(self.inputs, mask[:, None])

    def reorder(self, rows: torch.Tensor) -> None:
        self.valid = self.valid[rows]
        if self.inputs is not None:
            self.inputs = self.inputs[rows]
        if self.cache is not None:
            self.cache = [(k[rows], v[rows]) for k, v in self.cache]


# ---------------------------------------------------------------------------------------- scores


def _repetition_penalty(scores: torch.Tensor, history: torch.Tensor, penalty: float) -> torch.Tensor:
    if penalty == 1.0:
        return scores
    seen = scores.gather(1, history)
    return scores.scatter(1, history, torch.where(seen < 0, seen * penalty, seen / penalty))


def _top_k(scores: torch.Tensor, k: int, keep: int) -> torch.Tensor:
    k = min(max(k, keep), scores.size(-1))
    kth = torch.topk(scores, k).values[..., -1, None]
    return scores.masked_fill(scores < kth, -float("inf"))


def _top_p(scores: torch.Tensor, p: float, keep: int) -> torch.Tensor:
    ordered, order = torch.sort(scores, descending=False)
    cumulative = ordered.softmax(dim=-1).cumsum(dim=-1)
    drop = cumulative <= (1 - p)
    drop[..., -keep:] = False
    return scores.masked_fill(drop.scatter(1, order, drop), -float("inf"))


def process_scores(scores: torch.Tensor, history: torch.Tensor, opts: GenerationConfig, keep: int) -> torch.Tensor:
    """transformers' logits processors in its order: repetition penalty, then temperature, top-k, top-p."""
    scores = _repetition_penalty(scores, history, opts.repetition_penalty)
    if opts.do_sample:
        if opts.temperature != 1.0:
            scores = scores / opts.temperature
        if opts.top_k:
            scores = _top_k(scores, opts.top_k, keep)
        if opts.top_p < 1.0:
            scores = _top_p(scores, opts.top_p, keep)
    return scores


def _draw(probs: torch.Tensor, n: int, random: Random) -> torch.Tensor:
    if isinstance(random, list):
        return torch.cat([torch.multinomial(probs[i:i + 1], n, generator=g) for i, g in enumerate(random)])
    return torch.multinomial(probs, n, generator=random)


# ---------------------------------------------------------------------------------------- search


def _sample_or_greedy(step: _Stepper, history: torch.Tensor, opts: GenerationConfig, max_new: int, stop: int,
                      random: Random, record_logits: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    b = history.size(0)
    unfinished = torch.ones(b, dtype=torch.bool, device=history.device)
    out, raw_logits = [], []
    logits = step.logits
    for t in range(max_new):
        raw = logits.float()
        if record_logits:
            raw_logits.append(raw)
        scores = process_scores(raw, history, opts, keep=1)
        if opts.do_sample:
            token = _draw(scores.softmax(dim=-1), 1, random).squeeze(1)
        else:
            token = scores.argmax(dim=-1)
        token = torch.where(unfinished, token, torch.full_like(token, stop))
        out.append(token)
        history = torch.cat((history, token[:, None]), dim=1)
        unfinished &= token != stop
        if not unfinished.any() or t == max_new - 1:
            break
        logits = step.feed(token)
    return torch.stack(out, dim=1), (torch.stack(raw_logits, dim=1) if record_logits else None)


class _Hypotheses:
    """The best ``n`` finished hypotheses of one item (transformers' ``BeamHypotheses``, early_stopping=False)."""

    def __init__(self, n: int, length_penalty: float):
        self.n, self.length_penalty = n, length_penalty
        self.beams: list[tuple[float, torch.Tensor]] = []
        self.worst = 1e9

    def add(self, tokens: torch.Tensor, sum_logprobs: float, generated_len: int) -> None:
        score = sum_logprobs / (generated_len ** self.length_penalty)
        if len(self.beams) < self.n or score > self.worst:
            self.beams.append((score, tokens))
            if len(self.beams) > self.n:
                ranked = sorted((s, i) for i, (s, _) in enumerate(self.beams))
                del self.beams[ranked[0][1]]
                self.worst = ranked[1][0]
            else:
                self.worst = min(score, self.worst)

    def is_done(self, best_sum_logprobs: float, generated_len: int) -> bool:
        if len(self.beams) < self.n:
            return False
        return self.worst >= best_sum_logprobs / (generated_len ** self.length_penalty)

    def best(self) -> tuple[float, torch.Tensor]:
        return sorted(self.beams, key=lambda x: x[0])[-1]


def _beam_search(step: _Stepper, history: torch.Tensor, opts: GenerationConfig, max_new: int, stop: int,
                 random: Random) -> tuple[torch.Tensor, torch.Tensor]:
    n = opts.num_beams
    rows = history.size(0)  # items * beams
    b = rows // n
    beam_scores = torch.zeros(b, n, device=history.device)
    beam_scores[:, 1:] = -1e9
    beam_scores = beam_scores.view(-1)
    hyps = [_Hypotheses(n, opts.length_penalty) for _ in range(b)]
    done = [False] * b
    seqs = history.new_zeros(rows, 0)
    logits = step.logits
    vocab = logits.size(-1)
    for t in range(max_new):
        scores = process_scores(F.log_softmax(logits.float(), dim=-1), history, opts, keep=2)
        flat = (scores + beam_scores[:, None]).view(b, n * vocab)
        if opts.do_sample:
            picked = _draw(flat.softmax(dim=-1), 2 * n, random)
            cand = flat.gather(1, picked)
            cand, order = cand.sort(dim=1, descending=True)
            picked = picked.gather(1, order)
        else:
            cand, picked = flat.topk(2 * n, dim=1)
        source, token = picked // vocab, picked % vocab
        next_scores = torch.zeros(b, n, device=flat.device)
        next_tokens = torch.full((b, n), stop, dtype=torch.long, device=flat.device)
        next_rows = torch.arange(rows, device=flat.device).view(b, n).clone()
        for i in range(b):
            if done[i]:
                continue
            j = 0
            for rank in range(2 * n):
                tok, score, row = int(token[i, rank]), float(cand[i, rank]), i * n + int(source[i, rank])
                if tok == stop:
                    if rank < n:
                        hyps[i].add(seqs[row].clone(), score, t + 1)
                else:
                    next_scores[i, j], next_tokens[i, j], next_rows[i, j] = cand[i, rank], tok, row
                    j += 1
                if j == n:
                    break
            done[i] = done[i] or hyps[i].is_done(float(cand[i].max()), t + 1)
        beam_scores, chosen = next_scores.view(-1), next_rows.view(-1)
        seqs = torch.cat((seqs[chosen], next_tokens.view(-1, 1)), dim=1)
        history = torch.cat((history[chosen], next_tokens.view(-1, 1)), dim=1)
        step.reorder(chosen)
        if all(done) or t == max_new - 1:
            break
        logits = step.feed(next_tokens.view(-1))
    for i in range(b):
        if not done[i]:
            for j in range(n):
                hyps[i].add(seqs[i * n + j], float(beam_scores[i * n + j]), seqs.size(1))
    best = [h.best() for h in hyps]
    longest = max(len(tokens) for _, tokens in best)
    out = seqs.new_full((b, min(longest + 1, max_new)), stop)
    for i, (_, tokens) in enumerate(best):
        out[i, : len(tokens)] = tokens
    return out, torch.tensor([s for s, _ in best])


@torch.no_grad()
def decode(model: UnifiedVoice, prompt: Prompt, opts: GenerationConfig, *, random: Random = None,
           max_new_tokens: int | None = None, record_logits: bool = False, use_cache: bool = True) -> Decoded:
    """Generate codes for every prompt of the batch (the model must be in eval mode).

    ``max_new_tokens`` caps this call below ``opts.max_mel_tokens`` (validation bounds its cost);
    ``record_logits`` keeps each step's raw logits (greedy and sampling); ``use_cache=False``
    recomputes the whole sequence at every step (the slow reference the KV cache is measured
    against).
    """
    cfg = model.cfg
    max_new = min(opts.max_mel_tokens, max_new_tokens or opts.max_mel_tokens)
    beams = opts.num_beams
    step = _Stepper(model, prompt, beams, use_cache)
    b = prompt.embeds.size(0)
    # the placeholder ids transformers sees for the prompt: 1s and start_mel (the repetition penalty sees them)
    history = torch.tensor([[1, cfg.start_mel_token]], device=prompt.embeds.device).expand(b * beams, 2)
    if beams > 1:
        sequences, scores = _beam_search(step, history, opts, max_new, cfg.stop_mel_token, random)
        logits = None
    else:
        sequences, logits = _sample_or_greedy(step, history, opts, max_new, cfg.stop_mel_token, random,
                                              record_logits)
        scores = None
    codes, lengths, stopped = trim_at_stop(sequences, cfg.stop_mel_token)
    return Decoded(codes, lengths, stopped, sequences, logits, scores)


def item_generators(seed: int, n: int) -> list[torch.Generator]:
    """One random stream per item: item i of any batch draws from seed + i."""
    return [torch.Generator().manual_seed(seed + i) for i in range(n)]
