"""Helpers shared by test modules (fixtures live in the conftest files)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

REPO = Path(__file__).resolve().parent.parent
#: The virtual environment's scripts (prefect, indextts-train, ...).
BIN = Path(sys.executable).parent
#: The bundled demo dataset (shipped inside the package, next to the demo's run YAML).
DEMO_DIR = REPO / "indextts_core" / "demo" / "dataset"
FIXTURES = Path(__file__).resolve().parent / "fixtures"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited early with code {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


def wait_healthy(api: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    """Wait until a Prefect server answers its health check."""
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"prefect server exited with {proc.returncode}")
        try:
            if httpx.get(f"{api}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError("prefect server did not become healthy")


def stop_process(proc: subprocess.Popen, timeout: float = 15.0) -> None:
    """Stop a process we started, by its PID: SIGTERM, then SIGKILL."""
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def sine(seconds: float, sr: int, freq: float = 440.0, amp: float = 0.5, channels: int = 1) -> np.ndarray:
    t = np.arange(int(round(seconds * sr))) / sr
    x = (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    return np.stack([x] * channels, axis=1) if channels > 1 else x


def write_audio(path: Path, seconds: float = 1.0, sr: int = 22050, freq: float = 440.0, **kw: Any) -> Path:
    """Write a sine tone; the format follows the suffix (.wav, .flac, .ogg, .mp3)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = {".wav": ("WAV", "PCM_16"), ".flac": ("FLAC", "PCM_16"), ".ogg": ("OGG", "VORBIS"),
           ".mp3": ("MP3", "MPEG_LAYER_III")}[path.suffix]
    sf.write(path, sine(seconds, sr, freq, **kw), sr, format=fmt[0], subtype=fmt[1])
    return path


STAGES = ("download", "ingest", "corpus", "extend-bpe", "preprocess", "pairs", "train", "evaluate", "promote")


def expect(default: str, **overrides: str) -> dict[str, str]:
    """Expected {stage: status}: ``default`` for every stage, except ``overrides`` (extend_bpe= for extend-bpe).

    ``promote`` is never cached (the registry changes between runs): it runs unless overridden.
    ``evaluate`` is absent unless given (:func:`make_cfg` turns it off; the demo config has it on).
    """
    fixed = {"promote": "ran", "evaluate": None}
    want = {stage: overrides.get(stage.replace("-", "_"), fixed.get(stage, default)) for stage in STAGES}
    return {k: v for k, v in want.items() if v is not None}


def statuses(summary: Any) -> dict[str, str]:
    """{stage: status} of a run summary."""
    return {row.stage: row.status for row in summary.stages}


def make_cfg(tmp_path: Path, overrides: dict[str, Any] | None = None, name: str = "t") -> Any:
    """A run configuration whose every output (run folder, store, MLflow) is under ``tmp_path``."""
    from indextts_core.config import load_config

    base = {
        "run.name": name,
        "run.output_dir": str(tmp_path / "runs" / name),
        "storage.uri": str(tmp_path / "store"),
        "tracking.tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "orchestration.retry_delay_s": [0],
        # the flow tests that are not about listening skip its costs (tests/flows/test_promotion.py turns them on);
        # decoding at validation is checked by tests/training and the demo test
        "train.val_audio_samples": 0,
        "train.val_generate": 0,
        "evaluate.enabled": False,
    }
    return load_config(overrides={**base, **(overrides or {})})


def mlflow_runs(cfg: Any, experiment: str | None = None) -> list[Any]:
    from tasks.tracking import search_runs

    return search_runs(cfg.tracking.tracking_uri, experiment or cfg.tracking.experiment)


def append_pieces(base_model: Path, pieces: list[str], dest: Path, score: float = -20.0) -> Path:
    """A copy of a SentencePiece model with ``pieces`` appended (ids after the base's), for model tests."""
    from sentencepiece import sentencepiece_model_pb2 as pb

    proto = pb.ModelProto()
    proto.ParseFromString(Path(base_model).read_bytes())
    for p in pieces:
        proto.pieces.append(pb.ModelProto.SentencePiece(piece=p, score=score, type=pb.ModelProto.SentencePiece.NORMAL))
    dest.write_bytes(proto.SerializeToString())
    return dest


def extend_tokenizer(base: Path, corpus: dict[str, list[str]], out_dir: Path, fe: Any) -> Path:
    """The extend-bpe stage's core call with the default settings (for fixtures that need a tokenizer)."""
    from indextts_core.config import ExtendBpeConfig
    from indextts_core.text.extend_bpe import extend_bpe, probe_lines

    result = extend_bpe(base, corpus, probe_lines(None, fe), out_dir / "extended_bpe.model", ExtendBpeConfig(),
                        seed=1234, frontend=fe.fingerprint(), report_dir=out_dir)
    return result.model_path


def close(actual: Any, expected: Any) -> None:
    """Equal at the golden fixtures' tolerance (atol 1e-5, rtol 1e-4)."""
    import torch

    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=1e-4)


