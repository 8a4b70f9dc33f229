"""Tokenizer extension: append a new language's pieces to the base SentencePiece model.

Input is front-end text (see :mod:`indextts_core.text.frontend`): exactly what the tokenizer will see.
Steps:

1. **Split** the new-language lines into a mining set and a held-out slice (for the report).
2. **Characters first.**  Every character of the corpus seen at least ``min_char_count`` times that
   the base model cannot produce as a piece of its own is appended, most frequent first, so the new
   language has no ``<unk>`` above that threshold.
3. **Mine candidates** by training a SentencePiece model of the base model's type on the mining set
   (same normaliser settings), and take its pieces the base lacks, most useful (highest score) first.
4. **Scores that leave the base language alone.**  With ``max_base_drift=0`` (the default), a new
   piece whose text the base model can already segment without ``<unk>`` gets a score below that
   segmentation's total, so the base segmentation wins wherever any text contains it: no base
   segmentation can change, on the probe or elsewhere.  Pieces of a new script keep their mined
   scores.  (For a new language in the base's own script this leaves such pieces unused, and step 5
   drops them; allowing some drift keeps the mined scores and lets step 6 bound the change.)
5. **Useful pieces only.**  Pieces the mining text does not use at least ``min_piece_count`` times
   are dropped and the budget refilled from the remaining candidates; when the candidates run out
   before ``target_size``, the stage stops there and says so.
6. **Drift check.**  A probe text of the base languages is encoded with the base and the extended
   model; pieces that change any probe segmentation are dropped until the share of changed
   sentences is at most ``max_base_drift`` (default 0).

Pieces and ids ``0..N-1`` are copied byte for byte (piece, score, type); the normaliser and trainer
specs stay the base's, so the official code loads the result exactly like the base model.
"""

from __future__ import annotations

import hashlib
import io
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sentencepiece as spm
from sentencepiece import sentencepiece_model_pb2 as pb

from indextts_core.config import ExtendBpeConfig
from indextts_core.errors import ConfigError, InputError
from indextts_core.text.extend_report import write_report
from indextts_core.text.tokenizer import SPACE
from indextts_core.utils.fileio import atomic_write, sha256_bytes, write_json
from indextts_core.model.config import text_rows

#: Bump when the stage's outputs change for the same inputs (invalidates cached results).
STAGE_VERSION = "2"

NORMAL = pb.ModelProto.SentencePiece.NORMAL
_MARGIN = 1.0  # how far below the base segmentation's score a capped piece is put
_MAX_ROUNDS = 8


#: The bundled base-language probe (English and Chinese sentences) for the drift check.
BASE_PROBE = Path(__file__).resolve().parent.parent / "resources" / "base_probe.txt"

#: Mine this many times the pieces the budget allows, so the usage filter has enough to choose from.
_CANDIDATE_FACTOR = 1.5


@dataclass
class LanguageStats:
    lines: int
    characters: int
    unk_char_rate_before: float
    unk_char_rate_after: float
    tokens_per_char_before: float
    tokens_per_char_after: float
    added_token_share: float  # share of held-out tokens that are added pieces
    unk_char_rate_raw: float | None = None  # after, on the held-out lines through the official front-end alone


@dataclass
class ExtendBpeResult:
    model_path: Path
    sidecar_path: Path
    report_json: Path
    report_md: Path
    report_png: Path
    base_size: int
    vocab_size: int
    model_rows: int
    chars_added: int
    pieces_added: int
    stopped_early: bool
    note: str
    base_drift: float
    heldout_piece_usage: float
    languages: dict[str, LanguageStats] = field(default_factory=dict)


@dataclass
class _Piece:
    piece: str
    score: float
    kind: str  # "char" | "piece"


def _load_proto(data: bytes) -> pb.ModelProto:
    proto = pb.ModelProto()
    proto.ParseFromString(data)
    return proto


def _processor(proto: pb.ModelProto) -> spm.SentencePieceProcessor:
    return spm.SentencePieceProcessor(model_proto=proto.SerializeToString())


def _with_pieces(base: pb.ModelProto, pieces: Sequence[_Piece]) -> pb.ModelProto:
    proto = pb.ModelProto()
    proto.CopyFrom(base)
    for p in pieces:
        proto.pieces.append(pb.ModelProto.SentencePiece(piece=p.piece, score=p.score, type=NORMAL))
    return proto


def _mid_word(base: pb.ModelProto) -> spm.SentencePieceProcessor:
    proto = pb.ModelProto()
    proto.CopyFrom(base)
    proto.normalizer_spec.add_dummy_prefix = False
    return _processor(proto)


