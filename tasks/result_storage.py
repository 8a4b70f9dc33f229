"""Prefect result storage in the project's artifact store.

:class:`StoreResults` is a Prefect ``WritableFileSystem`` block backed by
:mod:`indextts_core.store.objects`, so Prefect's result records (which carry the cache) live in the
same local folder or S3 bucket as the artifacts, written atomically, with the same endpoint
settings.  Prefect 3.9 requires result storage blocks to be saved server-side; the flow saves one
per store URI (idempotent) at the start of every run.  Credentials are not stored in the block:
workers read them from their environment (AWS variables or profile), like every other S3 access.
"""

from __future__ import annotations

import hashlib

from prefect._internal.compatibility.async_dispatch import async_dispatch
from prefect.filesystems import WritableFileSystem
from prefect.utilities.asyncutils import run_sync_in_worker_thread

from indextts_core.config import StorageConfig
from indextts_core.store.objects import ArtifactStore, open_store

RESULTS_PREFIX = "prefect-results"


class StoreResults(WritableFileSystem):
    """Prefect results in an indextts-train artifact store (local folder or S3)."""

    _block_type_name = "IndexTTS Artifact Store Results"
    _block_type_slug = "indextts-store-results"

    uri: str
    endpoint_url: str | None = None
    region: str | None = None

    def _store(self) -> ArtifactStore:
        return open_store(self.uri, StorageConfig(uri=self.uri, endpoint_url=self.endpoint_url, region=self.region))

    async def aread_path(self, path: str) -> bytes:
        return await run_sync_in_worker_thread(self._store().get_bytes, path)

    @async_dispatch(aread_path)
    def read_path(self, path: str) -> bytes:
        return self._store().get_bytes(path)

    async def awrite_path(self, path: str, content: bytes) -> str:
        await run_sync_in_worker_thread(self._store().put_bytes, content, path)
        return path

    @async_dispatch(awrite_path)
    def write_path(self, path: str, content: bytes) -> str:
        self._store().put_bytes(content, path)
        return path


def result_storage(storage: StorageConfig) -> StoreResults:
    """The saved result-storage block for a store (one block per store URI and endpoint)."""
    base = open_store(storage.uri, storage).uri_for(RESULTS_PREFIX)
    block = StoreResults(uri=base, endpoint_url=storage.endpoint_url, region=storage.region)
    name = "indextts-" + hashlib.sha256(f"{base}|{storage.endpoint_url}".encode()).hexdigest()[:16]
    block.save(name, overwrite=True)
    return block
