"""The command-line flags are made from the config schema: a field is a flag, aliases keep the seed's names."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import typer
from pydantic import BaseModel, Field
from typer.testing import CliRunner

from flows.flags import config_flags, section_flags
from indextts_core.config import PipelineConfig, TrainConfig

SECTION_OF_COMMAND = {"download": "download", "ingest": "ingest", "corpus": "corpus", "extend-bpe": "extend_bpe",
                      "preprocess": "preprocess", "pairs": "pairs", "train": "train", "evaluate": "evaluate",
                      "generate": "generation", "synthesize": "generation", "run": "orchestration"}


def _flag_names(command: str) -> set[str]:
    from flows.cli import app

    group = typer.main.get_command(app)
    params = group.commands[command].params  # type: ignore[attr-defined]
    return {name for p in params for name in (*p.opts, *p.secondary_opts) if name.startswith("--")}


@pytest.mark.parametrize("command", sorted(SECTION_OF_COMMAND))
def test_every_plain_field_of_a_section_is_a_flag_of_its_command(command: str):
    names = _flag_names(command)
    section = SECTION_OF_COMMAND[command]
    flags = section_flags(section)
    assert flags, section
    for flag in flags:
        if flag.key in ("evaluate.enabled", "extend_bpe.output_name", "extend_bpe.base_model"):
            continue  # the command's own option stands for it (--output-model, --base-model), or it makes no sense
        assert flag.names[0].split("/")[0] in names, (command, flag.key)


def test_seed_flag_names_are_aliases_declared_on_the_field():
    assert {"--output-dir", "--checkpoint-dir", "--epochs", "--resume", "--warm-start", "--no-warm-start",
            "--train-manifest", "--val-manifest", "--tokenizer"} <= _flag_names("train")
    assert {"--min-duration", "--min-duration-s", "--val-speaker", "--seed", "--manifest", "--field"} \
        <= _flag_names("ingest")
    assert {"--language", "--languages", "--target-size", "--base-model", "--output-model"} <= _flag_names("extend-bpe")
    assert {"--pairs-per-target", "--seed", "--output"} <= _flag_names("build-pairs")


def test_a_field_added_to_a_section_is_a_flag_without_another_edit():
    class Train(TrainConfig):
        foo_bar: int = Field(3, ge=0, description="A setting added later.")
        tags: list[str] = Field([], description="Repeatable.")

    class Config(PipelineConfig):
        train: Train = Field(default_factory=Train)

    seen: dict[str, Any] = {}
    app = typer.Typer(rich_markup_mode=None)

    @app.command()
    @config_flags("train", schema=Config)
    def train(output: Path = Path("x"), flags: dict | None = None) -> None:
        seen.update(flags or {})

    result = CliRunner().invoke(app, ["--foo-bar", "5", "--tags", "a", "--tags", "b", "--no-freeze-base-rows",
                                      "--micro-batch-tokens", "auto", "--output", "y"])
    assert result.exit_code == 0, result.output
    assert seen == {"train.foo_bar": 5, "train.tags": ["a", "b"], "train.freeze_base_rows": False,
                    "train.micro_batch_tokens": "auto"}
    help_text = " ".join(CliRunner().invoke(app, ["--help"]).output.split())
    assert "A setting added later [train.foo_bar; default 3]" in help_text


def test_flags_reach_the_stage_config(monkeypatch: pytest.MonkeyPatch):
    from flows.cli import app
    from flows.commands import model

    got: dict[str, Any] = {}

    def stage(cfg: PipelineConfig, name: str, given: dict | None = None) -> dict:
        got["cfg"] = cfg
        raise typer.Exit(0)

    monkeypatch.setattr(model, "run_stage", stage)
    result = CliRunner().invoke(app, ["train", "--epochs", "3", "--micro-batch-tokens", "64", "--output-dir", "ck",
                                      "--no-freeze-base-rows", "--lora-targets", "attn.c_attn", "--amp", "off",
                                      "--set", "train.epochs=4"])
    assert result.exit_code == 0, result.output
    train = got["cfg"].train
    assert (train.epochs, train.micro_batch_tokens, train.checkpoint_dir, train.freeze_base_rows) == (4, 64, Path("ck"),
                                                                                                       False)
    assert train.lora_targets == ["attn.c_attn"] and train.amp == "off"  # --set wins over the flag


def test_a_bad_flag_value_names_the_flag_or_the_field(monkeypatch: pytest.MonkeyPatch):
    from flows.cli import app

    bad_choice = CliRunner().invoke(app, ["train", "--amp", "fast"])
    assert bad_choice.exit_code == 2 and "--amp" in bad_choice.output
    bad_union = CliRunner().invoke(app, ["train", "--micro-batch-tokens", "lots"])
    said = " ".join(bad_union.output.split())
    assert bad_union.exit_code == 2 and "--micro-batch-tokens 'lots': train.micro_batch_tokens" in said


def test_fields_that_are_not_plain_values_are_left_to_yaml_and_set():
    keys = {f.key for f in section_flags("download")} | {f.key for f in section_flags("storage")}
    assert "download.checkpoint" not in keys and "storage.secret_access_key" not in keys
    assert {"download.offline", "storage.uri"} <= keys
    assert all(isinstance(getattr(PipelineConfig.model_fields[s].annotation, "model_fields", None), dict)
               for s in SECTION_OF_COMMAND.values())
    assert issubclass(TrainConfig, BaseModel)
