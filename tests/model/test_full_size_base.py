"""The full-size random base (``random://<seed>``): released shapes, the loaders' own classes, written once.

Nothing full-size is allocated here: the models are built on the meta device and compared with the
release's key/shape lists, the write path runs with tiny widths put in place of the released ones,
and the ``random://`` source is routed to a stand-in writer.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from indextts_core.config import AssetSource
from indextts_core.errors import DownloadError
from indextts_core.tiny import full
from tests_support import FIXTURES


def _fixture(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text())


def _shapes(sd: dict) -> list[tuple[str, list[int]]]:
    return [(k, list(v.shape)) for k, v in sd.items()]


def _expected(entries: list[dict]) -> list[tuple[str, list[int]]]:
    return [(e["key"], e["shape"]) for e in entries]


def test_the_configs_are_the_released_ones():
    assert full.FULL_GPT == _fixture("indextts2_gpt_full_shapes.json")["gpt_config"]
    assert full.FULL_S2MEL == _fixture("s2mel_full_shapes.json")["s2mel_config"]
    assert full.FULL_BIGVGAN == _fixture("bigvgan_full_shapes.json")["config"]
    assert full.FULL_CODEC == _fixture("semantic_codec_full_shapes.json")["semantic_codec_config"]


def test_gpt_codec_and_synthesis_models_have_the_released_key_lists():
    from indextts_core.model.checkpoint import official_state_dict

    with torch.device("meta"):
        gpt, codec, parts = full.gpt_model(), full.codec_model(), full.s2mel_models()
        vocoder, campplus = full.bigvgan_model(), full.campplus_model()
    ref = _fixture("indextts2_gpt_full_shapes.json")
    assert _shapes(official_state_dict(gpt)) == _expected(ref["state_dict"])  # keys, shapes and order
    assert sum(p.numel() for p in gpt.parameters()) == ref["total_parameters"] == 865_980_639
    assert _shapes(codec.state_dict()) == _expected(_fixture("semantic_codec_full_shapes.json")["state_dict"])
    s2mel = _fixture("s2mel_full_shapes.json")["net"]
    assert list(parts) == list(s2mel) == ["cfm", "length_regulator", "gpt_layer"]
    for name, module in parts.items():
        assert sorted(_shapes(module.state_dict())) == sorted(_expected(s2mel[name])), name
    for module, name in ((vocoder, "bigvgan_full_shapes.json"), (campplus, "campplus_full_shapes.json")):
        assert sorted(_shapes(module.state_dict())) == sorted(_expected(_fixture(name)["state_dict"])), name


def test_w2v_bert_and_qwen_have_the_released_sizes():
    with torch.device("meta"):
        w2v, qwen = full.w2v_bert_model(), full.qwen_model()
    assert w2v.config.hidden_size == 1024 and w2v.config.num_hidden_layers == 24
    assert sum(p.numel() for p in w2v.parameters()) == 580_493_120  # 2.32 GB in float32, as the hub file
    assert sum(p.numel() for p in qwen.parameters()) == 596_049_920  # 1.19 GB in bfloat16, as the release


@pytest.fixture()
def shrunk(monkeypatch: pytest.MonkeyPatch) -> None:
    """The tiny bundle's widths in place of the released ones (the write path is the same)."""
    from indextts_core.tiny import bundle

    monkeypatch.setattr(full, "FULL_GPT", dict(bundle.TINY_GPT, number_text_tokens=full.FULL_PIECES))
    monkeypatch.setattr(full, "FULL_CODEC", bundle.TINY_CODEC)
    monkeypatch.setattr(full, "FULL_S2MEL", bundle.TINY_S2MEL)
    monkeypatch.setattr(full, "FULL_BIGVGAN", bundle.TINY_BIGVGAN)
    monkeypatch.setattr(full, "FULL_W2V_BERT", dict(full.FULL_W2V_BERT, num_hidden_layers=1, intermediate_size=64))
    monkeypatch.setattr(full, "FULL_QWEN", dict(full.FULL_QWEN, vocab_size=300, hidden_size=16, intermediate_size=32,
                                                num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                                                head_dim=8))