def _held_flags(lines: Sequence[str], fraction: float, seed: int) -> list[bool]:
    """Which lines are held out: a hash of (seed, line number, text), the same split for the same lines."""
    flags = [int(hashlib.sha256(f"{seed}\x00{i}\x00{line}".encode()).hexdigest()[:8], 16) / 0xFFFFFFFF < fraction
             for i, line in enumerate(lines)]
    return flags if not all(flags) else [False] * len(lines)  # never hold out everything


def _heldout(lines: Sequence[str], fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """(mining lines, held-out lines)."""
    flags = _held_flags(lines, fraction, seed)
    return [x for x, f in zip(lines, flags) if not f], [x for x, f in zip(lines, flags) if f]


def _mine_candidates(lines: Sequence[str], base: pb.ModelProto, size: int) -> list[tuple[str, float]]:
    """Train a model of the base's type on ``lines``; its normal pieces with their scores, best first."""
    if size <= 0 or not lines:
        return []
    model = io.BytesIO()
    spec = base.trainer_spec
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(lines), model_writer=model, vocab_size=max(size, 8), hard_vocab_limit=False,
            model_type={pb.TrainerSpec.UNIGRAM: "unigram", pb.TrainerSpec.BPE: "bpe"}.get(spec.model_type, "unigram"),
            normalization_rule_name=base.normalizer_spec.name or "nmt_nfkc",
            add_dummy_prefix=base.normalizer_spec.add_dummy_prefix,
            remove_extra_whitespaces=base.normalizer_spec.remove_extra_whitespaces,
            character_coverage=1.0, max_sentencepiece_length=spec.max_sentencepiece_length or 16,
            byte_fallback=False, bos_id=-1, eos_id=-1, unk_id=0, pad_id=-1, num_threads=1, minloglevel=2,
        )
    except RuntimeError as e:  # e.g. too little text for even a tiny model
        if "Vocabulary size" in str(e) or "sentences" in str(e):
            return []
        raise
    cand = _load_proto(model.getvalue())
    out = [(p.piece, p.score) for p in cand.pieces if p.type == NORMAL]
    return sorted(out, key=lambda ps: -ps[1])


def _char_stats(proc: spm.SentencePieceProcessor, lines: Iterable[str]) -> Counter[str]:
    counts: Counter[str] = Counter()
    for line in lines:
        counts.update(ch for ch in proc.Normalize(line) if ch != SPACE)
    return counts


def _score_cap(base: spm.SentencePieceProcessor, mid: spm.SentencePieceProcessor, piece: str) -> float | None:
    """Total score of the base's own segmentation of ``piece``'s text, or None if it needs <unk>."""
    encoder = base if piece.startswith(SPACE) else mid
    ids = encoder.EncodeAsIds(piece.replace(SPACE, " "))
    if not ids or any(base.IsUnknown(i) for i in ids):
        return None
    return sum(base.GetScore(i) for i in ids)


def _segmentations(proc: spm.SentencePieceProcessor, lines: Sequence[str]) -> list[list[int]]:
    return [proc.EncodeAsIds(line) for line in lines]


def _text_stats(proc: spm.SentencePieceProcessor, lines: Sequence[str], n_base: int) -> tuple[float, float, float]:
    """(unknown-character rate, tokens per character, share of tokens that are added pieces)."""
    chars = unk_chars = tokens = added = 0
    unk = proc.unk_id()
    for line in lines:
        for piece in proc.encode(line, return_type="proto").pieces:
            n = len(piece.surface.strip())  # characters, spaces not counted
            chars += n
            tokens += 1
            unk_chars += n if piece.id == unk else 0
            added += piece.id >= n_base
    return (unk_chars / chars if chars else 0.0, tokens / chars if chars else 0.0, added / tokens if tokens else 0.0)


