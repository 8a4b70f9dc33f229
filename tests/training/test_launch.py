"""The train stage's torchrun entry point: what a spec carries, and what it never carries (secrets)."""

from __future__ import annotations

from pathlib import Path

from indextts_core.config import PairsConfig, StorageConfig, TrainConfig
from indextts_core.preprocess.pairs import PairingPolicy
from indextts_core.training import TrainInputs
from indextts_core.training.launch import read_spec, write_spec


def test_a_spec_round_trips_and_keeps_secrets_out(tmp_path: Path):
    inputs = TrainInputs(tmp_path / "ckpt", tmp_path / "bpe.model", tmp_path / "train.jsonl", None, tmp_path / "out",
                         pairing=PairingPolicy(PairsConfig(pairs_per_target=3), seed=7),
                         feature_dir=tmp_path / "features")
    options = TrainConfig(max_steps=4, learning_rate=1e-3, resume="auto", warm_start=True)
    storage = StorageConfig(uri="s3://bucket/x", access_key_id="AKIDSECRET", secret_access_key="very-secret-key")
    path = write_spec(tmp_path / "launch.json", inputs, options, 1234, storage)
    text = path.read_text(encoding="utf-8")
    assert "very-secret-key" not in text and "AKIDSECRET" not in text  # credentials travel in the environment
    got, got_options, seed = read_spec(path)
    assert seed == 1234 and got_options == options
    assert (got.checkpoint_dir, got.tokenizer, got.train, got.val, got.output_dir, got.feature_dir) == (
        inputs.checkpoint_dir, inputs.tokenizer, inputs.train, None, inputs.output_dir, inputs.feature_dir)
    assert (got_options.resume, got_options.warm_start) == ("auto", True)  # where to start: the settings' fields
    assert got.pairing == inputs.pairing and callable(got.read_audio)
