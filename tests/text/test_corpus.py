"""Light text cleaning and the per-language corpus."""

from __future__ import annotations

import json
import unicodedata
from pathlib import Path

from indextts_core.text.corpus import build_corpus
from indextts_core.utils.fileio import read_json
from indextts_core.text.clean import clean_text, script_of


def test_clean_text_is_light():
    # NFD -> NFC, whitespace collapsed, controls/BOM/zero-width space dropped, case and script kept
    decomposed = unicodedata.normalize("NFD", "Café")
    assert clean_text(f"\ufeff  {decomposed}\u00a0\u00a0au\x07 lait\u200b  ") == "Café au lait"
    assert clean_text("ሰላም፡ለዚህ፡ቤት።") == "ሰላም፡ለዚህ፡ቤት።"
    assert clean_text("hello World") == "hello World"
    assert clean_text("می\u200cخواهم") == "می\u200cخواهم"  # ZWNJ is meaningful in Persian: kept


def test_script_of():
    assert [script_of(c) for c in "ሰa ።1漢,"] == ["ETHIOPIC", "LATIN", "SPACE", "PUNCTUATION", "DIGIT", "CJK",
                                                  "PUNCTUATION"]


def test_corpus_per_language_with_stats(tmp_path: Path):
    rows = [
        {"id": "1", "language": "am", "text": "ሰላም  ነው?"},
        {"id": "2", "language": "en", "text": "Hello there."},
        {"id": "3", "language": "am", "text": "እንኳን ደህና መጡ።"},
    ]
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    result = build_corpus([manifest], tmp_path / "corpus")
    assert result.files["am"].read_text(encoding="utf-8") == "ሰላም ነው?\nእንኳን ደህና መጡ።\n"
    assert result.files["en"].read_text(encoding="utf-8") == "Hello there.\n"
    stats = read_json(result.stats_path)["languages"]
    assert stats["am"]["lines"] == 2 and stats["am"]["words"] == 5
    assert stats["am"]["characters"] == len("ሰላም ነው?") + len("እንኳን ደህና መጡ።")
    assert max(stats["am"]["scripts"], key=stats["am"]["scripts"].get) == "ETHIOPIC"
    assert stats["en"]["scripts"]["LATIN"] > 0.7
