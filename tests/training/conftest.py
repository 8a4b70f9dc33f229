"""A preprocessed copy of the demo dataset (tiny bundle, extended tokenizer, features, pairs), built once."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from tests_support import DEMO_DIR


@dataclass(frozen=True)
class Processed:
    checkpoint: Path
    tokenizer: Path
    data: Path  # processed_data: index, text ids, features/, pair files

    @property
    def train_pairs(self) -> Path:
        return self.data / "GPT_pairs_train.jsonl"

    @property
    def val_pairs(self) -> Path:
        return self.data / "GPT_pairs_val.jsonl"


@pytest.fixture(scope="session")
def processed(tiny_bundle, tmp_path_factory: pytest.TempPathFactory) -> Processed:
    from indextts_core.config import load_config
    from indextts_core.config import IngestConfig
    from indextts_core.data.ingest import ManifestInput, ingest
    from indextts_core.text.frontend import TextFrontend
    from indextts_core.preprocess.pairs import PairingPolicy, build_pairs
    from indextts_core.preprocess import (
        FeatureFolder,
        clips_from_manifests,
        featureset_id,
        model_folder_digests,
        prepare,
        preprocess,
    )
    from tests_support import extend_tokenizer

    root = tmp_path_factory.mktemp("processed")
    ingested = ingest([ManifestInput(DEMO_DIR / "manifest.jsonl")], root / "dataset", IngestConfig(), seed=1234)
    clips = clips_from_manifests({"train": ingested.train, "val": ingested.val})
    fe = TextFrontend()
    corpus = {"am": [fe(c.text, "am") for c in clips if c.language == "am"]}
    tokenizer = extend_tokenizer(tiny_bundle.tokenizer_path, corpus, root / "tokenizer", fe)
    out = root / "processed_data"
    cfg = load_config()
    # the stage's one path, with its features in a local folder named as the flow names them
    featureset = featureset_id(model_folder_digests(tiny_bundle.checkpoint_dir), cfg.preprocess,
                               tiny_bundle.hidden_layer)
    preprocess(prepare(clips, tiny_bundle, tokenizer, fe, cfg.preprocess), FeatureFolder(out / "features", featureset),
               out, cfg.preprocess, min_duration_s=cfg.ingest.min_duration_s, max_duration_s=cfg.ingest.max_duration_s)
    pool = [out / "train_manifest.jsonl", out / "val_manifest.jsonl"]
    build_pairs(pool[0], out / "GPT_pairs_train.jsonl", PairingPolicy(seed=1234), pool)
    build_pairs(pool[1], out / "GPT_pairs_val.jsonl", PairingPolicy(seed=1234), pool)
    return Processed(tiny_bundle.checkpoint_dir, tokenizer, out)
