"""Reading just the text of manifests (for the tokenizer stage run from the command line)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from indextts_core.errors import ManifestError
from indextts_core.text.clean import clean_text


def read_manifest_texts(manifests: Sequence[Path], languages: Sequence[str]) -> dict[str, list[str]]:
    """``{language: [text, ...]}`` for rows of the given languages (light-cleaned, empty rows skipped).

    Every line must be a JSON object with a ``text`` field; a bad line is an error naming it.
    """
    wanted = set(languages)
    out: dict[str, list[str]] = {lang: [] for lang in languages}
    for path in manifests:
        try:
            handle = open(path, encoding="utf-8")
        except FileNotFoundError:
            raise ManifestError(f"{path}: manifest not found") from None
        with handle:
            for lineno, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise ManifestError(f"{path}:{lineno}: invalid JSON: {e.msg}") from None
                if not isinstance(row, dict) or not isinstance(row.get("text"), str):
                    raise ManifestError(f"{path}:{lineno}: expected an object with a 'text' string")
                lang = row.get("language", languages[0] if len(languages) == 1 else None)
                text = clean_text(row["text"])
                if lang in wanted and text:
                    out[lang].append(text)
    missing = [lang for lang, rows in out.items() if not rows]
    if missing:
        raise ManifestError(f"no text for language(s) {missing} in {', '.join(map(str, manifests))}")
    return out
