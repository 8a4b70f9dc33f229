"""Cached answers: a stage command whose result is already known answers without starting anything.

A stage command runs its stage as a flow run (:func:`flows.stage.stage_flow`): a Prefect API, the
flow engine, an MLflow parent run, then each stage from the cache.  When nothing changed, all of
that (some 15 s on a laptop) only looks up results that an earlier command or ``run`` already had.
So every successful stage command, and every ``run``, leaves an *answer* in the artifact store
(``answers/<stage>/<key>.json``: the stage's result), and the next command asking the same
question reads it back in well under a second.

The key of an answer is everything the stage's result depends on, computed without Prefect,
MLflow or torch:

* the platform's code: a digest of every source file of ``indextts_core``, ``tasks`` and ``flows``
  and the versions of the libraries that shape the outputs (any change: no answer, the stage
  command runs its flow, which still takes each stage from Prefect's finer cache where it can);
* every config field any stage's cache key declares (:data:`tasks.keys.STAGE_KEYS`);
* what each configured source holds now (sizes and modification times or ETags, or a hub revision:
  :func:`indextts_core.store.download.source_fingerprint`), except the inputs the command gave;
* the content digest of each input the command gave (``--manifest``, ``--tokenizer``, ...).

An answer is used only if its stage's output is still in the store; the run folder gets the
output as the flow would check it out.  Nothing is answered when ``orchestration.refresh_cache``
is set, when ``orchestration.cached_answers`` is off, for ``evaluate`` (it depends on the
registry's champion), for ``train`` with an explicit ``--resume`` file (that asks for training), and
when ``curate.sources`` is set (what the recordings hold is known only by reading them, which the curate
stage does: its units make an unchanged recording cheap).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import time
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from indextts_core.config import PipelineConfig
from indextts_core.errors import InputError, StorageError
from indextts_core.store.download import configured_assets, source_fingerprint
from indextts_core.store.objects import ArtifactStore, open_store
from indextts_core.utils.fileio import write_json
from tasks.artifacts import ArtifactRef, StageResult, checkout, is_present
from tasks.keys import STAGE_KEYS, config_subset

log = logging.getLogger(__name__)

#: The stages a command may answer from a stored answer (their results depend only on the key above).
ANSWERABLE = ("ingest", "corpus", "extend-bpe", "preprocess", "pairs", "train")
PREFIX = "answers"
#: Libraries whose version can change a stage's output (text normalisation, tokenizers, audio, models).
LIBRARIES = ("torch", "torchaudio", "numpy", "soundfile", "soxr", "sentencepiece", "tiktoken", "wetext",
             "transformers", "safetensors", "pydantic")
#: Where the run folder notes which artifact each checked-out stage folder holds (so an answer need not copy
#: it again): ``<run.output_dir>/.checkouts/<stage>.json``, outside the stage folder, whose content is the output.
CHECKOUTS = ".checkouts"


class Answer(BaseModel):
    """One stored answer: which question (key) it answers, and the stage's result."""

    format: int = 1
    stage: str
    key: str
    result: StageResult
    written_at: float


@cache
def code_digest() -> str:
    """sha256 of the platform's source files and the versions of the libraries that shape its outputs."""
    h = hashlib.sha256()
    root = Path(__file__).resolve().parents[1]
    for package in ("indextts_core", "tasks", "flows"):
        for path in sorted((root / package).rglob("*.py")):
            h.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    for name in LIBRARIES:
        try:
            version = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            version = "-"
        h.update(f"{name}={version}\0".encode())
    return h.hexdigest()


def question(cfg: PipelineConfig, given: Mapping[str, ArtifactRef]) -> str:
    """The digest of everything but the stage that an answer depends on (the sources are listed once here)."""
    every_field = sorted({k for keys in STAGE_KEYS.values() for k in keys})
    material = {
        "code": code_digest(),
        "config": config_subset(cfg, every_field),
        "sources": {name: {"source": src.model_dump(mode="json"),
                           "holds": source_fingerprint(name, src, cfg.storage)}
                    for name, src in configured_assets(cfg).items() if name not in given},
        "given": {name: ref.digest for name, ref in sorted(given.items())},
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True, default=str).encode()).hexdigest()


