"""Configuration: defaults, YAML, overrides, and errors that name the field and the file."""

from __future__ import annotations

from pathlib import Path

import pytest

from indextts_core.config import DEMO_CONFIG, PipelineConfig, dump_config, load_config, parse_overrides
from indextts_core.errors import ConfigError


def test_defaults_work_and_point_at_the_demo():
    cfg = load_config()
    assert isinstance(cfg, PipelineConfig)
    assert Path(cfg.ingest.source.source, "manifest.jsonl").is_file()
    assert cfg.extend_bpe.target_size == 24000
    assert cfg.train.val_interval == 1000 and cfg.train.keep_checkpoints == 3


def test_yaml_file_and_overrides_merge(tmp_path: Path):
    path = tmp_path / "run.yaml"
    path.write_text("language: ja\ntrain:\n  epochs: 5\n  learning_rate: 1.0e-4\n", encoding="utf-8")
    cfg = load_config(path, ["train.epochs=7", "ingest.val_fraction=0.2"])
    assert cfg.language == "ja"
    assert cfg.train.epochs == 7  # override beats file
    assert cfg.train.learning_rate == pytest.approx(1e-4)  # file beats default
    assert cfg.ingest.val_fraction == pytest.approx(0.2)


def test_wrong_type_names_field_and_file(tmp_path: Path):
    path = tmp_path / "bad.yaml"
    path.write_text("ingest:\n  min_duration_s: short\n", encoding="utf-8")
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert f"{path}: ingest.min_duration_s:" in str(e.value)
    assert "'short'" in str(e.value)


def test_unknown_field_suggests_the_right_one(tmp_path: Path):
    path = tmp_path / "typo.yaml"
    path.write_text("ingest:\n  max_duraton_s: 12\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"typo\.yaml: ingest\.max_duraton_s: unknown field \(did you mean 'max_duration_s'\?\)"):
        load_config(path)


def test_every_bad_field_is_reported_at_once(tmp_path: Path):
    path = tmp_path / "many.yaml"
    path.write_text("train:\n  epochs: 0\n  amp: maybe\nlanguage: Amharic\n", encoding="utf-8")
    with pytest.raises(ConfigError) as e:
        load_config(path)
    msg = str(e.value)
    for field in ("train.epochs", "train.amp", "language"):
        assert f"{path}: {field}:" in msg


def test_cross_field_check(tmp_path: Path):
    with pytest.raises(ConfigError, match="min_duration_s .* must be below max_duration_s"):
        load_config(overrides=["ingest.min_duration_s=10", "ingest.max_duration_s=5"])


def test_override_errors_name_the_override():
    with pytest.raises(ConfigError, match=r"override train\.epochs='many': train\.epochs:"):
        load_config(overrides=["train.epochs=many"])
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        parse_overrides(["train.epochs"])
    with pytest.raises(ConfigError, match="'epochs' is a value, not a section"):
        load_config(overrides=["train.epochs=2", "train.epochs.x=1"])


def test_invalid_yaml_names_the_line(tmp_path: Path):
    path = tmp_path / "broken.yaml"
    path.write_text("train:\n  epochs: 2\n  lr: [1, 2\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=rf"{path}:\d+: invalid YAML"):
        load_config(path)


def test_missing_file_and_non_mapping(tmp_path: Path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    path = tmp_path / "list.yaml"
    path.write_text("- a\n- b\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(path)


def test_override_values_are_typed():
    parsed = parse_overrides(["a=3", "b=0.5", "c=null", "d=[x, y]", "e=hello world", "f="])
    assert parsed == {"a": 3, "b": 0.5, "c": None, "d": ["x", "y"], "e": "hello world", "f": ""}


def test_hub_source_needs_a_pinned_revision():
    with pytest.raises(ConfigError, match="download.checkpoint: .*pin a revision"):
        load_config(overrides={"download.checkpoint": {"source": "hf://IndexTeam/IndexTTS-2"}})


@pytest.mark.parametrize("revision", ["<commit>", "has space", "..", "-main", "https://hf.co/x"])
def test_placeholder_or_malformed_revision_is_a_config_error_naming_the_field(tmp_path: Path, revision: str):
    """Found in use: ``revision: <commit>`` was accepted and the hub was asked for resolve/%3Ccommit%3E."""
    path = tmp_path / "run.yaml"
    path.write_text(f"download:\n  checkpoint: {{source: hf://IndexTeam/IndexTTS-2, revision: '{revision}'}}\n")
    with pytest.raises(ConfigError, match=r"download\.checkpoint\.revision: .*is not a revision"):
        load_config(path)
    for good in ("main", "v2.0", "0123456789abcdef0123456789abcdef01234567", "refs/pr/3"):
        assert load_config(overrides={"download.checkpoint": {"source": "hf://IndexTeam/IndexTTS-2",
                                                              "revision": good}}).download.checkpoint.revision == good


def test_secrets_are_masked_and_dump_round_trips(tmp_path: Path):
    cfg = load_config(overrides=["storage.secret_access_key=very-secret", "train.epochs=4"])
    text = dump_config(cfg)
    assert "very-secret" not in text and "very-secret" not in repr(cfg)
    assert cfg.storage.secret_access_key.get_secret_value() == "very-secret"
    path = tmp_path / "dumped.yaml"
    path.write_text(dump_config(load_config(overrides=["train.epochs=4"])), encoding="utf-8")
    assert load_config(path) == load_config(overrides=["train.epochs=4"])


@pytest.mark.parametrize("path", [*sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml")),
                                  DEMO_CONFIG], ids=lambda p: p.name)
def test_shipped_configs_load(path: Path):
    """Every configuration under configs/, and the demo's in the package, is valid as shipped (a stale example
    fails here, not at a user's desk)."""
    cfg = load_config(path)
    assert cfg.run.name and cfg.train.epochs >= 1


def test_former_section_name_dataset_still_loads(tmp_path: Path):
    """Files and overrides written for the section's former name (dataset:) keep working."""
    path = tmp_path / "old.yaml"
    path.write_text("dataset:\n  val_fraction: 0.25\n", encoding="utf-8")
    cfg = load_config(path, ["dataset.min_duration_s=0.7"])
    assert cfg.ingest.val_fraction == 0.25 and cfg.ingest.min_duration_s == 0.7


def test_the_real_run_config_names_every_model_source():
    """Found in use: the Amharic config left the encoders unset and preprocess ended in a traceback.  It now names
    all six hub sources (each with a revision `download --pin` turns into a commit)."""
    from indextts_core.store.download import configured_assets

    cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / "indextts2-amharic.yaml")
    assets = configured_assets(cfg)
    for name in ("checkpoint", "w2v_bert", "semantic_codec", "campplus", "bigvgan", "asr"):
        assert assets[name].source.startswith("hf://") and assets[name].revision, name