def extend_bpe(
    base_model: str | Path,
    corpus: Mapping[str, Sequence[str]],
    probe: Sequence[str],
    out_model: str | Path,
    cfg: ExtendBpeConfig | None = None,
    *,
    seed: int = 1234,
    frontend: Mapping[str, Any] | None = None,
    report_dir: str | Path | None = None,
    raw_corpus: Mapping[str, Sequence[str]] | None = None,
) -> ExtendBpeResult:
    """Extend ``base_model`` with the languages of ``corpus`` (front-end text per language).

    ``raw_corpus``: the same lines through the official front-end alone (no language normaliser),
    line for line: their characters get pieces too, so raw text typed into the official inference
    has no ``<unk>`` (the Amharic normaliser maps ``።`` to ``.``; raw text keeps it).

    ``cfg`` is the ``extend_bpe:`` section (target size, drift limit, counts, held-out share);
    ``seed`` draws the held-out lines.  ``probe`` is front-end text of the base languages (the
    drift check).  Writes ``out_model``,
    a sidecar ``<out_model stem>.json`` (base hash, sizes, front-end fingerprint) and the report
    (``report.json``, ``report.md``, ``report.png``) in ``report_dir`` (default: next to the model).
    """
    opts = cfg or ExtendBpeConfig()
    base_path, out_model = Path(base_model), Path(out_model)
    if not base_path.is_file():
        raise InputError(f"{base_path}: base tokenizer model not found")
    base_bytes = base_path.read_bytes()
    try:
        base_proto = _load_proto(base_bytes)
        base = _processor(base_proto)
    except Exception as e:  # noqa: BLE001 - protobuf and sentencepiece raise assorted types
        raise InputError(f"{base_path}: not a SentencePiece model ({e})") from None
    n_base = len(base_proto.pieces)
    if opts.target_size < n_base:
        raise ConfigError(f"extend_bpe.target_size: {opts.target_size} is below the base model's {n_base} pieces; "
                          "the base ids must be kept")
    lines_all = [line for lines in corpus.values() for line in lines if line.strip()]
    if not lines_all:
        raise InputError("extend_bpe: the corpus has no text for the new language(s)")
    mid = _mid_word(base_proto)
    existing = {p.piece for p in base_proto.pieces}
    budget = opts.target_size - n_base
    split = {lang: _heldout([x for x in lines if x.strip()], opts.heldout_fraction, seed)
             for lang, lines in corpus.items()}
    mining = [x for m, _ in split.values() for x in m]
    heldout = {lang: h for lang, (_, h) in split.items()}

    # 2. characters the corpus needs (counted on the whole corpus, normalised and raw: the alphabet is the language's)
    raw_all = [line for lines in (raw_corpus or {}).values() for line in lines if line.strip()]
    counts = _char_stats(base, lines_all + raw_all)
    needed = [c for c, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
              if n >= opts.min_char_count and base.PieceToId(c) == base.unk_id() and c not in existing]
    uncovered = needed[budget:]
    needed = needed[:budget]

    # 3. candidates mined on the mining set
    candidates = _mine_candidates(mining, base_proto, int((budget - len(needed)) * _CANDIDATE_FACTOR) + len(needed))
    cand_score = dict(candidates)
    floor = min(cand_score.values(), default=-10.0) - 1.0

    def scored(piece: str, own: float) -> float:
        if opts.max_base_drift > 0:
            return own
        cap = _score_cap(base, mid, piece)
        return own if cap is None else min(own, cap - _MARGIN)

    chars = [_Piece(c, scored(c, cand_score.get(c, floor)), "char") for c in needed]
    pool = [(p, s) for p, s in candidates if p not in existing and p != SPACE and len(p.replace(SPACE, "")) > 1]

    # 4-6. fill the budget with useful pieces that leave the base segmentation unchanged
    probe = [x for x in probe if x.strip()]
    base_probe = _segmentations(base, probe)
    banned: set[str] = set()
    chosen: list[_Piece] = []
    for _ in range(_MAX_ROUNDS):
        room = budget - len(chars) - len(chosen)
        taken = {p.piece for p in chosen}
        fresh = [(p, s) for p, s in pool if p not in banned and p not in taken][:max(room, 0)]
        trial = chosen + [_Piece(p, scored(p, s), "piece") for p, s in fresh]
        proc = _processor(_with_pieces(base_proto, chars + trial))
        usage: Counter[int] = Counter(i for seg in _segmentations(proc, mining) for i in seg if i >= n_base)
        offset = n_base + len(chars)
        kept = [p for k, p in enumerate(trial) if usage[offset + k] >= opts.min_piece_count]
        banned |= {p.piece for p in trial} - {p.piece for p in kept}
        proc = _processor(_with_pieces(base_proto, chars + kept))
        changed = [k for k, seg in enumerate(_segmentations(proc, probe)) if seg != base_probe[k]]
        if probe and len(changed) / len(probe) > opts.max_base_drift:
            culprits = {proc.IdToPiece(i) for k in changed for i in proc.EncodeAsIds(probe[k]) if i >= n_base}
            banned |= culprits
            chars = [c for c in chars if c.piece not in culprits]
            kept = [p for p in kept if p.piece not in culprits]
        progress = len(kept) != len(chosen) or fresh
        chosen = kept
        if not progress or len(chars) + len(chosen) >= budget:
            break
        if not [p for p, _ in pool if p not in banned and p not in {c.piece for c in chosen}]:
            break

    final_proto = _with_pieces(base_proto, chars + chosen)
    final = _processor(final_proto)
    final_bytes = final_proto.SerializeToString()
    assert all(a.SerializeToString() == b.SerializeToString() for a, b in zip(final_proto.pieces, base_proto.pieces))
    changed = [k for k, seg in enumerate(_segmentations(final, probe)) if seg != base_probe[k]]
    drift = len(changed) / len(probe) if probe else 0.0
    if drift > opts.max_base_drift:
        raise InputError(f"extend_bpe: base-language drift {drift:.2%} stays above max_base_drift="
                         f"{opts.max_base_drift:.2%} even after dropping the pieces that cause it")

    vocab = len(final_proto.pieces)
    stopped = vocab < opts.target_size
    note = ""
    if uncovered:
        note = (f"target_size leaves no room for {len(uncovered)} more characters of the corpus "
                f"(they stay <unk>): {''.join(uncovered[:20])}")
    elif stopped:
        note = (f"stopped at {vocab} pieces: the corpus supports {len(chars)} characters and {len(chosen)} useful "
                f"pieces (used at least {opts.min_piece_count} times), short of target_size={opts.target_size}")

    # the outputs
    out_model.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(out_model, "wb") as f:
        f.write(final_bytes)
    languages = {}
    for lang, lines in corpus.items():
        held = heldout[lang] or [x for x in lines if x.strip()]
        ub, tb, _ = _text_stats(base, held, n_base)
        ua, ta, share = _text_stats(final, held, n_base)
        raw_lines = (raw_corpus or {}).get(lang)
        raw_rate = None
        if raw_lines is not None and len(raw_lines) == len(lines):  # the same lines, raw: the same held-out ones
            pairs = [(x, r) for x, r in zip(lines, raw_lines) if x.strip()]
            flags = _held_flags([x for x, _ in pairs], opts.heldout_fraction, seed)
            raw_held = [r for (_, r), f in zip(pairs, flags) if f] or [r for _, r in pairs]
            raw_rate = _text_stats(final, raw_held, n_base)[0]
        languages[lang] = LanguageStats(len(lines), sum(len(x) for x in lines), ub, ua, tb, ta, share, raw_rate)
    held_all = [x for h in heldout.values() for x in h]
    used_held = {i for seg in _segmentations(final, held_all) for i in seg if i >= n_base}
    usage_share = len(used_held) / (vocab - n_base) if vocab > n_base else 0.0
    report_dir = Path(report_dir) if report_dir else out_model.parent
    sidecar = out_model.with_suffix(".json")
    result = ExtendBpeResult(
        model_path=out_model, sidecar_path=sidecar, report_json=report_dir / "report.json",
        report_md=report_dir / "report.md", report_png=report_dir / "report.png", base_size=n_base,
        vocab_size=vocab, model_rows=text_rows(vocab), chars_added=len(chars), pieces_added=len(chosen),
        stopped_early=stopped, note=note, base_drift=drift, heldout_piece_usage=usage_share, languages=languages,
    )
    write_json(sidecar, {
        "tokenizer": out_model.name, "sha256": sha256_bytes(final_bytes), "vocab_size": vocab,
        "model_rows": text_rows(vocab), "number_text_tokens": vocab,
        "base": {"file": base_path.name, "sha256": sha256_bytes(base_bytes), "vocab_size": n_base},
        "languages": sorted(corpus), "frontend": dict(frontend or {}),
        "added": {"characters": len(chars), "pieces": len(chosen)},
    })
    write_report(result, opts, chars, chosen, changed, probe, uncovered, seed=seed,
                 candidate_factor=_CANDIDATE_FACTOR)
    return result