def check_emotion_outputs(model: Any, cases: dict) -> None:
    """The emotion path against a GPT fixture's ``b_emotion`` outputs (the same for 2.0 and 2.5)."""
    import torch

    i, o = cases["inputs"], cases["outputs"]["b_emotion"]
    with torch.no_grad():
        close(model.emotion_embedding(i["emo_feats"], i["emo_lengths"]), o["emo_perceiver_out"])
        close(model.emotion_vector(i["emo_feats"], i["emo_lengths"]), o["emo_vec"])
        close(model.emotion_vector(i["cond_feats"], i["cond_lengths"]), o["spk_feats_emo_vec"])
        for alpha, key in ((1.0, "merge_emovec_alpha1"), (i["emo_alpha"], "merge_emovec_alpha")):
            close(model.merge_emotion(i["cond_feats"], i["emo_feats"], i["cond_lengths"], i["emo_lengths"], alpha),
                  o[key])
        for k in (0, 1):
            n = int(i["emo_lengths"][k])
            close(model.emotion_vector(i["emo_feats"][k:k + 1, :n], i["emo_lengths"][k:k + 1]),
                  o[f"emo_vec_item{k}_unpadded"])
        infer = torch.tensor([1024])  # infer_v2 passes the feature width as the length
        close(model.merge_emotion(i["cond_feats"][0:1], i["emo_feats"][0:1], infer, infer, i["emo_alpha"]),
              o["merge_emovec_item0_infer_style"])


def check_official_losses(out: Any, o: dict) -> None:
    """The released losses and per-token losses of a teacher-forced output against ``c_forward``."""
    from indextts_core.model import compute_losses
    from indextts_core.model.losses import token_losses

    losses = compute_losses(out, official=True)
    close(losses.text_loss, o["loss_text"])
    close(losses.mel_loss, o["loss_mel"])
    close(token_losses(out.text_logits, out.text_targets), o["loss_text_per_token"])
    close(token_losses(out.mel_logits, out.mel_targets), o["loss_mel_per_token"])


def check_gradients(model: Any, out: Any, o: dict) -> None:
    """Backward of the released loss sum: every parameter's gradient norm, and the recorded gradients."""
    import torch

    from indextts_core.model import compute_losses

    losses = compute_losses(out, official=True)
    (losses.text_loss + losses.mel_loss).backward()
    params = dict(model.named_parameters())
    assert set(o["grad_norms"]) == set(params)  # every official parameter name exists here
    for name, norm in o["grad_norms"].items():
        grad = params[name].grad
        got = grad.norm() if grad is not None else torch.tensor(0.0)
        torch.testing.assert_close(got, norm, atol=1e-5, rtol=1e-4, msg=name)
    for name, grad in o["grads"].items():
        close(params[name].grad, grad)


def check_forward_outputs(out: Any, o: dict) -> None:
    """A teacher-forced output against ``c_forward``: targets, logits (the fixture is (B, V, N)), latents."""
    import torch

    assert torch.equal(out.text_targets, o["text_targets"]) and torch.equal(out.mel_targets, o["mel_targets"])
    close(out.text_logits.transpose(1, 2), o["text_logits"])
    close(out.mel_logits.transpose(1, 2), o["mel_logits"])
    close(out.mel_latent[:, :-2], o["latent"])
    close(out.mel_latent[:, :-2], o["latent_precomputed_cond"])


#: The installed command line, run as a user would (a subprocess).
CLI = str(Path(sys.executable).parent / "indextts-train")


def cli(*args: str, cwd: Path | None = None, check: bool = True,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}  # no test harness leaking in
    # one OpenMP thread: torch's spinning threads slow a command many times over whenever something else
    # wants a core (its Prefect server, the session's, a neighbour's job), on a 2-core CI runner easily 20x
    env = {"OMP_NUM_THREADS": "1", **base, "COLUMNS": "200", "NO_COLOR": "1", **(env or {})}
    proc = subprocess.run([CLI, *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc


def install_wheel(dest: Path) -> Path:
    """Build the project's wheel and install it into ``dest/site`` (what ``pip install --no-deps --target`` does
    for a pure-Python wheel: unpack it); the folder to put first on ``PYTHONPATH``.

    The build is offline: ``uv build --offline`` takes hatchling from uv's cache, where ``uv sync`` left it
    when it installed the project (so a clean clone after ``uv sync --locked --extra dev`` has it).
    """
    uv = os.environ.get("UV") or shutil.which("uv")  # `uv run` names itself in $UV
    if uv is None:
        import pytest

        pytest.skip("uv is not on PATH: the wheel is built with `uv build`")
    built = subprocess.run([uv, "build", "--offline", "--wheel", "--out-dir", str(dest / "dist"), str(REPO)],
                           capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, f"uv build failed:\n{built.stdout}\n{built.stderr}"
    (wheel,) = (dest / "dist").glob("indextts_train-*.whl")
    with zipfile.ZipFile(wheel) as z:
        z.extractall(dest / "site")
    return dest / "site"


def installed_env(site: Path) -> dict[str, str]:
    """The environment that runs the copy installed in ``site`` (first on ``PYTHONPATH``: ahead of the checkout's
    editable install), for :func:`cli` or a ``python`` subprocess."""
    return {"PYTHONPATH": os.pathsep.join([str(site), *filter(None, [os.environ.get("PYTHONPATH")])])}
