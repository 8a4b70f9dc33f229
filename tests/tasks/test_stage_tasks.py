"""Stage tasks called directly (``task.fn``): the shared skeleton, outputs, results and cache keys.

No Prefect server and no MLflow here: tracking is off (``RunContext()``), the store is a folder.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from indextts_core.config import AssetSource, PairsConfig, PipelineConfig, load_config
from indextts_core.errors import InputError
from indextts_core.store.download import fetch_asset
from indextts_core.store.objects import open_store
from tasks.artifacts import asset_ref
from tasks.context import RunContext
from tasks.corpus import corpus_task
from tasks.extend_bpe import extend_bpe_task
from tasks.ingest import ingest_task
from tasks.keys import config_subset
from tasks.keys import STAGE_KEYS
from tests_support import DEMO_DIR


def _cfg(tmp_path: Path, **overrides: object) -> PipelineConfig:
    return load_config(overrides={"run.output_dir": str(tmp_path / "run"), "storage.uri": str(tmp_path / "store"),
                                  "extend_bpe.target_size": 500, **overrides})


def test_ingest_corpus_extend_bpe_tasks_chain(tmp_path: Path):
    cfg = _cfg(tmp_path)
    store = open_store(cfg.storage.uri)
    dataset = asset_ref(fetch_asset("dataset", AssetSource(source=str(DEMO_DIR)), store))
    checkpoint = asset_ref(fetch_asset("checkpoint", AssetSource(source="tiny://0"), store))
    ctx = RunContext()

    ingested = ingest_task.fn(cfg, dataset, ctx=ctx)
    assert ingested.stage == "ingest" and ingested.metrics["accepted"] == 60 and ingested.metrics["rejected"] == 0
    assert ingested.data["report"]["speakers"] == 4  # the next layer reads the numbers, not the JSON file
    assert (cfg.run.output_dir / "ingest" / "manifest.jsonl").is_file()
    assert store.dir_exists(ingested.artifact.prefix) and ingested.artifact.prefix.startswith("artifacts/ingest/")

    corpus = corpus_task.fn(cfg, ingested.artifact, "frontend-fp", ctx=ctx)
    assert corpus.data["stats"]["am"]["lines"] == 48 and corpus.outputs["am.frontend"] == "am.frontend.txt"
    # no machine paths in what is stored: the same content gives the same digest anywhere
    assert str(tmp_path) not in (cfg.run.output_dir / "corpus" / "stats.json").read_text()

    tokenizer = extend_bpe_task.fn(cfg, corpus.artifact, checkpoint, "frontend-fp", ctx=ctx)
    m = tokenizer.metrics
    assert m["vocab_size"] > m["base_size"] and m["base_drift"] == 0 and m["am.unk_char_rate_after"] == 0
    assert (cfg.run.output_dir / "extend-bpe" / cfg.extend_bpe.output_name).is_file()

    again = ingest_task.fn(cfg, dataset, ctx=ctx)  # same inputs, same bytes: the same artifact
    assert again.artifact.digest == ingested.artifact.digest


def test_a_failed_stage_keeps_its_evidence(tmp_path: Path):
    bad = tmp_path / "data"
    bad.mkdir()
    lines = (DEMO_DIR / "manifest.jsonl").read_text(encoding="utf-8").splitlines()[:3]
    (bad / "manifest.jsonl").write_text("\n".join(lines[:2] + ["{broken"]) + "\n", encoding="utf-8")
    cfg = _cfg(tmp_path, **{"ingest.max_rejected_fraction": 0.0})
    store = open_store(cfg.storage.uri)
    dataset = asset_ref(fetch_asset("dataset", AssetSource(source=str(bad)), store))
    with pytest.raises(InputError, match="rejected"):
        ingest_task.fn(cfg, dataset, ctx=RunContext())
    rejects = [json.loads(x) for x in (cfg.run.output_dir / "ingest" / "rejects.jsonl").read_text().splitlines()]
    # every row is accounted for, with its line and reason (the two good rows have no audio here)
    assert len(rejects) == 3 and "invalid_row" in {r["reason_code"] for r in rejects}
    assert {r["line"] for r in rejects} == {1, 2, 3}


def test_every_config_field_is_keyed_unless_declared_not_to_be():
    cfg = PipelineConfig()
    for name, field in PipelineConfig.model_fields.items():
        section = getattr(cfg, name)
        if hasattr(section, "key_fields"):
            omitted = type(section).KEY_OMITTED_AT_DEFAULT
            assert set(section.key_fields()) | section.NOT_IN_KEY | set(omitted) == set(type(section).model_fields), name
            assert not section.NOT_IN_KEY - set(type(section).model_fields), f"{name}: NOT_IN_KEY names no field"
            # a field left out at its default names a field (its default is declared once, on the field)
            assert not set(omitted) - set(type(section).model_fields), f"{name}: KEY_OMITTED_AT_DEFAULT names no field"


def test_fields_added_later_change_the_key_only_when_set():
    """lora_* and lang_* leave a 2.0 run's keys as they were, and are keyed once set."""
    from indextts_core.config import ExtendBpeConfig, TrainConfig

    assert not {"lora_rank", "lora_alpha", "lora_targets"} & set(TrainConfig().key_fields())
    assert TrainConfig(lora_rank=8).key_fields()["lora_rank"] == 8
    assert TrainConfig(lora_rank=8, lora_alpha=4.0).key_fields()["lora_alpha"] == 4.0
    assert ExtendBpeConfig(lang_code="ar").key_fields()["lang_code"] == "ar"
    assert "lang_code" not in ExtendBpeConfig().key_fields()


def test_a_new_field_is_in_the_cache_key_by_default():
    """Adding a field to a section is one edit: it reaches the stage's cache key without a key list."""

    class PairsWithKnob(PairsConfig):
        new_knob: int = 3

    base = PipelineConfig()
    extended = PipelineConfig.model_construct(**{**dict(base), "pairs": PairsWithKnob()})
    keys = config_subset(extended, STAGE_KEYS["pairs"])
    assert keys["pairs.new_knob"] == 3
    assert "pairs.new_knob" not in config_subset(base, STAGE_KEYS["pairs"])
    assert "train.device" not in config_subset(base, STAGE_KEYS["train"])  # declared: does not change the output
