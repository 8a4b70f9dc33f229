"""Shared fixtures: a real S3-compatible server (moto, by PID), a Prefect server, the demo dataset."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests_support import DEMO_DIR, free_port, stop_process, wait_for_port


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Modules holding a ``slow`` test run first, each module's tests still together and in order.

    With two workers the suite ends when the later one does: a two-minute test started last leaves the
    other worker idle for up to two minutes (the work-stealing scheduler splits the list in order).  Keeping a
    module together keeps its module-scoped fixtures (a reference training, a curated run) computed once.
    """
    slow = {item.module.__name__ for item in items if item.get_closest_marker("slow") is not None}
    items.sort(key=lambda item: item.module.__name__ not in slow)  # stable: the collection order otherwise


@pytest.fixture(scope="session", autouse=True)
def subprocess_bytecode_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Let the Python processes the tests start (CLI commands, servers, workers) cache their bytecode.

    Where ``PYTHONDONTWRITEBYTECODE`` is set and the environment holds no ``.pyc`` files (as here),
    every such process compiles torch, prefect, mlflow, ... from source again: about 5 s per CLI
    command on two cores, twice that with its temporary Prefect server.  The cache lives in the
    session's temporary folder (``PYTHONPYCACHEPREFIX``), so nothing is written next to the sources;
    a user's own ``PYTHONPYCACHEPREFIX`` is left alone.
    """
    if not os.environ.get("PYTHONDONTWRITEBYTECODE") or os.environ.get("PYTHONPYCACHEPREFIX"):
        yield
        return
    saved = os.environ.pop("PYTHONDONTWRITEBYTECODE")
    cache = tmp_path_factory.mktemp("pycache")
    os.environ["PYTHONPYCACHEPREFIX"] = str(cache)
    try:
        yield
    finally:
        os.environ.pop("PYTHONPYCACHEPREFIX", None)
        os.environ["PYTHONDONTWRITEBYTECODE"] = saved
        shutil.rmtree(cache, ignore_errors=True)  # ~100 MB; the session's servers are stopped by now


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A moto S3 server process on 127.0.0.1 (started and stopped by PID), as an endpoint URL."""
    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    env = {**os.environ, "MOTO_ALLOW_NONEXISTENT_REGION": "true"}
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=out, stderr=subprocess.STDOUT, env=env,
        )
    try:
        wait_for_port(port, proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_process(proc)


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    """A temporary Prefect API for in-process flow runs (one for the session)."""
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session")
def prefect_env(prefect_harness: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """The environment a CLI command needs to use the session's Prefect API (the harness's server, which the
    in-process flow runs use too): each command then talks to it instead of starting a temporary server of
    its own, and the session starts one server, not two."""
    from prefect.settings import PREFECT_API_URL

    home = tmp_path_factory.mktemp("prefect-home")
    yield {"PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_API_URL": str(PREFECT_API_URL.value())}


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, s3_endpoint: str) -> str:
    """Credentials and endpoint for the local S3 server, through the standard AWS variables."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing-key-id")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing-secret-key")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(var, raising=False)
    return s3_endpoint


@pytest.fixture
def s3_bucket(aws_env: str) -> str:
    """A fresh, empty bucket on the local S3 server."""
    import boto3

    name = f"test-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=aws_env).create_bucket(Bucket=name)
    return name


@pytest.fixture
def demo_copy(tmp_path: Path) -> Path:
    """A private copy of the bundled demo dataset."""
    dest = tmp_path / "demo"
    shutil.copytree(DEMO_DIR, dest)
    return dest


@pytest.fixture(scope="session")
def base_tokenizer_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small unigram base model with the official special ids, trained on English/Chinese text."""
    from indextts_core.text.frontend import split_cjk
    from indextts_core.model.bundle import RESOURCES
    from indextts_core.tiny import train_base_tokenizer

    path = tmp_path_factory.mktemp("tok") / "bpe.model"
    lines = [split_cjk(x) for x in (RESOURCES / "base_languages.txt").read_text(encoding="utf-8").splitlines()]
    train_base_tokenizer(lines, path, vocab_size=300)
    return path


@pytest.fixture(scope="session")
def tiny_tokenizer(base_tokenizer_path: Path):
    import sentencepiece as spm

    return spm.SentencePieceProcessor(model_file=str(base_tokenizer_path))


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory: pytest.TempPathFactory):
    from indextts_core.tiny import write_tiny_bundle

    return write_tiny_bundle(tmp_path_factory.mktemp("bundle") / "tiny", seed=0)


@pytest.fixture(scope="session")
def tiny_bundle_v25(tmp_path_factory: pytest.TempPathFactory):
    """A tiny random IndexTTS-2.5 folder (tiktoken vocabulary, codec.pth, CAMPPlus speaker row)."""
    from indextts_core.tiny import write_tiny_bundle

    return write_tiny_bundle(tmp_path_factory.mktemp("bundle25") / "tiny", seed=0, version="2.5")


@pytest.fixture
def bundle_copy(tiny_bundle, tmp_path: Path):
    """A private copy of the tiny bundle's checkpoint folder (tests may edit it)."""
    from indextts_core.model.bundle import open_bundle

    dest = tmp_path / "ckpt"
    shutil.copytree(tiny_bundle.checkpoint_dir, dest)
    return open_bundle(dest)
