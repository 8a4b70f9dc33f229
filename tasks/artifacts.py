"""Content-addressed stage outputs in the artifact store.

A stage writes its outputs to a local folder; :func:`publish_dir` hashes every file, derives the
folder's digest and uploads it to ``artifacts/<stage>/<digest>/`` (skipped when that folder is
already there: the same bytes are stored once, whichever run or machine produced them).  Tasks
pass :class:`ArtifactRef` values between them: small, picklable, and carrying the digest that
downstream cache keys are built from.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from indextts_core.store.download import FetchedAsset
from indextts_core.store.materialize import link_dir, materialize_dir
from indextts_core.store.objects import ArtifactStore, directory_digest, local_file_infos


class ArtifactRef(BaseModel, frozen=True):
    """A complete folder in the store, identified by its content digest."""

    stage: str
    uri: str  # URI of the folder (local path or s3://...)
    prefix: str  # its key prefix in the store
    digest: str  # sha256 over (path, sha256) of its files
    files: int
    bytes: int


def publish_dir(store: ArtifactStore, local_dir: Path, stage: str) -> ArtifactRef:
    """Upload ``local_dir`` under a key derived from its content; reuse it if already stored.

    A local store keeps hard links of the files, not copies (see ``link`` in
    :meth:`~indextts_core.store.objects.ArtifactStore.put_file`): a stage's output folder is emptied
    before the stage writes it again, never rewritten in place.
    """
    infos = local_file_infos(local_dir)
    digest = directory_digest(infos.values())
    prefix = f"artifacts/{stage}/{digest[:32]}"
    if not store.dir_exists(prefix):
        store.put_files({rel: local_dir / rel for rel in infos}, prefix, link=True)
    return ArtifactRef(stage=stage, uri=store.uri_for(prefix), prefix=prefix, digest=digest, files=len(infos),
                       bytes=sum(i.size for i in infos.values()))


def asset_ref(asset: FetchedAsset) -> ArtifactRef:
    return ArtifactRef(stage=f"asset:{asset.name}", uri=asset.uri, prefix=asset.prefix,
                       digest=directory_digest(asset.files), files=len(asset.files), bytes=asset.total_bytes)


def is_present(store: ArtifactStore, ref: ArtifactRef) -> bool:
    return store.dir_exists(ref.prefix)


def fetch_dir(store: ArtifactStore, ref: ArtifactRef, cache_dir: Path | None = None) -> Path:
    """A local folder with the artifact's files (the store folder itself when the store is local)."""
    return materialize_dir(store, ref.prefix, cache_dir)


def checkout(store: ArtifactStore, ref: ArtifactRef, dest: Path, cache_dir: Path | None = None) -> Path:
    """Put an artifact's files in a browsable run folder, replacing what ``dest`` held (swapped in whole).

    Each file is checked by content once and is a hard link of the store's file (of the local cache's,
    for S3) where the file systems allow, a copy otherwise (:func:`~indextts_core.store.materialize.link_dir`):
    editing a file of ``dest`` in place would change the store's too, which the next read of it reports
    as damaged.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        link_dir(store, ref.prefix, tmp, cache_dir)
        if dest.exists():
            old = dest.with_name(f".{dest.name}.old")
            os.replace(dest, old)
            shutil.rmtree(old, ignore_errors=True)
        os.replace(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


class StageResult(BaseModel):
    """What a stage task returns (and what Prefect persists as its cached result)."""

    stage: str
    artifact: ArtifactRef
    metrics: dict[str, float | int] = {}
    outputs: dict[str, str] = {}  # name -> file path inside the artifact folder
    data: dict[str, Any] = {}  # small values the next layer needs (so nobody re-reads the stage's JSON)
    mlflow_run_id: str | None = None  # the child run that produced it
    flow_run_id: str | None = None  # the flow run that produced it
    seconds: float = 0.0
