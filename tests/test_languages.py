"""Language codes are checked against ISO 639 and written one way (found in use: ``--language amh`` skipped the
Amharic normaliser and read ``በ2015`` as Chinese numerals; rows without a language silently took the run's)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from indextts_core.config import IngestConfig, load_config
from indextts_core.data.ingest import ManifestInput, ingest
from indextts_core.errors import ConfigError
from indextts_core.text.frontend import TextFrontend
from indextts_core.languages import UnknownLanguage, canonical_language
from indextts_core.utils.fileio import read_jsonl
from tests_support import write_audio


def test_codes_are_written_one_way_and_unknown_ones_name_the_choices():
    assert canonical_language("amh") == canonical_language("AM") == "am"
    assert canonical_language("eng") == "en" and canonical_language("pt-BR") == "pt-BR"
    assert canonical_language("yue") == "yue"  # ISO 639-3 without a two-letter code stays
    with pytest.raises(UnknownLanguage, match=r"'zz' is not an ISO 639-1 or 639-3.*zu \(Zulu\).*extra_languages"):
        canonical_language("zz")
    from flows.cli_support import checked_language  # the command line also names the languages with a normaliser

    with pytest.raises(UnknownLanguage, match=r"'zz' is not .*normaliser: am"):
        checked_language("zz")
    with pytest.raises(UnknownLanguage, match=r"did you mean am \(Amharic\)"):
        canonical_language("amharic")
    assert canonical_language("qx-lab", ["qx-lab"]) == "qx-lab"  # the explicit override
    fe = TextFrontend()
    assert fe("በ2015", canonical_language("amh")) == fe("በ2015", "am") != fe("በ2015", "amh")


def test_config_checks_every_language_field():
    cfg = load_config(overrides={"language": "amh", "ingest.manifests": [{"path": "m.jsonl", "language": "eng"}],
                                 "extend_bpe.languages": ["amh", "en"]})
    assert (cfg.language, cfg.ingest.manifests[0].language, cfg.extend_bpe.languages) == ("am", "en", ["am", "en"])
    with pytest.raises(ConfigError, match=r"language: .*'xx' is not an ISO 639"):
        load_config(overrides={"language": "xx"})
    with pytest.raises(ConfigError, match=r"ingest\.manifests\.0\.language: .*'qq' is not"):
        load_config(overrides={"ingest.manifests": [{"path": "m.jsonl", "language": "qq"}]})
    assert load_config(overrides={"language": "qq", "extra_languages": ["qq"]}).language == "qq"


def test_rows_with_unknown_codes_are_rejected_and_rows_without_one_are_counted(tmp_path: Path):
    for name in ("a", "b", "c", "d"):
        write_audio(tmp_path / f"{name}.wav", seconds=1.0)
    rows = [{"id": "a", "audio": "a.wav", "text": "ሰላም", "speaker": "s", "language": "amh"},
            {"id": "b", "audio": "b.wav", "text": "ሰላም", "speaker": "s", "language": "xq"},
            {"id": "c", "audio": "c.wav", "text": "hello", "speaker": "s"},
            {"id": "d", "audio": "d.wav", "text": "hello", "speaker": "s"}]
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    result = ingest([ManifestInput(tmp_path / "m.jsonl", language="en")], tmp_path / "o",
                    IngestConfig(max_rejected_fraction=0.5))
    kept = {r["id"]: r["language"] for r in read_jsonl(result.manifest)}
    assert kept == {"a": "am", "c": "en", "d": "en"}
    (reject,) = read_jsonl(result.rejects)
    assert reject["id"] == "b" and reject["reason_code"] == "schema" and "field 'language'" in reject["reason"]
    assert "m.jsonl:2" in reject["reason"]
    assert result.report["rows_without_language"] == {"en": 2}
    assert "rows that named no language and were given one: 2 -> en" in (tmp_path / "o" / "report.md").read_text()
    again = ingest([ManifestInput(tmp_path / "m.jsonl", language="en")], tmp_path / "o2", IngestConfig(),
                   extra_languages=["xq"])
    assert {r["id"] for r in read_jsonl(again.manifest)} == {"a", "b", "c", "d"}


def test_normalize_command_reads_amh_as_amharic_and_refuses_unknown_codes():
    cli = str(Path(sys.executable).parent / "indextts-train")
    out = subprocess.run([cli, "normalize", "--language", "amh", "በ2015"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == TextFrontend()("በ2015", "am")
    bad = subprocess.run([cli, "normalize", "--language", "zz", "x"], capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "'zz' is not an ISO 639-1 or 639-3 language code" in bad.stderr