def answer_key(stage: str, asked: str) -> str:
    """The key of ``stage``'s answer to the :func:`question` ``asked``."""
    return hashlib.sha256(f"{stage}\0{asked}".encode()).hexdigest()


def _answerable(cfg: PipelineConfig, stage: str) -> bool:
    if stage not in ANSWERABLE or cfg.orchestration.refresh_cache or not cfg.orchestration.cached_answers:
        return False
    if cfg.curate.sources:  # what recordings hold is known only by reading them (the curate stage's units)
        return False
    return not (stage == "train" and cfg.train.resume not in (None, "auto"))


def _location(stage: str, key: str) -> str:
    return f"{PREFIX}/{stage}/{key[:32]}.json"


def remember(cfg: PipelineConfig, results: Mapping[str, Any], given: Mapping[str, ArtifactRef]) -> None:
    """Store each answerable stage's result (``stage -> result``) as its answer to this question (never fails the
    command that ran)."""
    stages = [stage for stage in results if _answerable(cfg, stage)]
    if not stages:
        return
    try:
        asked = question(cfg, given)
        store = open_store(cfg.storage.uri, cfg.storage)
        for stage in stages:
            key = answer_key(stage, asked)
            found = Answer(stage=stage, key=key, result=StageResult.model_validate(results[stage]),
                           written_at=time.time())
            store.put_json(found.model_dump(mode="json"), _location(stage, key))
    except (InputError, StorageError, ValidationError, OSError) as e:
        log.debug("no cached answers stored for %s: %s", ", ".join(stages), e)


def answer(cfg: PipelineConfig, stage: str, given: Mapping[str, ArtifactRef]) -> dict[str, Any] | None:
    """The stored result of ``stage`` for this question, checked out into the run folder; None: ask the flow.

    Any doubt (a source that cannot be listed, no or a damaged answer, an output gone from the store)
    is None: the command then runs its flow, which says what is wrong or recomputes.
    """
    if not _answerable(cfg, stage):
        return None
    try:
        key = answer_key(stage, question(cfg, given))
        store = open_store(cfg.storage.uri, cfg.storage)
        where = _location(stage, key)
        if not store.exists(where):
            return None
        found = Answer.model_validate(store.get_json(where))
        if found.key != key or found.stage != stage or not is_present(store, found.result.artifact):
            return None
        check_out(store, cfg, found.result)
    except (InputError, StorageError, ValidationError, OSError, ValueError) as e:
        log.debug("no cached answer for %s: %s", stage, e)
        return None
    return found.result.model_dump(mode="json")


def check_out(store: ArtifactStore, cfg: PipelineConfig, result: StageResult) -> Path:
    """``<run.output_dir>/<stage>`` holding the stage's output (copied only when it may hold something else).

    The note of the last checkout names the artifact and the folder's identity (inode and change time):
    a folder that was replaced or written to since (by a flow run, by hand) is checked out again.
    """
    dest = cfg.run.output_dir / result.stage
    mark = cfg.run.output_dir / CHECKOUTS / f"{result.stage}.json"
    try:
        noted = json.loads(mark.read_text())
        if noted["digest"] == result.artifact.digest and noted["folder"] == _identity(dest):
            return dest
    except (OSError, ValueError, KeyError, TypeError):
        pass
    mark.unlink(missing_ok=True)
    checkout(store, result.artifact, dest, cfg.storage.cache_dir)
    write_json(mark, {"digest": result.artifact.digest, "uri": result.artifact.uri, "folder": _identity(dest)})
    return dest


def _identity(folder: Path) -> list[int]:
    st = folder.stat()
    return [st.st_dev, st.st_ino, st.st_ctime_ns, st.st_mtime_ns]
