"""The independent speaker verifier (a tiny random WavLM x-vector model) and the same/different-speaker scale."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from indextts_core.config import AssetSource
from indextts_core.errors import InputError
from indextts_core.evaluation.speaker import (OWN_ENCODER_LABEL, XVectorEmbedder, open_speaker_verifier,
                                              speaker_scale)
from indextts_core.store.download import fetch_asset
from indextts_core.store.materialize import materialize_dir
from indextts_core.store.objects import open_store
from indextts_core.tiny import write_tiny_xvector

SR = 16000


@pytest.fixture(scope="module")
def tiny_verifier(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_xvector(tmp_path_factory.mktemp("xvector") / "wavlm-sv", seed=0)


def _voice(pitch: float, seconds: float, take: int) -> np.ndarray:
    """A 'speaker': a sine mixture on ``pitch`` (its harmonics), a little different for each take."""
    t = np.arange(int(seconds * SR)) / SR
    rng = np.random.default_rng(take)
    wave = sum(np.sin(2 * np.pi * pitch * h * t + rng.uniform(0, 6.28)) / h for h in (1, 2, 3))
    return (0.3 * wave + 0.01 * rng.standard_normal(len(t))).astype(np.float32)


def _spectrum(wave: np.ndarray) -> torch.Tensor:
    """A toy embedder: the magnitude spectrum in 64 bands (clips of one pitch look alike)."""
    mag = np.abs(np.fft.rfft(wave[:SR // 2], n=SR // 2))[:2048]
    return torch.as_tensor(mag.reshape(64, -1).sum(axis=1))


def test_tiny_verifier_loads_and_embeds_deterministically(tiny_verifier: Path):
    names = {p.name for p in tiny_verifier.iterdir()}
    assert {"config.json", "model.safetensors", "preprocessor_config.json"} <= names
    verifier = open_speaker_verifier(tiny_verifier)
    assert isinstance(verifier, XVectorEmbedder) and not verifier.model.training
    assert verifier.label == "independent verifier (WavLMForXVector)" != OWN_ENCODER_LABEL
    assert "WavLMForXVector" in verifier.name and "wavlm-sv" in verifier.name
    clip = _voice(140.0, 1.0, take=1)
    vec = verifier(clip)
    assert vec.shape == (16,) and torch.isfinite(vec).all()
    assert float(vec.norm()) == pytest.approx(1.0, abs=1e-5)
    assert torch.equal(vec, verifier(clip))
    assert torch.allclose(vec, open_speaker_verifier(write_tiny_xvector(tiny_verifier.parent / "again"))(clip))
    assert verifier.similarity(clip, vec) == pytest.approx(1.0, abs=1e-5)


def test_short_clips_score_zero_and_are_padded_to_what_the_model_takes(tiny_verifier: Path):
    verifier = open_speaker_verifier(tiny_verifier)
    vec = verifier(_voice(140.0, 1.0, take=1))
    assert verifier.similarity(_voice(140.0, 0.1, take=1), vec) == 0.0
    assert verifier.similarity(np.full(SR, np.nan, dtype=np.float32), vec) == 0.0
    assert verifier.min_samples > 0 and torch.isfinite(verifier(np.zeros(10, dtype=np.float32))).all()


def test_a_folder_without_an_xvector_model_is_an_input_error_naming_the_file(tmp_path: Path):
    with pytest.raises(InputError, match="not found"):
        open_speaker_verifier(tmp_path / "nowhere")
    with pytest.raises(InputError, match=r"config\.json: missing"):
        open_speaker_verifier(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["WhisperForConditionalGeneration"]}))
    with pytest.raises(InputError, match=r"config\.json: not a speaker verification.*WhisperForConditionalGeneration"):
        open_speaker_verifier(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(InputError, match=r"config\.json: cannot be read"):
        open_speaker_verifier(tmp_path)


def _clips(speakers: dict[str, float], takes: int, language: str = "en") -> list:
    return [(language, spk, f"{spk}_{k}", _voice(pitch, 0.6, take=100 * i + k))
            for i, (spk, pitch) in enumerate(speakers.items()) for k in range(takes)]


def test_scale_has_a_ceiling_above_the_floor_with_the_right_pair_counts():
    clips = _clips({"low": 110.0, "high": 260.0}, takes=3) + _clips({"solo": 180.0}, takes=2, language="am")
    embedded: list[int] = []

    def embed(wave: np.ndarray) -> torch.Tensor:
        embedded.append(id(wave))
        return _spectrum(wave)

    scale = speaker_scale(clips, embed)
    assert set(scale) == {"am", "en"} and set(scale["en"]) == {"ceiling", "floor"}
    assert scale["en"]["ceiling"]["n"] == 6 and scale["en"]["floor"]["n"] == 9  # 2 x C(3,2); 3 x 3
    assert scale["en"]["ceiling"]["mean"] > 0.9 > scale["en"]["floor"]["mean"]
    assert scale["am"]["floor"] == {"mean": None, "n": 0} and scale["am"]["ceiling"]["n"] == 1
    assert len(embedded) == len(set(embedded)) == len(clips)  # each clip embedded once
    # vectors already computed (the evaluation's prompts) are used as given, not computed again
    embedded.clear()
    known = {c[2]: _spectrum(c[3]) for c in clips[:2]}
    assert speaker_scale(clips, embed, known=known) == scale and len(embedded) == len(clips) - 2


def test_scale_pair_choice_is_capped_and_deterministic():
    clips = _clips({"a": 110.0, "b": 190.0, "c": 260.0}, takes=4)
    first = speaker_scale(clips, _spectrum, max_pairs=5, seed=3)
    assert first["en"]["ceiling"]["n"] == 5 and first["en"]["floor"]["n"] == 5
    assert speaker_scale(list(reversed(clips)), _spectrum, max_pairs=5, seed=3) == first
    others = [speaker_scale(clips, _spectrum, max_pairs=5, seed=s)["en"]["floor"]["mean"] for s in range(4, 8)]
    assert any(m != pytest.approx(first["en"]["floor"]["mean"]) for m in others)
    one_clip_each = speaker_scale(_clips({"a": 110.0, "b": 190.0}, takes=1), _spectrum)
    assert one_clip_each["en"]["ceiling"] == {"mean": None, "n": 0} and one_clip_each["en"]["floor"]["n"] == 1
    with pytest.raises(InputError, match="twice"):
        speaker_scale(clips + clips[:1], _spectrum)


def test_scale_with_the_tiny_verifier(tiny_verifier: Path):
    scale = speaker_scale(_clips({"a": 110.0, "b": 260.0}, takes=2), open_speaker_verifier(tiny_verifier))
    assert scale["en"]["ceiling"]["n"] == 2 and scale["en"]["floor"]["n"] == 4
    assert all(-1.0 <= scale["en"][k]["mean"] <= 1.0 for k in ("ceiling", "floor"))


def test_tiny_speaker_verifier_asset_is_a_loadable_xvector_folder(tmp_path: Path):
    store = open_store(tmp_path / "store")
    asset = fetch_asset("speaker_verifier", AssetSource(source="tiny://0"), store)
    assert not asset.reused and {f.key for f in asset.files} == {"config.json", "model.safetensors",
                                                                  "preprocessor_config.json"}
    assert fetch_asset("speaker_verifier", AssetSource(source="tiny://0"), store).reused
    verifier = open_speaker_verifier(materialize_dir(store, asset.prefix))
    assert verifier.architecture == "WavLMForXVector"


def test_the_graph_hands_the_speaker_verifier_asset_to_the_evaluate_task():
    import inspect
    from types import SimpleNamespace

    from flows.graph import StageGraph
    from indextts_core.config import load_config
    from tasks.artifacts import ArtifactRef
    from tasks.evaluate import evaluate_task

    def ref(stage: str) -> ArtifactRef:
        return ArtifactRef(stage=stage, uri=f"/x/{stage}", prefix=stage, digest=stage * 4, files=1, bytes=1)

    calls: list[tuple] = []
    run = SimpleNamespace(cfg=load_config(), call=lambda task: None,
                          stage=lambda task, *inputs, **kw: calls.append((task, inputs)))
    given = {name: ref(name) for name in ("train", "pairs", "checkpoint", "speaker_verifier")}
    graph = StageGraph(run, given)
    graph._assets = SimpleNamespace(get=lambda name: None)  # no other asset was downloaded
    graph.result("evaluate")
    (task, inputs), = calls
    bound = inspect.signature(evaluate_task.fn).bind_partial(run.cfg, *inputs)
    assert task is evaluate_task and bound.arguments["verifier"] == given["speaker_verifier"]
    assert bound.arguments["model"] == given["train"] and bound.arguments["asr"] is None
