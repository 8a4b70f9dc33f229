"""Corpus stage: the text of the accepted clips, one file per language, with statistics.

``<language>.txt`` has the text after light cleaning only (NFC, whitespace; see
:mod:`indextts_core.text.clean`), so the Ge'ez script and any other stays intact.  With a front-end,
``<language>.frontend.txt`` has the same lines as the tokenizer will see them (normalised,
CJK-split, upper-cased: :mod:`indextts_core.text.frontend`); the tokenizer stage mines those.
``<language>.official.txt`` has them as the official front-end alone delivers raw text (no language
normaliser): the tokenizer gives their characters pieces too, so raw text has no ``<unk>``.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from indextts_core.errors import InputError
from indextts_core.utils.fileio import atomic_write, read_jsonl, sha256_file, write_json
from indextts_core.text.clean import clean_text, script_of

#: Bump when the stage's outputs change for the same inputs (invalidates cached results).
STAGE_VERSION = "4"


@dataclass(frozen=True)
class CorpusResult:
    output_dir: Path
    files: dict[str, Path]  # language -> corpus file
    frontend_files: dict[str, Path]  # language -> front-end text (empty without a front-end)
    stats_path: Path
    stats: dict[str, Any] = field(default_factory=dict)  # language -> statistics
    frontend: dict[str, Any] | None = None  # fingerprint of the front-end used, if any


def corpus_stats(lines: Sequence[str]) -> dict[str, Any]:
    """Line, character, word and script statistics of one language's corpus."""
    chars: Counter[str] = Counter()
    for line in lines:
        chars.update(line)
    total = sum(chars.values())
    scripts: Counter[str] = Counter()
    for ch, n in chars.items():
        scripts[script_of(ch)] += n
    return {
        "lines": len(lines),
        "characters": total,
        "unique_characters": len(chars),
        "words": sum(len(line.split()) for line in lines),
        "mean_line_characters": round(total / len(lines), 2) if lines else 0,
        "scripts": {k: round(v / total, 4) for k, v in scripts.most_common()} if total else {},
        "top_characters": [[ch, n] for ch, n in chars.most_common(30)],
    }


def build_corpus(manifests: Sequence[Path], out_dir: Path, frontend: Any | None = None) -> CorpusResult:
    """Write ``<language>.txt`` (one clip's text per line), ``<language>.frontend.txt`` when a
    :class:`~indextts_core.frontend.TextFrontend` is given, and ``stats.json`` to ``out_dir``."""
    by_language: dict[str, list[str]] = defaultdict(list)
    for manifest in manifests:
        for row in read_jsonl(manifest):
            text = clean_text(row["text"])
            if text:
                by_language[row["language"]].append(text)
    out_dir = Path(out_dir)
    files: dict[str, Path] = {}
    fe_files: dict[str, Path] = {}
    stats: dict[str, Any] = {}
    for lang, lines in sorted(by_language.items()):
        path = out_dir / f"{lang}.txt"
        with atomic_write(path) as f:
            f.writelines(line + "\n" for line in lines)
        files[lang] = path
        stats[lang] = {"file": path.name, "sha256": sha256_file(path), **corpus_stats(lines)}
        if frontend is not None:
            fe_lines = [frontend(line, lang) for line in lines]
            fe_path = out_dir / f"{lang}.frontend.txt"
            with atomic_write(fe_path) as f:
                f.writelines(line + "\n" for line in fe_lines)
            fe_files[lang] = fe_path
            stats[lang]["frontend"] = {"file": fe_path.name, "sha256": sha256_file(fe_path),
                                       **corpus_stats(fe_lines)}
            # the same lines as the official front-end alone delivers them (raw text typed into its inference)
            raw_path = out_dir / f"{lang}.official.txt"
            with atomic_write(raw_path) as f:
                f.writelines(frontend.official_only(line) + "\n" for line in lines)
            stats[lang]["official"] = {"file": raw_path.name, "sha256": sha256_file(raw_path)}
    fingerprint = frontend.fingerprint() if frontend is not None else None
    stats_path = out_dir / "stats.json"
    write_json(stats_path, {"languages": stats, "frontend": fingerprint})
    return CorpusResult(out_dir, files, fe_files, stats_path, stats, fingerprint)


def _per_language(corpus_dir: Path, languages: Sequence[str], suffix: str) -> dict[str, list[str]]:
    out = {}
    for lang in languages:
        path = Path(corpus_dir) / f"{lang}{suffix}"
        if not path.is_file():
            raise InputError(f"{corpus_dir}: no corpus text for language {lang!r} (is it in the dataset?)")
        out[lang] = path.read_text(encoding="utf-8").splitlines()
    return out


def read_corpus(corpus_dir: Path, languages: Sequence[str]) -> dict[str, list[str]]:
    """``<language>.txt`` (the raw transcripts) per language; a missing language is an error naming the folder."""
    return _per_language(corpus_dir, languages, ".txt")


def read_frontend_corpus(corpus_dir: Path, languages: Sequence[str]) -> dict[str, list[str]]:
    """``<language>.frontend.txt`` of a corpus folder for each language (the text extend-bpe mines).

    A language the corpus has no text for is an error naming the folder.
    """
    return _per_language(corpus_dir, languages, ".frontend.txt")


def read_official_corpus(corpus_dir: Path, languages: Sequence[str]) -> dict[str, list[str]]:
    """``<language>.official.txt`` per language (the corpus through the official front-end alone), where present."""
    out = {}
    for lang in languages:
        path = Path(corpus_dir) / f"{lang}.official.txt"
        if path.is_file():
            out[lang] = path.read_text(encoding="utf-8").splitlines()
    return out