def probe_lines(path: Path | None, frontend: Callable[[str, str], str]) -> list[str]:
    """The base-language probe text for the drift check (``path`` or the bundled one), through the front-end."""
    path = Path(path) if path else BASE_PROBE
    try:
        raw = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise InputError(f"extend_bpe.probe_text: {path} not found") from None
    return [frontend(line, "base") for line in raw if line.strip()]


def read_sidecar(model_path: str | Path) -> dict[str, Any] | None:
    """The sidecar written next to an extended tokenizer, if any."""
    import json

    side = Path(model_path).with_suffix(".json")
    return json.loads(side.read_text(encoding="utf-8")) if side.is_file() else None


def check_frontend(model_path: str | Path, fingerprint: Mapping[str, Any]) -> None:
    """Refuse a tokenizer whose recorded front-end differs from the one in use."""
    side = read_sidecar(model_path)
    recorded = (side or {}).get("frontend") or {}
    if recorded and recorded.get("sha256") != fingerprint.get("sha256"):
        raise InputError(
            f"{model_path}: built with front-end {recorded.get('name')}/{recorded.get('version')} "
            f"({str(recorded.get('sha256'))[:12]}), but this run uses {fingerprint.get('name')}/"
            f"{fingerprint.get('version')} ({str(fingerprint.get('sha256'))[:12]}): text would be tokenized "
            "differently than when the tokenizer was mined")

