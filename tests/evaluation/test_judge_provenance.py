"""Who judged, and a second opinion: each ASR judge's name, revision and licence in the report (a caveat for a
non-commercial licence), and ``evaluate.asr_secondary`` re-reading the items the first judge read above 50% CER.
Two tiny random judges written here (Whisper first, CTC second) on synthetic rows and waves: no synthesis."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from indextts_core.config import EvaluateConfig
from indextts_core.evaluation.asr import WhisperTranscriber, open_transcriber
from indextts_core.evaluation.judges import (UNKNOWN, is_non_commercial, judge_info, licence_caveats,
                                             read_licence)
from indextts_core.evaluation.report import caveats, html_report, markdown_report
from indextts_core.evaluation.run import (REFERENCE, _scores, _transcribe, second_opinion, secondary_summary,
                                          summarise)
from indextts_core.tiny import write_tiny_ctc, write_tiny_whisper


def test_judge_info_reads_the_licence_from_the_model_card_or_a_licence_file(tmp_path: Path):
    card = tmp_path / "card"
    card.mkdir()
    (card / "config.json").write_text('{"model_type": "wav2vec2"}')
    (card / "README.md").write_text("---\nlanguage:\n- am\nlicense: cc-by-nc-4.0\ntags: [asr]\n---\n# MMS\n"
                                    "license: apache-2.0 (not front matter)\n")
    info = judge_info(card, "ctc:card")
    assert info == {"name": "ctc:card", "licence": "cc-by-nc-4.0",
                    "revision": "sha256:" + hashlib.sha256((card / "config.json").read_bytes()).hexdigest()}
    assert judge_info(card, "ctc:card", "0123abcd")["revision"] == "0123abcd"  # the hub commit when known

    (card / "README.md").write_text("---\nlicense:\n  - 'cc-by-nc-sa-4.0'\n---\n")  # a block list
    assert read_licence(card) == "cc-by-nc-sa-4.0"
    (card / "README.md").write_text("# no front matter\nlicense: mit\n")
    (card / "LICENSE").write_text("\n   MIT License\n\nCopyright ...\n")
    assert read_licence(card) == "MIT License"  # the card says nothing: the LICENSE file's first line

    bare = tmp_path / "bare"
    bare.mkdir()
    assert judge_info(bare) == {"name": "bare", "revision": UNKNOWN, "licence": UNKNOWN}

    assert [is_non_commercial(x) for x in ("cc-by-nc-4.0", "CC-BY-NC-SA-4.0", "Non-Commercial use only",
                                           "apache-2.0", "mit", UNKNOWN, "openrail", "cc-by-4.0")] == [
        True, True, True, False, False, False, False, False]
    lines = licence_caveats([{"name": "ctc:mms", "licence": "cc-by-nc-4.0", "revision": "x"},
                             {"name": "whisper:small", "licence": "apache-2.0", "revision": "y"}])
    assert len(lines) == 1 and lines[0].startswith("the judge ctc:mms is licensed cc-by-nc-4.0 (non-commercial): ")


@pytest.fixture(scope="module")
def judges(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("judges")
    first = write_tiny_whisper(root / "whisper", languages=("en", "am"))
    second = write_tiny_ctc(root / "ctc", seed=0)
    (second / "README.md").write_text("---\nlicense: cc-by-nc-4.0\n---\n")
    return first, second


def _row(model: str, item: str, text: str) -> dict[str, Any]:
    return {"model": model, "id": item, "language": "en", "group": "seen", "text": text, "prompt_id": "p",
            "wav": f"audio/{model}/{item}.wav", "speaker_sim": 0.5, "not_speech": None, "speech_failure": 0.0,
            "duration_ratio": 1.0, "stop_failure": 0.0}


def test_a_second_judge_re_reads_the_items_the_first_read_above_half_cer(judges: tuple[Path, Path]):
    first_dir, second_dir = judges
    first = WhisperTranscriber(first_dir, max_new_tokens=8)
    second = open_transcriber(second_dir, "auto", "cpu", batch_size=4)  # any backend, read from config.json
    rng = np.random.default_rng(0)
    waves = {f"i{k}": rng.standard_normal(8000 + 1000 * k).astype(np.float32) * 0.1 for k in range(4)}
    texts = ["hello world", "good morning to you", "one two three", "a quiet evening"]
    rows = []
    for model in (REFERENCE, "base", "fine-tuned"):
        said = _transcribe(first, waves, dict.fromkeys(waves, "en"))
        for (item, text) in zip(waves, texts):
            rows.append(_row(model, item, text) | {"transcript": said[item]}
                        | _scores(text, "en", said[item]))
    rows[0] |= {"cer": 0.1, "wer": 0.5}  # one the first judge read well: no second opinion for it
    doubtful = [r for r in rows if r["cer"] > 0.5]
    assert len(doubtful) >= len(rows) // 2  # noise read by a random judge

    for model in (REFERENCE, "base", "fine-tuned"):
        second_opinion([r for r in rows if r["model"] == model], waves, second)
    for r in rows:
        if r["cer"] > 0.5:
            assert isinstance(r["transcript_secondary"], str)
            assert r["cer_secondary"] == pytest.approx(_scores(r["text"], "en", r["transcript_secondary"])["cer"])
            assert r["wer_secondary"] is not None
        else:
            assert "cer_secondary" not in r and "transcript_secondary" not in r
    assert second_opinion(rows, waves, None) == 0

    judge_list = [{"role": "first", **judge_info(first_dir, first.name)},
                  {"role": "secondary", **judge_info(second_dir, second.name)}]
    block = secondary_summary(rows, judge_list[1])
    assert block["name"] == second.name == "ctc:ctc" and block["licence"] == "cc-by-nc-4.0"
    assert block["revision"].startswith("sha256:") and block["above_cer"] == 0.5
    assert block["items"] == len(doubtful)
    assert block["mean_cer_first"] == pytest.approx(np.mean([r["cer"] for r in doubtful]))
    assert block["mean_cer_second"] == pytest.approx(np.mean([r["cer_secondary"] for r in doubtful]))
    assert sum(v["items"] for v in block["by_model"].values()) == len(doubtful)

    summary = summarise(rows, ["base", "fine-tuned"], EvaluateConfig(resamples=20), asr=first.name)
    summary |= {"models": ["base", "fine-tuned"], "asr": first.name, "tiny_random": False, "not_speech": {},
                "evalset": {"items": 4, "by_language_group": {"en/seen": 4}}, "judges": judge_list,
                "judge_secondary": block}
    md = markdown_report(summary)
    assert "whisper:whisper" in md and "ctc:ctc" in md
    assert f"Judges: first whisper:whisper (revision {judge_list[0]['revision']}, licence unknown)" in md
    assert "## Second opinion: items above 50% CER under whisper:whisper, re-read by ctc:ctc" in md
    assert f"| all | {len(doubtful)} | {block['mean_cer_first']:.3f} | {block['mean_cer_second']:.3f} |" in md
    assert "> the judge ctc:ctc is licensed cc-by-nc-4.0 (non-commercial)" in md
    assert any("non-commercial" in line for line in caveats(summary))
    page = html_report(summary, rows, "t")
    assert "Second opinion" in page and "second judge (CER" in page


def test_asr_secondary_is_optional_and_in_the_key_only_when_set():
    assert EvaluateConfig().asr_secondary is None and "asr_secondary" not in EvaluateConfig().key_fields()
    assert EvaluateConfig(asr_secondary=Path("/models/mms")).key_fields()["asr_secondary"] == "/models/mms"


def test_the_task_takes_the_revision_from_the_download_record_else_the_asset_digest(tmp_path: Path):
    from types import SimpleNamespace

    from indextts_core.store.objects import open_store
    from tasks.evaluate import asr_revision

    store = open_store(tmp_path / "store")
    store.put_json({"name": "asr", "commit": "f" * 40}, "assets/asr/abc.json")
    stage = SimpleNamespace(store=store)
    hub = SimpleNamespace(evaluate=EvaluateConfig())
    assert asr_revision(hub, stage, SimpleNamespace(prefix="assets/asr/abc", digest="d1")) == "f" * 40
    assert asr_revision(hub, stage, SimpleNamespace(prefix="assets/asr/tiny", digest="d1")) == "sha256:d1"
    local = SimpleNamespace(evaluate=EvaluateConfig(asr_model=tmp_path))  # its config.json's sha256 instead
    assert asr_revision(local, stage, SimpleNamespace(prefix="assets/asr/abc", digest="d1")) is None
    assert asr_revision(hub, stage, None) is None
