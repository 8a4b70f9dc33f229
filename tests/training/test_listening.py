"""Audio samples during training: which items, when, what the sinks get, and that they leave the weights alone."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from indextts_core.config import TrainConfig
from indextts_core.model.bundle import open_bundle
from indextts_core.preprocess.pairs import PairingPolicy
from indextts_core.training import TrainInputs, train
from indextts_core.training.data import conditioning_positions
from indextts_core.training.listening import AudioSamples, pick_items
from indextts_core.training.samples import open_data, validation_samples
from indextts_core.training.setup import prepare_model


@pytest.fixture(scope="module")
def setup(processed):
    bundle = open_bundle(processed.checkpoint)
    model = prepare_model(bundle, processed.tokenizer, True, True, 0.0, False).model.eval()
    data = open_data(processed.train_pairs, processed.val_pairs, None, conditioning_positions(model.cfg))
    samples = validation_samples(data, processed.val_pairs, PairingPolicy(seed=1))
    return bundle, model, data, samples


def test_items_per_language_schedule_and_repeatable_audio(setup, processed, tmp_path: Path):
    bundle, model, data, samples = setup
    picked = pick_items(data, samples, 1, seed=3)
    assert sorted(data.rows[s.target]["language"] for s in picked) == ["am", "en"]
    assert pick_items(data, samples, 1, seed=3) == picked
    audio = AudioSamples(bundle, processed.tokenizer, data, samples, 1, 2, 3, 2, tmp_path / "samples",
                         decoding="greedy", max_ratio=1.0)
    assert [audio.due() for _ in range(5)] == [True, False, True, False, True]  # step 0, then every 2nd
    assert audio.due(final=True)  # and the last validation
    first = audio(model, 7, torch.device("cpu"))
    assert [tag for tag, _, _ in first] == [f"samples/{data.rows[s.target]['language']}-{data.rows[s.target]['id']}"
                                            for s in picked]
    for _, wav, samples_ in first:
        assert wav.parent.name == "step_000007"
        read, sr = sf.read(wav, dtype="float32")
        assert sr == 22050 and len(read) == len(samples_) and np.abs(samples_).max() <= 1.0
    again = audio(model, 8, torch.device("cpu"))
    assert [w.read_bytes() for _, w, _ in again] == [w.read_bytes() for _, w, _ in first]  # same items, same seeds
    assert audio.seconds > 0


def test_off_with_a_reason_without_synthesis_models(setup, processed, tmp_path: Path, caplog):
    _, _, data, samples = setup
    folder = tmp_path / "ckpt"
    shutil.copytree(processed.checkpoint, folder)
    (folder / "s2mel.pth").unlink()
    with caplog.at_level("INFO"):
        audio = AudioSamples(open_bundle(folder), processed.tokenizer, data, samples, 2, 1, 0, 2, tmp_path / "s")
    assert not audio and not audio.due()
    assert "no audio samples during training: " in caplog.text and "s2mel.pth: S2Mel weights missing" in caplog.text


class AudioSink:
    def __init__(self):
        self.audio: list[tuple[str, int]] = []
        self.metrics: dict[int, dict[str, float]] = {}

    def log(self, metrics, step):
        self.metrics.setdefault(step, {}).update(metrics)

    def log_audio(self, tag, wav, samples, sample_rate, step):
        assert Path(wav).is_file() and sample_rate == 22050
        self.audio.append((tag, step))

    def close(self):
        pass


@pytest.mark.slow
def test_trainer_speaks_at_validations_into_sinks_and_tensorboard_without_changing_the_weights(processed,
                                                                                                tmp_path: Path):
    opts = dict(epochs=1, batch_tokens=1024, learning_rate=1e-3, warmup_steps=2, val_interval=2, max_steps=4,
                export=False, device="cpu", workers=0, val_generate=0, val_audio_diffusion_steps=2,
                val_generate_decoding="greedy", val_generate_max_ratio=1.0)
    sink = AudioSink()
    heard = tmp_path / "heard"
    train(TrainInputs(processed.checkpoint, processed.tokenizer, processed.train_pairs, processed.val_pairs, heard),
          TrainConfig(**opts, val_audio_samples=1), sinks=[sink])
    assert sorted({step for _, step in sink.audio}) == [0, 2, 4]
    assert {tag.split("/")[1].split("-")[0] for tag, _ in sink.audio} == {"am", "en"}
    assert all("time/audio_samples_s" in sink.metrics[s] for s in (0, 2, 4))
    assert sorted(p.name for p in (heard / "samples").iterdir()) == ["step_000000", "step_000002", "step_000004"]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(heard / "logs"), size_guidance={"audio": 0}).Reload()
    assert len(events.Tags()["audio"]) == 2 and len(events.Audio(events.Tags()["audio"][0])) == 3

    silent = tmp_path / "silent"
    train(TrainInputs(processed.checkpoint, processed.tokenizer, processed.train_pairs, processed.val_pairs, silent),
          TrainConfig(**opts, val_audio_samples=0))
    assert not (silent / "samples").exists()
    a = torch.load(heard / "latest.pth", map_location="cpu", weights_only=True)["model"]
    b = torch.load(silent / "latest.pth", map_location="cpu", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)  # listening draws from its own random streams only
