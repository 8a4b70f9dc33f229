"""The segment budget per language: measured rates, the budget arithmetic, where synthesis takes it from,
and the export's sidecar record."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from indextts_core.config import GenerationConfig
from indextts_core.synthesis.budget import (
    DEFAULT_SEGMENT_TOKENS,
    MIN_SEGMENT_TOKENS,
    SIDECAR,
    resolve_segment_budget,
    segment_budget,
    segments_record,
    tokens_per_second,
)

OPTS = GenerationConfig(num_beams=1, max_mel_tokens=3)


def test_rates_per_language_with_skipped_rows_counted():
    rows = [
        {"language": "zh", "text_len": 43, "duration": 10.0},
        {"language": "zh", "text_len": 43, "duration": 10.0},
        {"language": "en", "text_len": 31, "duration": 10.0},
        {"language": "en", "text_len": 0, "duration": 2.0},  # a silent clip: kept (0 tokens)
        {"language": "en", "text_len": 12},  # no duration
        {"language": "en", "duration": 3.0},  # no text_len
        {"language": "en", "text_len": 5, "duration": 0.0},  # no usable duration
        {"text_len": 5, "duration": 1.0},  # no language: left out
    ]
    rates = tokens_per_second(rows)
    assert rates == {
        "en": {"tokens_per_s": round(31 / 12, 4), "clips": 2, "seconds": 12.0, "skipped": 3},
        "zh": {"tokens_per_s": 4.3, "clips": 2, "seconds": 20.0, "skipped": 0},
    }
    only_skipped = tokens_per_second([{"language": "am", "text_len": 3}])
    assert only_skipped == {"am": {"tokens_per_s": None, "clips": 0, "seconds": 0.0, "skipped": 1}}
    assert segments_record(only_skipped)["tokens_per_second"] == {}  # no rate, no budget


def test_budget_arithmetic():
    assert segment_budget(4.3, 20.0) == 86  # Chinese: 86, not 85 (4.3 * 20 is 85.99999... in floats)
    assert segment_budget(3.1, 20.0) == 62  # Latin script
    assert segment_budget(3.1, 25.0) == 77
    assert segment_budget(0.05, 20.0) == MIN_SEGMENT_TOKENS  # a pathological rate: no 1-token segments
    for bad in ((0.0, 20.0), (-1.0, 20.0), (3.1, 0.0), (float("nan"), 20.0)):
        with pytest.raises(ValueError):
            segment_budget(*bad)


def test_segments_record():
    rates = tokens_per_second([{"language": "en", "text_len": 31, "duration": 10.0},
                               {"language": "am", "text_len": 50, "duration": 10.0}])
    assert segments_record(rates, 20.0) == {
        "tokens_per_second": {"am": 5.0, "en": 3.1}, "clips": {"am": 1, "en": 1}, "max_segment_s": 20.0,
        "max_text_tokens_per_segment": {"am": 100, "en": 62}}


def write_sidecar(folder: Path, rates: dict[str, float]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / SIDECAR).write_text(json.dumps({"format": "indextts-export/1",
                                              "segments": {"tokens_per_second": rates}}), encoding="utf-8")
    return folder


def test_resolution_order_configured_then_sidecar_then_default(tmp_path: Path):
    folder = write_sidecar(tmp_path / "export", {"en": 3.1, "zh": 4.3})
    opts = GenerationConfig()
    assert resolve_segment_budget(folder, "en", opts) == (62, "measured: 3.1 tokens/s × 20 s")
    assert resolve_segment_budget(folder, "zh", opts.model_copy(update={"max_segment_s": 25.0})) == \
        (107, "measured: 4.3 tokens/s × 25 s")
    configured = opts.model_copy(update={"max_text_tokens_per_segment": 40})
    assert resolve_segment_budget(folder, "en", configured) == (40, "configured")
    default = (DEFAULT_SEGMENT_TOKENS, "infer_v2 default")
    assert resolve_segment_budget(folder, "am", opts) == default  # no rate for the language
    assert resolve_segment_budget(tmp_path / "release", "en", opts) == default  # no sidecar
    assert resolve_segment_budget(None, "en", opts) == default
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / SIDECAR).write_text('{"format": "indextts-export/1"}')  # an export made before segments
    assert resolve_segment_budget(tmp_path / "old", "en", opts) == default
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / SIDECAR).write_text("{not json")
    assert resolve_segment_budget(tmp_path / "bad", "en", opts) == default


def test_synthesizer_resolves_the_budget_from_the_folder(bundle_copy, tmp_path: Path):
    """Without a budget (as the evaluation constructs it) the synthesizer cuts each language by its measured rate,
    and synthesize.json says which budget was used and why."""
    from tests_support import write_audio
    from indextts_core.synthesis.run import Synthesizer, synthesize_lines

    write_sidecar(bundle_copy.checkpoint_dir, {"en": 0.5, "am": 50.0})  # en: 0.5 x 20 s, 10 tokens per segment
    synth = Synthesizer(bundle_copy, OPTS, diffusion_steps=2)
    line = "one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen"
    segments, _ = synth.segments(line, "en")
    assert synth.segment_budget("en") == (10, "measured: 0.5 tokens/s × 20 s")
    assert len(segments) > 1 and all(len(s) <= 10 for s in segments)
    assert synth.segment_budget("zh") == (120, "infer_v2 default")
    # am: 50 x 20 s = 1000 tokens, more than the tiny GPT's text positions hold (max_text_tokens 200)
    assert synth.segment_budget("am") == (200, "measured: 50 tokens/s × 20 s; capped at the GPT's 200 text positions")
    given = Synthesizer(bundle_copy, OPTS, diffusion_steps=2, max_text_tokens_per_segment=150)
    assert given.segment_budget("en") == (150, "given") and len(given.segments(line, "en")[0]) == 1

    prompt = write_audio(tmp_path / "prompt.wav", seconds=1.0, freq=220.0)
    report = tmp_path / "synthesize.json"
    synthesize_lines(bundle_copy, ["Hello world."], "en", prompt, [tmp_path / "line1.wav"], OPTS,
                     diffusion_steps=2, report=report)
    written = json.loads(report.read_text())
    assert written["options"]["segment_budget"] == 10
    assert written["options"]["segment_budget_source"] == "measured: 0.5 tokens/s × 20 s"
    assert written["lines"][0]["segment_budget"] == 10


def test_an_export_carries_the_segments_record(tiny_bundle, tmp_path: Path):
    """The export writes ``segments`` from the rates it is given (none given: no record)."""
    from indextts_core.training.checkpointing import FORMAT
    from indextts_core.training.export import export
    from indextts_core.training.setup import prepare_model

    setup = prepare_model(tiny_bundle, tiny_bundle.tokenizer_path)
    source = tmp_path / "best.pth"
    torch.save({"format": FORMAT, "model": setup.model.state_dict(), "progress": {"step": 3},
                "fingerprint": {}}, source)
    rates = tokens_per_second([{"language": "en", "text_len": 31, "duration": 10.0},
                               {"language": "am", "text_len": 43, "duration": 10.0}])
    args = (setup.model, source)
    rest = (setup, tiny_bundle.checkpoint_dir, tiny_bundle.tokenizer_path, "float32", None, None, torch.device("cpu"))
    folder, verified, _ = export(*args, tmp_path / "export", *rest, segment_rates=rates)
    meta = json.loads((folder / SIDECAR).read_text())
    assert verified and meta["segments"] == {
        "tokens_per_second": {"am": 4.3, "en": 3.1}, "clips": {"am": 1, "en": 1}, "max_segment_s": 20.0,
        "max_text_tokens_per_segment": {"am": 86, "en": 62}}
    assert resolve_segment_budget(folder, "en", GenerationConfig()) == (62, "measured: 3.1 tokens/s × 20 s")
    plain, _, _ = export(*args, tmp_path / "plain", *rest)
    assert "segments" not in json.loads((plain / SIDECAR).read_text())
