"""The CTC judge behind the one ASR interface: tiny random wav2vec2 folders written here (a plain one and
an MMS-style one with per-language adapters), loaded through ``open_transcriber`` like real ones."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

from indextts_core.config import EvaluateConfig
from indextts_core.errors import InputError
from indextts_core.evaluation.asr import open_transcriber
from indextts_core.evaluation.ctc import CTCTranscriber
from indextts_core.languages import iso639_3
from indextts_core.tiny import write_tiny_ctc


@pytest.fixture(scope="module")
def ctc_folders(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("ctc")
    return write_tiny_ctc(root / "plain", seed=0), write_tiny_ctc(root / "mms", seed=0, languages=("amh", "eng"))


def _waves(seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(16000).astype(np.float32) * 0.1,
            rng.standard_normal(12000).astype(np.float32) * 0.1]  # different lengths: padded in one batch


def test_iso639_3_for_adapter_names():
    assert [iso639_3(x) for x in ("am", "en", "amh", "pt-BR")] == ["amh", "eng", "amh", "por"]


def test_plain_ctc_folder_loads_through_auto_and_transcribes(ctc_folders, caplog: pytest.LogCaptureFixture):
    plain, _ = ctc_folders
    asr = open_transcriber(plain, "auto", "cpu", batch_size=2)
    assert isinstance(asr, CTCTranscriber) and asr.name == "ctc:plain"
    assert asr.supports("am") and asr.supports("en")  # no languages listed: taken for the run's language
    with caplog.at_level(logging.INFO, logger="indextts_core.evaluation.ctc"):
        texts = asr.transcribe(_waves(), "am")
    assert len(texts) == 2 and all(isinstance(t, str) for t in texts)
    assert "taken to read 'am'" in caplog.text
    one_by_one = open_transcriber(plain, "ctc", "cpu", batch_size=1).transcribe(_waves(), "am")
    assert one_by_one == texts  # padding never becomes text


def test_plain_ctc_folder_with_languages_in_its_config(tmp_path: Path, ctc_folders):
    listed = shutil.copytree(ctc_folders[0], tmp_path / "amharic")
    cfg = json.loads((listed / "config.json").read_text())
    (listed / "config.json").write_text(json.dumps(cfg | {"languages": ["amh"]}))
    asr = open_transcriber(listed, "auto")
    assert asr.supports("am") and not asr.supports("en")
    with pytest.raises(InputError, match="reads am, not 'en'"):
        asr.transcribe(_waves(), "en")


def test_mms_style_folder_switches_adapter_per_language(ctc_folders):
    _, mms = ctc_folders
    asr = open_transcriber(mms, "auto")
    assert isinstance(asr, CTCTranscriber) and sorted(asr.adapters) == ["amh", "eng"]
    assert asr.supports("am") and asr.supports("en") and not asr.supports("fr")
    am = asr.transcribe(_waves(), "am")
    assert asr.tokenizer.target_lang == "amh" and asr.model.target_lang == "amh"
    assert asr.model.lm_head.out_features == len(asr.tokenizer.vocab["amh"])
    assert all(set(t) <= set(asr.tokenizer.vocab["amh"]) | {" "} for t in am)
    en = asr.transcribe(_waves(), "en")
    assert asr.tokenizer.target_lang == "eng" and asr.model.target_lang == "eng"
    assert asr.model.lm_head.out_features == len(asr.tokenizer.vocab["eng"])
    assert all(set(t) <= set(asr.tokenizer.vocab["eng"]) | {" "} for t in en)
    assert asr.transcribe(_waves(), "am") == am  # back to Amharic: the same adapter, the same text


def test_language_without_adapter_is_named(ctc_folders):
    asr = open_transcriber(ctc_folders[1], "ctc")
    with pytest.raises(InputError, match=r"no CTC adapter for language 'fr' \(adapter\.fra\.safetensors\).*amh, eng"):
        asr.transcribe(_waves(), "fr")


def test_pickled_weights_are_refused_naming_the_file(tmp_path: Path, ctc_folders):
    pickled = shutil.copytree(ctc_folders[0], tmp_path / "pickled")
    (pickled / "model.safetensors").rename(pickled / "pytorch_model.bin")
    with pytest.raises(InputError, match=r"pytorch_model\.bin: CTC weights refused"):
        open_transcriber(pickled, "auto")


def test_backend_must_match_the_folder(tmp_path: Path, ctc_folders):
    plain = ctc_folders[0]
    with pytest.raises(InputError, match=r"config\.json: evaluate\.asr_backend is whisper.*CTC model"):
        open_transcriber(plain, "whisper")
    whisper = tmp_path / "whisper"  # only config.json is read before the choice
    whisper.mkdir()
    (whisper / "config.json").write_text(json.dumps({"model_type": "whisper"}))
    with pytest.raises(InputError, match=r"config\.json: evaluate\.asr_backend is ctc.*Whisper model"):
        open_transcriber(whisper, "ctc")
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"model_type": "bert", "architectures": ["BertModel"]}))
    with pytest.raises(InputError, match=r"other/config\.json: neither a Whisper model"):
        open_transcriber(other, "auto")
    with pytest.raises(InputError, match=r"config\.json: not a CTC model"):
        CTCTranscriber(other)
    assert EvaluateConfig().asr_backend == "auto" and "asr_backend" not in EvaluateConfig().key_fields()
    assert EvaluateConfig(asr_backend="ctc").key_fields()["asr_backend"] == "ctc"
