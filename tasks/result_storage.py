"""Prefect result storage in the project's artifact store.

:class:`StoreResults` is a Prefect ``WritableFileSystem`` block backed by
:mod:`indextts_core.store.objects`, so Prefect's result records (which carry the cache) live in the
same local folder or S3 bucket as the artifacts, written atomically, with the same endpoint
settings.  Prefect 3.9 requires result storage blocks to be saved server-side; the flow saves one
per store URI (idempotent) at the start of every run.  Credentials are not stored in the block:
workers read them from their environment (AWS variables or profile), like every other S3 access.

Results are never unpickled.  Every stage task persists its result with :class:`ResultJSON`: the
JSON of one of a fixed set of pydantic result models (or plain JSON values), validated on read; a
failed task's exception is kept as its type's name and message (read back as :class:`StageFailed`).
:meth:`StoreResults.read_path` refuses any record written with another serializer (a pickled
record in a shared bucket would run code on every worker that reads it), naming the record.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
from typing import Any, Literal

from prefect.filesystems import WritableFileSystem
from prefect.serializers import Serializer
from prefect.utilities.asyncutils import run_sync_in_worker_thread
from pydantic import BaseModel, ValidationError

from indextts_core.config import StorageConfig
from indextts_core.errors import StorageError
from indextts_core.store.objects import ArtifactStore, open_store

log = logging.getLogger(__name__)

RESULTS_PREFIX = "prefect-results"
SERIALIZER = "indextts-json"

#: The result types a record may hold, by name -> where the class lives.  The record names one of
#: these keys; nothing in a record chooses what code is imported.
RESULT_TYPES = {
    "StageResult": "tasks.artifacts:StageResult",
    "DownloadResult": "tasks.download:DownloadResult",
    "PreprocessPlan": "tasks.preprocess:PreprocessPlan",
}


class ResultRefused(StorageError):
    """A result record that this platform will not read (it could run code, or it is not ours)."""

    def __init__(self, message: str, transient: bool = False):
        super().__init__(message, transient=False)


class StageFailed(Exception):
    """A failed task's exception as a record keeps it: its type's name and its message, as text (never pickled)."""


def _result_class(kind: str) -> type[BaseModel]:
    module, _, name = RESULT_TYPES[kind].partition(":")
    return getattr(importlib.import_module(module), name)


class ResultJSON(Serializer):
    """Stage results as JSON: a known pydantic result model, or plain JSON data.  Never pickle."""

    type: Literal["indextts-json"] = SERIALIZER

    def dumps(self, obj: Any) -> bytes:
        if isinstance(obj, BaseException):  # a failed task's exception: its type and message, as text
            data = {"type": type(obj).__name__, "message": str(obj)}
            return json.dumps({"kind": "exception", "data": data}, sort_keys=True).encode()
        if isinstance(obj, BaseModel):
            kind = type(obj).__name__
            if kind not in RESULT_TYPES or _result_class(kind) is not type(obj):
                raise TypeError(f"{kind} is not a stage result type this platform persists "
                                f"({', '.join(RESULT_TYPES)})")
            return json.dumps({"kind": kind, "data": obj.model_dump(mode="json")}, sort_keys=True).encode()
        return json.dumps({"kind": "json", "data": obj}, sort_keys=True, allow_nan=False).encode()

    def loads(self, blob: bytes) -> Any:
        try:
            record = json.loads(blob)
            kind, data = record["kind"], record["data"]
        except (ValueError, TypeError, KeyError) as e:
            raise ResultRefused(f"a stage result that is not {SERIALIZER} data ({type(e).__name__}: {e})") from None
        if kind == "json":
            return data
        if kind == "exception" and isinstance(data, dict):
            return StageFailed(f"{data.get('type', 'Exception')}: {data.get('message', '')}")
        if kind not in RESULT_TYPES:
            raise ResultRefused(f"a stage result of unknown type {kind!r} (known: {', '.join(RESULT_TYPES)})")
        return _result_class(kind).model_validate(data)


def check_record(path: str, content: bytes) -> bytes:
    """``content`` if it is a result record written with :class:`ResultJSON`; else a clear refusal.

    Prefect treats a record it cannot read as no cached result: the stage runs again and its new
    record replaces the refused one.  The refusal is logged as an error naming the record.
    """
    try:
        record = json.loads(content)
        serializer = record["metadata"]["serializer"]["type"]
    except (ValueError, TypeError, KeyError):
        raise _refuse(f"{path}: not a result record of this platform (not JSON with a serializer); refused unread, "
                      "the stage is recomputed") from None
    if serializer != SERIALIZER:
        raise _refuse(f"{path}: result record written with the {serializer!r} serializer; only {SERIALIZER} "
                      "records are read (a pickled record can run code on whoever reads it); refused unread, the "
                      "stage is recomputed. Whoever can write to this store wrote it: check its access.")
    # Prefect reads the result while checking that a cached record exists, and takes any error there
    # as "no record" without a word: the result is checked here, so that a refusal is logged.
    result = record.get("result")
    try:
        if not isinstance(result, str):
            raise ResultRefused(f"a stage result that is {type(result).__name__}, not {SERIALIZER} text")
        ResultJSON().loads(result.encode())
    except ValidationError as e:  # ours, from a version of the platform whose result model differed
        message = (f"{path}: result record of another version of this platform ({e.title} does not validate: "
                   f"{e.error_count()} error(s)); the stage is recomputed")
        log.warning("%s", message)
        raise ResultRefused(message) from None
    except Exception as e:  # noqa: BLE001 - ResultRefused, anything else that is not our data
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise _refuse(f"{path}: result record refused unread: {reason}; the stage is recomputed. Whoever can "
                      "write to this store wrote it: check its access.") from None
    return content


def _refuse(message: str) -> ResultRefused:
    log.error("%s", message)
    return ResultRefused(message)


class StoreResults(WritableFileSystem):
    """Prefect results in an indextts-train artifact store (local folder or S3)."""

    _block_type_name = "IndexTTS Artifact Store Results"
    _block_type_slug = "indextts-store-results"

    uri: str
    endpoint_url: str | None = None
    region: str | None = None

    def _store(self) -> ArtifactStore:
        return open_store(self.uri, StorageConfig(uri=self.uri, endpoint_url=self.endpoint_url, region=self.region))

    def _where(self, path: str) -> str:
        """The record's full location (store URI and key), for messages."""
        return f"{self.uri.rstrip('/')}/{path.lstrip('/')}"

    # Prefect 3 calls a result block in one of two ways: from synchronous code, ``read_path(key, _sync=True)``
    # (and ``write_path``); from asynchronous code, ``aread_path(key)`` (``awrite_path``) when the block has it.
    # So the plain methods are always synchronous and take that flag, and the ``a`` ones run them in a worker
    # thread (the store's calls block: file and S3 I/O).

    def read_path(self, path: str, *, _sync: bool = True) -> bytes:
        """The result record at ``path``, checked by :func:`check_record` (synchronous, whatever ``_sync`` says)."""
        return check_record(self._where(path), self._store().get_bytes(path))

    def write_path(self, path: str, content: bytes, *, _sync: bool = True) -> str:
        """Store ``content`` at ``path`` (atomically, as every store write) and return ``path``."""
        self._store().put_bytes(content, path)
        return path

    async def aread_path(self, path: str) -> bytes:
        """:meth:`read_path`, run in a worker thread."""
        return await run_sync_in_worker_thread(self.read_path, path)

    async def awrite_path(self, path: str, content: bytes) -> str:
        """:meth:`write_path`, run in a worker thread."""
        return await run_sync_in_worker_thread(self.write_path, path, content)


def result_storage(storage: StorageConfig) -> StoreResults:
    """The saved result-storage block for a store (one block per store URI and endpoint)."""
    base = open_store(storage.uri, storage).uri_for(RESULTS_PREFIX)
    block = StoreResults(uri=base, endpoint_url=storage.endpoint_url, region=storage.region)
    name = "indextts-" + hashlib.sha256(f"{base}|{storage.endpoint_url}".encode()).hexdigest()[:16]
    block.save(name, overwrite=True)
    return block
