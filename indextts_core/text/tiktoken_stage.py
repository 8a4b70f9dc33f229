"""The tokenizer stage on an IndexTTS-2.5 base: keep the vocabulary, measure it, choose the language id.

The 2.5 vocabulary is byte-level (tiktoken): every character encodes, so there is nothing like
2.0's ``<unk>`` to remove and no extension is needed for the GPT to read a new language.  What a
new language costs is length: characters the vocabulary has no token for take several byte
tokens each.  This stage therefore

* copies the checkpoint's rank file unchanged (every base id preserved, trivially);
* reports coverage on the run's corpus, normalised as 2.5 inference normalises it: tokens per
  character, the share of characters a whole token covers, the characters that only encode
  through byte fallback, and the text the GPT's 0/1 filter drops (``!`` and ``"`` when they stand
  alone);
* records the language choice (:func:`~indextts_core.text.encoder.language_choice`): the ``lang``
  code for inference and how its ``lang_embedding`` row starts.

The sidecar next to the copied file (``<name>.json``) carries the front-end fingerprint, the choice
and the coverage, so preprocessing and training use exactly what was measured.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from indextts_core.text.encoder import LanguageChoice, TiktokenText
from indextts_core.text.frontend import TextFrontend
from indextts_core.text.tiktoken_coverage import coverage_report
from indextts_core.text.tiktoken_vocab import TIKTOKEN_FILE
from indextts_core.utils.fileio import atomic_path, atomic_write, write_json

STAGE_FORMAT = "indextts-tokenizer-v25/1"


@dataclass
class TiktokenStageResult:
    model_path: Path
    sidecar_path: Path
    report_json: Path
    report_md: Path
    vocab_size: int
    choice: LanguageChoice
    coverage: dict[str, dict[str, Any]]  # per language

    def metrics(self) -> dict[str, float | int]:
        out: dict[str, float | int] = {"vocab_size": self.vocab_size, "lang_row": self.choice.row,
                                       "pieces_added": 0}
        for lang, c in self.coverage.items():
            out |= {f"{lang}.tokens_per_char": c["tokens_per_char"], f"{lang}.covered_share": c["covered_share"],
                    f"{lang}.byte_fallback_chars": c["byte_fallback_distinct"], f"{lang}.dropped_ids": c["dropped_ids"]}
        return out

    @property
    def note(self) -> str:
        c = self.choice
        row = (f"row {c.row} kept (trained in the release)" if c.row_init == "keep"
               else f"row {c.row} re-initialised from the released languages' mean, trained")
        parts = [f"IndexTTS-2.5 vocabulary kept ({self.vocab_size} ids); lang={c.code!r}: {row}"]
        for lang, cov in self.coverage.items():
            parts.append(f"{lang}: {cov['tokens_per_char']} tokens/char, {cov['covered_share']:.1%} of characters "
                         f"with a whole token")
        return "; ".join(parts)


def run_tiktoken_stage(base: Path, corpus: Mapping[str, Sequence[str]], choice: LanguageChoice, out_dir: Path,
                       frontend: TextFrontend | None = None) -> TiktokenStageResult:
    """Copy ``base`` (the checkpoint's ``.tiktoken``) into ``out_dir`` and write its reports and sidecar.

    ``corpus``: raw transcript lines per language (the corpus stage's ``<language>.txt``).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    model_path = out_dir / TIKTOKEN_FILE
    with atomic_path(model_path) as tmp:
        shutil.copyfile(base, tmp)
    encoder = TiktokenText(model_path, choice, frontend or TextFrontend())
    coverage = {}
    for lang, lines in corpus.items():
        texts = [encoder.normalise(line, lang) for line in lines if line.strip()]
        coverage[lang] = coverage_report(encoder.vocab, texts, encoder.code_for(lang))
    sidecar = model_path.with_suffix(".json")
    result = TiktokenStageResult(model_path, sidecar, out_dir / "report.json", out_dir / "report.md",
                                 encoder.vocab.n_vocab, choice, coverage)
    write_json(sidecar, {"format": STAGE_FORMAT, "base_sha256": encoder.vocab.sha256,
                         "frontend": encoder.fingerprint(), "language_choice": choice.to_dict(),
                         "vocab_size": encoder.vocab.n_vocab})
    write_json(result.report_json, {"format": STAGE_FORMAT, "language_choice": choice.to_dict(),
                                    "vocab_size": encoder.vocab.n_vocab, "coverage": coverage, "note": result.note})
    with atomic_write(result.report_md) as f:
        f.write(_markdown(result))
    return result


def _markdown(r: TiktokenStageResult) -> str:
    c = r.choice
    lines = ["# Tokenizer (IndexTTS-2.5 base)", "",
             f"The checkpoint's tiktoken vocabulary is kept unchanged: {r.vocab_size} ids, every base id preserved.",
             "", "## Language id", "",
             f"- data language: `{c.language}`; code passed to inference as `lang`: `{c.code}` "
             f"(prefix `<|{c.code}|> `{'' if c.has_token else ', written as plain text: no special token'})",
             f"- `lang_embedding` row {c.row}: {'trained in the release' if c.released else 'not trained in the release'}"
             f"; start: `{c.row_init}`", "", "## Coverage", "",
             "| language | lines | characters | tokens/char | whole-token share | byte-fallback chars | dropped 0/1 ids |",
             "|---|---|---|---|---|---|---|"]
    for lang, cov in r.coverage.items():
        lines.append(f"| {lang} | {cov['texts']} | {cov['characters']} | {cov['tokens_per_char']} | "
                     f"{cov['covered_share']:.1%} | {cov['byte_fallback_distinct']} | {cov['dropped_ids']} |")
    lines.append("")
    for lang, cov in r.coverage.items():
        lines.append(f"- {lang}: {cov['advice']}")
        if cov["dropped_ids"]:
            lines.append(f"  - the GPT drops ids 0/1 ({', '.join(repr(p) for p in cov['dropped_pieces'])}): "
                         "the official inference never shows these characters to the model")
    return "\n".join(lines) + "\n"
