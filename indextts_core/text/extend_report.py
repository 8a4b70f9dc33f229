"""The extend-bpe stage's report: report.json, report.md and report.png next to the tokenizer."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from indextts_core.config import ExtendBpeConfig
from indextts_core.text.tokenizer import SPACE
from indextts_core.utils.fileio import atomic_write, write_json

if TYPE_CHECKING:
    from indextts_core.text.extend_bpe import ExtendBpeResult, _Piece


def write_report(result: ExtendBpeResult, opts: ExtendBpeConfig, chars: list[_Piece], pieces: list[_Piece],
                  changed: list[int], probe: Sequence[str], uncovered: list[str], *, seed: int,
                 candidate_factor: float) -> None:
    data = {
        "base_size": result.base_size, "vocab_size": result.vocab_size,
        "model_rows": result.model_rows,
        "rows_rule": f"{result.vocab_size} pieces -> number_text_tokens: {result.vocab_size} -> "
                     f"{result.model_rows} rows in text_embedding and text_head",
        "target_size": opts.target_size, "stopped_early": result.stopped_early, "note": result.note,
        "added": {"characters": len(chars), "pieces": len(pieces)},
        "added_piece_lengths": dict(sorted(Counter(len(p.piece.replace(SPACE, "")) for p in chars + pieces).items())),
        "examples": {"characters": [c.piece for c in chars[:30]], "pieces": [p.piece for p in pieces[:30]]},
        "uncovered_characters": uncovered,
        "base_drift": {"changed_sentences": len(changed), "probe_sentences": len(probe), "share": result.base_drift,
                       "max_allowed": opts.max_base_drift},
        "heldout_piece_usage": result.heldout_piece_usage,
        "languages": {k: asdict(v) for k, v in result.languages.items()},
        "options": {"target_size": opts.target_size, "max_base_drift": opts.max_base_drift,
                    "min_char_count": opts.min_char_count, "min_piece_count": opts.min_piece_count,
                    "candidate_factor": candidate_factor, "heldout_fraction": opts.heldout_fraction, "seed": seed},
    }
    result.report_json.parent.mkdir(parents=True, exist_ok=True)
    write_json(result.report_json, data)
    lines = [
        "# Tokenizer extension",
        "",
        f"- base: {result.base_size} pieces; extended: **{result.vocab_size}** pieces "
        f"(+{len(chars)} characters, +{len(pieces)} longer pieces); target {opts.target_size}",
        f"- model rows: {data['rows_rule']}",
        f"- base-language drift: {len(changed)} of {len(probe)} probe sentences changed "
        f"({result.base_drift:.2%}; allowed {opts.max_base_drift:.2%})",
        f"- added pieces used on the held-out slice: {result.heldout_piece_usage:.1%}",
    ]
    if result.note:
        lines.append(f"- note: {result.note}")
    lines += ["", "| language | lines | unknown chars before | after | after, raw text | tokens/char before | after "
              "| added-token share |",
              "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for lang, s in result.languages.items():
        raw = f"{s.unk_char_rate_raw:.1%}" if s.unk_char_rate_raw is not None else "-"
        lines.append(f"| {lang} | {s.lines} | {s.unk_char_rate_before:.1%} | {s.unk_char_rate_after:.1%} | {raw} | "
                     f"{s.tokens_per_char_before:.3f} | {s.tokens_per_char_after:.3f} | {s.added_token_share:.1%} |")
    lines += ["", "Unknown characters are measured on held-out lines as the tokenizer sees them after the platform's "
              "front-end (`indextts-train normalize`), and on the same lines as the official front-end alone "
              "delivers raw text (\"raw text\": what typing into the official inference gives). The official "
              "front-end still reads digits in non-Latin text through its Chinese route; `normalize` first avoids "
              "that."]
    lines += ["", "Before extension, each run of unknown characters is a single `<unk>` token, so tokens/char can "
              "rise while the text becomes representable.",
              "", "First added characters: " + " ".join(data["examples"]["characters"]),
              "", "First added pieces: " + " ".join(data["examples"]["pieces"])]
    with atomic_write(result.report_md) as f:
        f.write("\n".join(lines) + "\n")
    _plot(result, data, result.report_png)


def _plot(result: ExtendBpeResult, data: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.5), dpi=100)
    langs = list(result.languages)
    x = range(len(langs))
    before = [result.languages[k].tokens_per_char_before for k in langs]
    after = [result.languages[k].tokens_per_char_after for k in langs]
    ax1.bar([i - 0.2 for i in x], before, 0.4, label="base tokenizer", color="#999999")
    ax1.bar([i + 0.2 for i in x], after, 0.4, label="extended", color="#4C72B0")
    for i, k in enumerate(langs):
        ax1.annotate(f"unk {result.languages[k].unk_char_rate_before:.0%}->{result.languages[k].unk_char_rate_after:.0%}",
                     (i, max(before[i], after[i])), ha="center", va="bottom", fontsize=8)
    ax1.set_xticks(list(x), langs)
    ax1.set_ylim(0, max(before + after + [0.1]) * 1.35)
    ax1.set_ylabel("tokens per character (held out)")
    ax1.legend(fontsize=8)
    lengths = data["added_piece_lengths"]
    ax2.bar([str(k) for k in lengths], list(lengths.values()), color="#55A868")
    ax2.set_xlabel("characters per added piece")
    ax2.set_ylabel("pieces")
    ax2.set_title(f"{result.vocab_size} pieces (+{result.vocab_size - result.base_size}); drift "
                  f"{result.base_drift:.1%}", fontsize=9)
    fig.tight_layout()
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png")
    plt.close(fig)
