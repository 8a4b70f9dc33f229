"""The complete official folder in (download from the hub layout), a folder the official inference opens out.

What the official code opens is listed here from its source (index-tts HEAD):
``indextts/infer_v2.py`` opens the files its config names in ``model_dir``, and
``indextts/cli_v2.py`` (``REQUIRED_MODEL_FILES`` / ``REQUIRED_AUX_MODEL_FILES``) checks the literal
names, ``hf_cache/`` included (``indextts/utils/model_download.py`` fills it).  No network: the hub
is a Hugging Face cache folder written by the test, read offline.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from flows.local_inputs import lay_out_checkpoint
from indextts_core.config import load_config
from indextts_core.model.checkpoint import export_checkpoint, inference_files, load_gpt
from indextts_core.store.download import download
from indextts_core.store.objects import open_store

COMMIT = "0123456789abcdef0123456789abcdef01234567"
#: cli_v2.REQUIRED_MODEL_FILES + REQUIRED_MODEL_DIRS
OFFICIAL_MODEL_FILES = ["config.yaml", "bpe.model", "gpt.pth", "s2mel.pth", "wav2vec2bert_stats.pt", "feat1.pt",
                        "feat2.pt", "qwen0.6bemo4-merge/config.json"]
#: cli_v2.REQUIRED_AUX_MODEL_FILES + REQUIRED_AUX_MODEL_DIRS
OFFICIAL_AUX_FILES = ["hf_cache/semantic_codec_model.safetensors", "hf_cache/campplus_cn_common.bin",
                      "hf_cache/bigvgan/config.json", "hf_cache/bigvgan/bigvgan_generator.pt",
                      "hf_cache/w2v-bert-2.0/config.json"]


def _hub(cache: Path, repo: str, folder: Path, skip: tuple[str, ...] = ()) -> None:
    """``folder``'s files as the hub cache holds ``repo`` at COMMIT."""
    base = cache / f"models--{repo.replace('/', '--')}"
    snap = base / "snapshots" / COMMIT
    (base / "refs").mkdir(parents=True, exist_ok=True)
    (base / "refs" / "main").write_text(COMMIT)  # the branch, as the hub cache records it
    for p in folder.rglob("*"):
        rel = p.relative_to(folder).as_posix()
        if p.is_file() and not rel.startswith(skip):
            (snap / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(p, snap / rel)


@pytest.fixture
def hub(tmp_path: Path, tiny_bundle, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The five repositories a real run pulls, as tiny models, in an offline hub cache."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    root, cache = tiny_bundle.checkpoint_dir, tmp_path / "hf"
    _hub(cache, "IndexTeam/IndexTTS-2", root, skip=("hf_cache", "indextts-bundle.json"))
    _hub(cache, "facebook/w2v-bert-2.0", root / "hf_cache" / "w2v-bert-2.0")
    codec = tmp_path / "maskgct" / "semantic_codec"
    codec.mkdir(parents=True)
    shutil.copy2(root / "hf_cache" / "semantic_codec_model.safetensors", codec / "model.safetensors")
    _hub(cache, "amphion/MaskGCT", codec.parent)
    _hub(cache, "funasr/campplus", root / "hf_cache", skip=("w2v", "bigvgan", "semantic"))
    _hub(cache, "nvidia/bigvgan_v2_22khz_80band_256x", root / "hf_cache" / "bigvgan")
    return cache


def _cfg(tmp_path: Path, cache: Path, **more: object):
    pin = {"revision": COMMIT}
    return load_config(overrides={
        "storage.uri": str(tmp_path / "store"), "storage.cache_dir": str(tmp_path / "cache"),
        "download.hf_cache_dir": str(cache), "download.offline": True,
        "download.checkpoint": {"source": "hf://IndexTeam/IndexTTS-2", **pin},
        "download.w2v_bert": {"source": "hf://facebook/w2v-bert-2.0", **pin},
        "download.semantic_codec": {"source": "hf://amphion/MaskGCT", **pin},
        "download.campplus": {"source": "hf://funasr/campplus", **pin},
        "download.bigvgan": {"source": "hf://nvidia/bigvgan_v2_22khz_80band_256x", **pin},
        **more,
    })


def test_download_to_export_gives_every_file_the_official_inference_opens(tmp_path: Path, hub: Path, tiny_bundle):
    cfg = _cfg(tmp_path, hub)
    assets = download(cfg, open_store(cfg.storage.uri, cfg.storage))
    # the hub defaults take the complete official folder, the Qwen emotion folder and licence included
    keys = {f.key for f in assets["checkpoint"].files}
    assert {"s2mel.pth", "feat1.pt", "feat2.pt", "LICENSE.txt", "qwen0.6bemo4-merge/model.safetensors",
            "qwen0.6bemo4-merge/tokenizer.json"} <= keys
    from tasks.artifacts import asset_ref

    refs = {n: asset_ref(a).model_dump() for n, a in assets.items()}
    checkpoints = tmp_path / "checkpoints"
    assert lay_out_checkpoint(cfg, refs, checkpoints) == []  # nothing the official inference needs is missing
    for name in OFFICIAL_MODEL_FILES + OFFICIAL_AUX_FILES:
        assert (checkpoints / name).is_file(), name
    # the pipeline finds everything there too (encoders and synthesis models, strictly loaded)
    from indextts_core.model.bundle import open_bundle
    from indextts_core.synthesis.chain import missing_synthesis_models

    bundle = open_bundle(checkpoints)
    assert bundle.fingerprint() == {k: v for k, v in tiny_bundle.fingerprint().items()}
    assert not missing_synthesis_models(bundle)

    out = tmp_path / "export"
    result = export_checkpoint(load_gpt(checkpoints), out, checkpoints, checkpoints / "bpe.model",
                               bundle.gpt_config.number_text_tokens)
    assert result.missing_for_inference == ()
    config = yaml.safe_load((out / "config.yaml").read_text())
    opened = inference_files(config)
    for key, name in opened.items():
        assert (out / name).exists(), f"{key}: {name} missing from the export"
    for name in OFFICIAL_MODEL_FILES + ["LICENSE.txt", "qwen0.6bemo4-merge/model.safetensors"]:
        assert (out / name).is_file(), name
    assert load_gpt(out, strict=True) is not None


def test_a_folder_without_the_synthesis_files_is_named(tmp_path: Path, hub: Path, caplog: pytest.LogCaptureFixture):
    """Only what fine-tuning needs in the repository: download works, and says what the inference will lack."""
    snap = hub / "models--IndexTeam--IndexTTS-2" / "snapshots" / COMMIT
    for name in ("s2mel.pth", "feat1.pt", "qwen0.6bemo4-merge"):
        shutil.rmtree(snap / name) if (snap / name).is_dir() else (snap / name).unlink()
    cfg = _cfg(tmp_path, hub, **{"download.campplus": None, "download.bigvgan": None})
    with caplog.at_level("WARNING"):
        assets = download(cfg, open_store(cfg.storage.uri, cfg.storage))
    assert "has no s2mel.pth, feat1.pt, qwen0.6bemo4-merge/" in caplog.text
    from tasks.artifacts import asset_ref

    lacking = lay_out_checkpoint(cfg, {n: asset_ref(a).model_dump() for n, a in assets.items()},
                                 tmp_path / "checkpoints")
    assert lacking == ["s2mel.pth", "feat1.pt", "qwen0.6bemo4-merge/", "hf_cache/campplus_cn_common.bin",
                       "hf_cache/bigvgan/config.json", "hf_cache/bigvgan/bigvgan_generator.pt"]


def test_branch_revisions_are_pinned_to_their_commits_in_the_config(tmp_path: Path, hub: Path):
    """`revision: main` is accepted (a branch name), resolved, recorded, and `download --pin` writes the commit into
    the YAML in place (comments and layout kept), so the next run cannot drift."""
    from flows.commands.data import _pin
    from indextts_core.config import load_config
    from indextts_core.store.download import pins

    run = tmp_path / "run.yaml"
    run.write_text(f"""# real run
storage: {{uri: {tmp_path / 'store'}, cache_dir: {tmp_path / 'cache'}}}
download:
  hf_cache_dir: {hub}
  offline: true
  checkpoint: {{source: hf://IndexTeam/IndexTTS-2, revision: main}}   # the release
  w2v_bert:
    source: hf://facebook/w2v-bert-2.0
    revision: main
  semantic_codec: {{source: hf://amphion/MaskGCT, revision: {COMMIT}}}
""", encoding="utf-8")
    cfg = load_config(run)
    assets = download(cfg, open_store(cfg.storage.uri, cfg.storage))
    assert pins(assets) == {"checkpoint": ("main", COMMIT), "w2v_bert": ("main", COMMIT)}
    _pin(run, cfg, {n: a.commit for n, a in assets.items() if a.commit})
    text = run.read_text(encoding="utf-8")
    assert f"checkpoint: {{source: hf://IndexTeam/IndexTTS-2, revision: {COMMIT}}}   # the release" in text
    assert f"    revision: {COMMIT}\n" in text and "# real run" in text
    again = load_config(run)
    assert again.download.checkpoint.revision == again.download.w2v_bert.revision == COMMIT
