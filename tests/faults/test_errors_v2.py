"""Fault campaign, errors: a damaged or hostile file, an empty input, a failed stage each end in one clear
line that names the file and says what to do, never a raw traceback."""

from __future__ import annotations

import json
import logging
import pickle
import shutil
from pathlib import Path

import pytest
import torch
from prefect import flow, task
from prefect.cache_policies import INPUTS
from typer.testing import CliRunner

from indextts_core.config import StorageConfig
from indextts_core.errors import InputError
from indextts_core.utils.safe_load import torch_load
from tasks.policies import STAGE_TASK_OPTIONS
from tasks.result_storage import result_storage

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


class _Payload:
    """What an attacker would store: unpickling it creates a file (any code could run instead)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_truncated_checkpoint_is_damaged_and_only_a_pickle_is_refused_as_one(tmp_path: Path):
    gpt = tmp_path / "gpt.pth"
    torch.save({"w": torch.zeros(256)}, gpt)
    whole = gpt.read_bytes()
    for size in (len(whole) // 2, 100, 10, 0):  # cut mid-tensor, inside the zip header, before it, empty
        gpt.write_bytes(whole[:size])
        with pytest.raises(InputError) as e:
            torch_load(gpt, "GPT weights (gpt.pth)")
        message = str(e.value)
        assert message.startswith(f"{gpt}: GPT weights (gpt.pth) is damaged or incomplete (")
        assert message.endswith("download/copy it again") and "\n" not in message
        assert "unpickling" not in message

    marker = tmp_path / "code-ran"
    torch.save({"w": torch.zeros(4), "hook": _Payload(marker)}, gpt)
    with pytest.raises(InputError, match=rf"^{gpt}: GPT weights \(gpt.pth\) refused: it can only be read by "
                                         "unpickling Python objects"):
        torch_load(gpt, "GPT weights (gpt.pth)")
    assert not marker.exists()


def test_a_truncated_w2vbert_safetensors_is_an_input_error_naming_it(tmp_path: Path):
    from indextts_core.model.features import SemanticFeatures

    w2v = tmp_path / "w2vbert_tiny"
    shutil.copytree(FIXTURES / "w2vbert_tiny" / "model", w2v / "model")
    weights = w2v / "model" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(InputError) as e:
        SemanticFeatures.from_dirs(w2v / "model", FIXTURES / "w2vbert_tiny" / "wav2vec2bert_stats.pt",
                                   FIXTURES / "w2vbert_tiny" / "feature_extractor")
    message = str(e.value)
    assert message.startswith(f"{weights}: cannot load Wav2Vec2-BERT (")
    assert "damaged or incomplete: download/copy it again" in message and "\n" not in message


def test_a_pickled_whisper_bin_is_refused_naming_it_and_runs_nothing(tmp_path: Path):
    from indextts_core.evaluation.asr import WhisperTranscriber
    from indextts_core.tiny import write_tiny_whisper

    folder = write_tiny_whisper(tmp_path / "whisper", languages=("en",))
    (folder / "model.safetensors").unlink()
    marker = tmp_path / "code-ran"
    torch.save({"model.encoder.conv1.weight": torch.zeros(1), "hook": _Payload(marker)},
               folder / "pytorch_model.bin")
    with pytest.raises(InputError) as e:
        WhisperTranscriber(folder)
    message = str(e.value)
    assert message.startswith(f"{folder / 'pytorch_model.bin'}: Whisper weights refused")
    assert "safetensors" in message and "\n" not in message
    assert not marker.exists()


def test_an_error_message_with_brackets_is_printed_intact():
    from flows.cli import app

    result = CliRunner().invoke(app, ["normalize", "--language", "tokens[k]", "x"])
    assert result.exit_code == 2
    assert "error: 'tokens[k]' is not an ISO 639-1 or 639-3 language code" in result.stderr


def test_a_planted_result_that_is_not_json_data_is_logged_as_an_error_and_recomputed(
        tmp_path: Path, caplog: pytest.LogCaptureFixture):
    # test_result_records.py plants a record that names the pickle serializer; this one claims to be
    # indextts-json and carries a pickle as its result, which Prefect would refuse without a word
    block = result_storage(StorageConfig(uri=str(tmp_path / "store")))
    calls: list[int] = []

    @task(cache_policy=INPUTS, **{**STAGE_TASK_OPTIONS, "retries": 0})
    def step(x: int) -> dict:
        calls.append(x)
        return {"x": x}

    @flow
    def pipeline() -> dict:
        return step.with_options(result_storage=block)(1)

    assert pipeline() == {"x": 1}
    (record,) = [p for p in (tmp_path / "store" / "prefect-results").rglob("*")
                 if p.is_file() and not p.name.startswith(".")]
    stored = json.loads(record.read_bytes())
    marker = tmp_path / "code-ran"
    stored["result"] = pickle.dumps(_Payload(marker)).decode("latin-1")
    record.write_text(json.dumps(stored))
    caplog.clear()
    assert pipeline() == {"x": 1}
    assert calls == [1, 1]  # recomputed ...
    assert not marker.exists()  # ... never unpickled ...
    errors = [r for r in caplog.records if r.levelno == logging.ERROR and r.name == "tasks.result_storage"]
    assert errors, caplog.text  # ... and said so, naming the record
    assert f"{record.name}: result record refused unread: a stage result that is not indextts-json data" \
        in errors[0].getMessage()
    assert str(tmp_path / "store") in errors[0].getMessage()
    assert json.loads(json.loads(record.read_bytes())["result"]) == {"data": {"x": 1}, "kind": "json"}  # replaced

    record.write_bytes(pickle.dumps(_Payload(marker)))  # a bare pickle where the record was
    caplog.clear()
    assert pipeline() == {"x": 1}
    assert calls == [1, 1, 1] and not marker.exists()
    assert f"{tmp_path / 'store'}" in caplog.text and "not a result record of this platform" in caplog.text


def test_an_empty_lines_file_fails_before_any_model_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from flows.cli import app
    from flows.commands import speech

    def no_model(*args: object, **kwargs: object) -> None:
        raise AssertionError("a model was opened")

    monkeypatch.setattr(speech, "open_model", no_model)
    model = tmp_path / "model"
    model.mkdir()
    prompt = tmp_path / "voice.wav"
    prompt.write_bytes(b"RIFF")
    lines = tmp_path / "lines.txt"
    for content in ("", "  \n\n\t\n"):
        lines.write_text(content)
        for command in ("generate", "synthesize"):
            result = CliRunner().invoke(app, [command, "--model", str(model), "--speaker-prompt", str(prompt),
                                              "--lines", str(lines), "--output-dir", str(tmp_path / "out")])
            assert result.exit_code == 2, (command, result.output)
            # the console wraps at its width, possibly inside the path: compare without any whitespace
            assert f"error:nolinestosayin{lines}" in "".join(result.stderr.split()), command
    assert not (tmp_path / "out").exists()


def test_a_failed_stage_is_one_console_line_and_keeps_its_traceback_for_the_log(caplog: pytest.LogCaptureFixture):
    """Whatever the exception: Prefect's lines about the failed task and flow run stay off the console (the
    command's ``error:`` line says it once); the log file's records keep every traceback."""
    from flows.cli_logging import ConsoleHandler

    @task(retries=0)
    def load(kind: str) -> None:
        if kind == "input":
            raise InputError("/ckpt: gpt.pth not found")
        raise RuntimeError("a bug")

    @flow
    def stage(kind: str) -> None:
        load(kind)

    for kind, error in (("input", InputError), ("bug", RuntimeError)):
        caplog.clear()
        with pytest.raises(error):
            stage(kind)
        runs = [r for r in caplog.records if r.name.startswith("prefect.")]
        console = ConsoleHandler()
        shown = [s for s in (console.shown(r) for r in runs) if s is not None]
        failed = [s for s in shown if s.levelno >= logging.ERROR]
        assert failed == [], [s.getMessage() for s in failed]  # the command's error line is the one line
        assert console.hid_tracebacks  # so the command prints where the full log is
        assert all(not s.exc_info and not s.exc_text for s in shown)
        assert not any(s.getMessage().startswith("Finished in state Failed") for s in shown)
        assert sum(bool(r.exc_info) for r in runs) >= 1  # the log file still gets the traceback