def _load_everything(root: Path) -> None:
    """Every model of the folder through the pipeline's own loaders, strictly."""
    from transformers import AutoModelForCausalLM, Wav2Vec2BertModel

    from indextts_core.model.bigvgan import load_bigvgan
    from indextts_core.model.bundle import open_bundle
    from indextts_core.model.campplus import load_campplus
    from indextts_core.model.s2mel import load_front
    from indextts_core.model.s2mel_decoder import load_decoder

    bundle = open_bundle(root)
    assert bundle.kind == "full-random" and bundle.campplus_config is None  # the release's CAMPPlus widths
    bundle.load_gpt(strict=True)
    bundle.load_codec()
    Wav2Vec2BertModel.from_pretrained(str(bundle.w2v_bert_dir), local_files_only=True)
    load_front(bundle.s2mel_path, bundle.config["s2mel"], bundle.gpt_config.model_dim)
    load_decoder(bundle.s2mel_path, bundle.config["s2mel"])
    load_bigvgan(bundle.bigvgan_dir)
    load_campplus(bundle.campplus_path, bundle.campplus_config)
    qwen = AutoModelForCausalLM.from_pretrained(str(root / bundle.config["qwen_emo_path"]), local_files_only=True)
    assert next(qwen.parameters()).dtype == torch.bfloat16


@pytest.mark.slow  # about 10 s warm; most of a cold run is importing transformers' models
def test_the_written_folder_loads_through_the_pipelines_loaders(tmp_path: Path, shrunk: None):
    import sentencepiece as spm

    from indextts_core.store.sources import CHECKPOINT_INFERENCE, CHECKPOINT_REQUIRED, missing_entries

    root = tmp_path / "ckpt"
    bundle = full.write_full_bundle(root, seed=3)
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    assert set(CHECKPOINT_REQUIRED) <= set(files) and not missing_entries(files)
    assert not missing_entries(files, CHECKPOINT_INFERENCE)
    assert {"hf_cache/semantic_codec_model.safetensors", "hf_cache/campplus_cn_common.bin",
            "hf_cache/bigvgan/config.json", "hf_cache/bigvgan/bigvgan_generator.pt",
            "hf_cache/w2v-bert-2.0/model.safetensors", "hf_cache/w2v-bert-2.0/preprocessor_config.json"} <= set(files)
    sp = spm.SentencePieceProcessor(model_file=str(bundle.tokenizer_path))
    assert sp.GetPieceSize() == 12000 == bundle.gpt_config.number_text_tokens
    assert (sp.bos_id(), sp.eos_id(), sp.unk_id(), sp.pad_id()) == (0, 1, 2, -1)
    assert sp.EncodeAsPieces("你好") == ["▁", "你", "好"]  # CJK characters are single pieces, as released
    _load_everything(root)
    again = full.write_full_bundle(tmp_path / "again", seed=3, qwen="tiny")
    a, b = (torch.load(p.gpt_path, weights_only=True) for p in (bundle, again))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # the seed decides the weights
    assert (root / "hf_cache/w2v-bert-2.0/model.safetensors").read_bytes() == \
        (tmp_path / "again/hf_cache/w2v-bert-2.0/model.safetensors").read_bytes()


def test_only_the_indextts2_layout(tmp_path: Path):
    with pytest.raises(ValueError, match="version 2.0"):
        full.write_full_bundle(tmp_path, version="2.5")


def test_random_source_is_written_once_and_reused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from indextts_core.store.download import fetch_asset, source_fingerprint
    from indextts_core.store.objects import open_store
    from indextts_core.store.sources import allow_list, optional_list, source_kind
    from indextts_core.tiny.bundle import write_tiny_bundle

    src = AssetSource(source="random://5")
    assert source_kind(src.source) == "random"
    assert allow_list("checkpoint", src) is None and optional_list("checkpoint", src) == []
    assert source_fingerprint("checkpoint", src) != source_fingerprint("checkpoint", AssetSource(source="tiny://5"))
    calls = []

    def stand_in(dest, seed=0, version="2.0", qwen="full"):  # the tiny folder in place of the 8 GB one
        calls.append(seed)
        return write_tiny_bundle(dest, seed=seed)

    monkeypatch.setattr(full, "write_full_bundle", stand_in)
    store = open_store(tmp_path / "store")
    first = fetch_asset("checkpoint", src, store)
    assert not first.reused and calls == [5]
    assert {"config.yaml", "gpt.pth", "hf_cache/w2v-bert-2.0/config.json"} <= {f.key for f in first.files}
    record = store.get_json(f"{first.prefix}.json")
    assert set(record["fingerprints"].values()) == {f"random:5:{full.FULL_VERSION}"}
    second = fetch_asset("checkpoint", src, store)
    assert second.reused and calls == [5] and second.prefix == first.prefix
    with pytest.raises(DownloadError, match=r"random://<integer seed>"):
        fetch_asset("checkpoint", AssetSource(source="random://x"), store)
    with pytest.raises(DownloadError, match=r"random://<integer seed>"):
        fetch_asset("checkpoint", AssetSource(source="random://1@2.5"), store)
    with pytest.raises(DownloadError, match="give it as download.checkpoint"):
        fetch_asset("w2v_bert", src, store)
