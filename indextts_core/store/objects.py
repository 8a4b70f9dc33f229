"""The artifact store's interface: keys, objects, directories, the URIs that name stores, and their integrity.

A store is files and directories under one root, addressed by keys (relative POSIX paths such as
``datasets/demo/manifest.jsonl``).  :class:`ArtifactStore` is the interface, with the behaviour
every backend shares; the backends are :mod:`indextts_core.store.local` (a folder) and
:mod:`indextts_core.store.s3` (any S3-compatible endpoint, through boto3).  ``open_store(uri)``
picks one from the URI: ``s3://bucket/prefix`` is S3, anything else a local folder.
``store:<key>`` names a key of the run's own store (``storage.uri``) wherever a URI is expected,
so what is recorded does not depend on where the store is mounted (:func:`read_uri_bytes`
resolves it).

Guarantees, for both backends:

* **Atomic objects.**  A reader sees a complete object or none: local writes go to a temporary
  file that is renamed into place; S3 objects (single PUT or multipart) only appear when
  complete.
* **Atomic directories.**  :meth:`ArtifactStore.put_dir` uploads every file and then a
  directory manifest (``.indextts-dir.json``) listing each file's size and sha256 (computed
  while the file is written).  A directory counts as present only once its manifest exists.
* **One copy.**  With ``link=True`` (:meth:`ArtifactStore.put_file`, ``put_files``, ``put_dir``) a
  local store adopts a file as a hard link instead of copying it, hashing it on the way; files
  written in :meth:`ArtifactStore.staging` are stored that way without a copy.  S3 uploads.
* **Content hashes.**  :meth:`ArtifactStore.sha256` gives a file's sha256: a local file is
  hashed on every call (no cache keyed by size or mtime); S3 objects written by us carry the
  sha256 computed at upload in their metadata, so asking costs one HEAD request (that is the
  *recorded* hash, not a re-read: :meth:`ArtifactStore.content_sha256` reads the bytes).

What is checked, and when:

* **Consumption is verified by content, every time**: see :mod:`indextts_core.store.materialize`,
  what a stage's inputs go through.
* **Downloads are verified** (:meth:`ArtifactStore.get_dir`, :meth:`ArtifactStore.get_file_verified`):
  a copy that does not match the recorded sha256 is deleted and refused.
* **Not checked:** single objects read with :meth:`get_file` / :meth:`get_bytes` (callers that
  have a recorded hash use :meth:`get_file_verified`), and the directory manifests themselves
  (a manifest rewritten together with its files is indistinguishable from a new directory).
  Files that are in a directory but not listed in its manifest are ignored.
* :func:`verify_store` is the full pass (every directory manifest, every recorded checkpoint
  and feature-shard hash, each file read in full), for an explicit ``verify`` command.

Credentials come from :class:`~indextts_core.config.StorageConfig` or the standard AWS
environment/profile chain and are never logged.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from indextts_core.errors import InputError, StorageError
from indextts_core.utils.fileio import STALE_TEMP_AGE_S, sha256_bytes, sha256_file

DIR_MANIFEST = ".indextts-dir.json"
_MB = 1024 * 1024


class ObjectNotFoundError(InputError, FileNotFoundError):
    """The key does not exist in the store."""


class CorruptArtifactError(StorageError, InputError):
    """A stored file does not match its recorded sha256 (changed or damaged since it was written).

    Deterministic (an :class:`InputError`: never retried, one line on the console); the message names
    the file and what to do."""

    def __init__(self, message: str, transient: bool = False):
        super().__init__(message, transient=False)


class BucketNotFoundError(InputError):
    """The S3 bucket named by the store URI does not exist."""


class StorageCredentialsError(InputError):
    """S3 credentials are missing, incomplete or refused: a configuration problem, never retried."""


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    sha256: str


@dataclass(frozen=True)
class DirInfo:
    prefix: str
    files: tuple[ObjectInfo, ...]

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def digest(self) -> str:
        """sha256 over the sorted (path, sha256) pairs: the content identity of the directory."""
        return directory_digest(self.files)


def local_file_infos(folder: Path, skip: Iterable[str] = ()) -> dict[str, ObjectInfo]:
    """Every file under a local folder (but those named ``skip``), by relative POSIX path, with size and sha256."""
    left_out = set(skip)
    return {(rel := p.relative_to(folder).as_posix()): ObjectInfo(rel, p.stat().st_size, sha256_file(p))
            for p in sorted(Path(folder).rglob("*")) if p.is_file() and p.name not in left_out}


def directory_digest(files: Iterable[ObjectInfo]) -> str:
    """A folder's content digest: over each file's relative path and sha256 (sizes and times left out)."""
    h = hashlib.sha256()
    for f in sorted(files, key=lambda f: f.key):
        h.update(f"{f.key}\0{f.sha256}\n".encode())
    return h.hexdigest()


def _check_key(key: str) -> str:
    if not key or key.startswith("/") or "\\" in key:
        raise ValueError(f"invalid store key {key!r}: use a relative POSIX path")
    parts = PurePosixPath(key).parts
    if any(p in ("..", ".") for p in parts):
        raise ValueError(f"invalid store key {key!r}: '.' and '..' are not allowed")
    return "/".join(parts)


def _join(prefix: str, rel: str) -> str:
    return _check_key(f"{prefix.rstrip('/')}/{rel}" if prefix else rel)


def corrupt_message(where: str, got: str, want: str, what_to_do: str = "") -> str:
    """The one wording of a content mismatch: which file, both hashes, and what to do."""
    text = f"{where}: content does not match its recorded sha256 {want[:12]} (got {got[:12]}; changed or damaged " \
           "after it was stored)"
    return f"{text}; {what_to_do}" if what_to_do else text


class ArtifactStore(ABC):
    """Files and directories under one root, addressed by relative keys."""

    uri: str

    # ------------------------------------------------------------------ backend primitives
    @abstractmethod
    def put_file(self, local: str | os.PathLike[str], key: str, *, link: bool = False) -> ObjectInfo:
        """Store a local file under ``key`` (atomically; large files in parts); its size and sha256 as stored.

        ``link``: a local store may adopt the file itself as a hard link instead of copying it (one
        physical copy; a copy where the two folders are on different file systems).  The caller
        promises that nothing changes ``local`` in place afterwards (our writers replace files by
        renaming, which leaves the link alone); a change in place would still be caught, as every
        read of the store checks the content.  Other backends upload as usual.
        """

    @abstractmethod
    def get_file(self, key: str, dest: str | os.PathLike[str]) -> Path:
        """Copy ``key`` to the local path ``dest`` (written atomically)."""

    @abstractmethod
    def put_bytes(self, data: bytes, key: str) -> ObjectInfo: ...

    @abstractmethod
    def get_bytes(self, key: str) -> bytes: ...

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def list(self, prefix: str = "") -> list[str]:
        """Every key under ``prefix`` (recursively), sorted."""

    @abstractmethod
    def info(self, key: str) -> ObjectInfo:
        """Size and sha256 of ``key``."""

    @abstractmethod
    def delete(self, key: str) -> None: ...

    @abstractmethod
    def uri_for(self, key: str) -> str:
        """A URI naming ``key`` (a local path or ``s3://bucket/key``)."""

    def local_path(self, key: str) -> Path | None:
        """The file backing ``key`` when the store is a local folder, else None."""
        return None

    @abstractmethod
    def is_empty(self) -> bool:
        """Whether the store holds no object at all (answered without listing everything)."""

    @abstractmethod
    def sweep(self, max_age_s: float = STALE_TEMP_AGE_S) -> list[str]:
        """Remove what killed writers left behind (never visible as objects); a line per item removed."""

    # ------------------------------------------------------------------ shared behaviour
    def sha256(self, key: str) -> str:
        return self.info(key).sha256

    def content_sha256(self, key: str) -> str:
        """sha256 of the bytes stored under ``key``, read in full now (never a recorded value)."""
        return sha256_bytes(self.get_bytes(key))

    def get_file_verified(self, key: str, dest: str | os.PathLike[str], sha256: str,
                          what_to_do: str = "", *, link: bool = False) -> Path:
        """Copy ``key`` to ``dest`` and check the copy against ``sha256``, the hash recorded when it was written.

        On a mismatch the copy is deleted and :class:`CorruptArtifactError` names the store key
        (``what_to_do`` is appended to the message).  ``link``: a local store may make ``dest`` a hard
        link of the stored file (see :meth:`put_file` for what the caller then promises); other
        backends copy.
        """
        dest = Path(dest)
        self.get_file(key, dest)
        got = sha256_file(dest)
        if got != sha256:
            dest.unlink(missing_ok=True)
            raise CorruptArtifactError(corrupt_message(self.uri_for(key), got, sha256, what_to_do))
        return dest

    def put_json(self, obj: Any, key: str) -> ObjectInfo:
        return self.put_bytes(json.dumps(obj, ensure_ascii=False, indent=2).encode("utf-8"), key)

    def get_json(self, key: str) -> Any:
        return json.loads(self.get_bytes(key).decode("utf-8"))

    def copy_object(self, src_key: str, key: str) -> None:
        """Store the object ``src_key`` again under ``key`` (same bytes, so its :class:`ObjectInfo` still holds).

        This default fetches it to a local temporary file and stores that; the backends do better (a
        local store hard-links, S3 copies on the server).
        """
        with self.staging("copy") as scratch:
            self.get_file(src_key, scratch / "object")
            self.put_file(scratch / "object", key, link=True)

    def staging(self, name: str = "staging") -> contextlib.AbstractContextManager[Path]:
        """A new empty local folder to write files in before they are stored with ``link=True``; removed on exit.

        A local store gives a dot-named folder inside its root (same file system, so the files are
        adopted without a copy; never listed as objects; swept once its writer is gone), other
        backends a system temporary folder.  What was stored from it stays in the store.
        """
        return _temporary_folder(name)

    def put_dir(self, local_dir: str | os.PathLike[str], prefix: str, *, link: bool = False) -> DirInfo:
        """Upload every file under ``local_dir``, then the directory manifest that makes it visible.

        ``link``: as for :meth:`put_file`.
        """
        local_dir = Path(local_dir)
        if not local_dir.is_dir():
            raise FileNotFoundError(f"{local_dir}: not a directory")
        files = {
            p.relative_to(local_dir).as_posix(): p
            for p in sorted(local_dir.rglob("*"))
            if p.is_file() and p.name != DIR_MANIFEST
        }
        return self.put_files(files, prefix, link=link)

    def put_files(self, files: dict[str, str | os.PathLike[str]], prefix: str, *, link: bool = False) -> DirInfo:
        """Upload ``{relative key: local file}`` under ``prefix``, then the directory manifest.

        Each file is read once (hashed while it is stored); ``link``: as for :meth:`put_file`.
        """
        infos = []
        for rel, path in sorted(files.items()):
            key = _join(prefix, rel)
            info = self.put_file(path, key, link=True) if link else self.put_file(path, key)
            infos.append(ObjectInfo(_check_key(rel), info.size, info.sha256))
        self.put_json({"files": [asdict(f) for f in infos]}, _join(prefix, DIR_MANIFEST))
        return DirInfo(prefix, tuple(infos))

    def dir_info(self, prefix: str) -> DirInfo | None:
        """The directory manifest under ``prefix``, or None if the directory is not (fully) there."""
        key = _join(prefix, DIR_MANIFEST)
        if not self.exists(key):
            return None
        data = self.get_json(key)
        return DirInfo(prefix, tuple(ObjectInfo(**f) for f in data["files"]))

    def dir_exists(self, prefix: str) -> bool:
        return self.exists(_join(prefix, DIR_MANIFEST))

    def get_dir(self, prefix: str, dest: str | os.PathLike[str]) -> Path:
        """Download a complete directory to ``dest``, verifying every file's sha256.

        Files already present in ``dest`` with the right size and hash are not fetched again, so an
        interrupted download resumes.
        """
        info = self.dir_info(prefix)
        if info is None:
            raise ObjectNotFoundError(missing_dir_message(self, prefix))
        dest = Path(dest)
        for f in info.files:
            target = dest / f.key
            if target.is_file() and target.stat().st_size == f.size and sha256_file(target) == f.sha256:
                continue
            self.get_file_verified(_join(prefix, f.key), target, f.sha256)
        return dest


@contextlib.contextmanager
def _temporary_folder(name: str) -> Iterator[Path]:
    """A system temporary folder, removed with what is left in it."""
    with tempfile.TemporaryDirectory(prefix=f"indextts-{name}-") as folder:
        yield Path(folder)


def split_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/a/b`` -> ``("bucket", "a/b")``."""
    if not uri.startswith("s3://"):
        raise ValueError(f"not an s3:// URI: {uri!r}")
    bucket, _, key = uri[5:].partition("/")
    if not bucket:
        raise ValueError(f"s3 URI without a bucket: {uri!r}")
    return bucket, key.strip("/")


def open_store(uri: str | os.PathLike[str], storage: Any | None = None) -> ArtifactStore:
    """Open the store named by ``uri`` (a local folder or ``s3://bucket/prefix``).

    ``storage`` is an optional :class:`~indextts_core.config.StorageConfig` supplying the S3
    endpoint, region, credentials and multipart sizes.
    """
    uri = str(uri)
    if uri.startswith("s3://"):
        bucket, prefix = split_s3_uri(uri)
        kwargs: dict[str, Any] = {}
        if storage is not None:
            kwargs = dict(
                endpoint_url=storage.endpoint_url,
                region=storage.region,
                access_key_id=storage.access_key_id.get_secret_value() if storage.access_key_id else None,
                secret_access_key=storage.secret_access_key.get_secret_value() if storage.secret_access_key else None,
                multipart_threshold=storage.multipart_threshold_mb * _MB,
                multipart_chunksize=storage.multipart_chunk_mb * _MB,
            )
        from indextts_core.store.s3 import S3Store  # boto3 only when S3 is used

        return S3Store(bucket, prefix, **kwargs)
    if "://" in uri and not uri.startswith("file://"):
        raise ValueError(f"unsupported store URI {uri!r}: use a local path or s3://bucket/prefix")
    from indextts_core.store.local import LocalStore  # the backends build on this module: imported once it is loaded

    return LocalStore(uri.removeprefix("file://"))


#: A URI naming a key of the run's own artifact store, wherever that store is (``store:<key>``).
STORE_SCHEME = "store:"


def store_uri(key: str) -> str:
    """The location-free URI of ``key`` in the run's store (stays valid when the store moves)."""
    return STORE_SCHEME + _check_key(key)


_RUN_STORES: dict[tuple[Any, ...], ArtifactStore] = {}


def _run_store(storage: Any) -> ArtifactStore:
    """The store ``storage`` names, opened once per process (an S3 client per clip would be slow)."""
    secret = getattr(storage, "access_key_id", None)
    ident = (storage.uri, getattr(storage, "endpoint_url", None), getattr(storage, "region", None),
             secret.get_secret_value() if secret is not None else None)
    if ident not in _RUN_STORES:
        _RUN_STORES[ident] = open_store(storage.uri, storage)
    return _RUN_STORES[ident]


def read_uri_bytes(uri: str, storage: Any | None = None) -> bytes:
    """Read one object named by a full URI (``s3://bucket/key``, ``store:<key>`` or a local path).

    ``store:<key>`` is read from ``storage.uri`` (the run's artifact store).
    """
    if uri.startswith(STORE_SCHEME):
        if storage is None or not getattr(storage, "uri", None):
            raise InputError(f"{uri}: names a key of the artifact store, but no storage.uri was given to read it from")
        return _run_store(storage).get_bytes(uri.removeprefix(STORE_SCHEME))
    if uri.startswith("s3://"):
        bucket, key = split_s3_uri(uri)
        return open_store(f"s3://{bucket}", storage).get_bytes(key)
    try:
        return Path(uri).read_bytes()
    except FileNotFoundError:
        raise ObjectNotFoundError(f"{uri}: file not found") from None


def default_cache_dir() -> Path:
    """Where local copies of store objects go: ``$INDEXTTS_CACHE``, else ``~/.cache/indextts-train``."""
    return Path(os.environ.get("INDEXTTS_CACHE", Path.home() / ".cache" / "indextts-train"))


#: Where training mirrors its checkpoints, with their recorded hashes (``tasks/train.py``).
CHECKPOINT_RECORD = "checkpoints.json"


def verify_store(store: ArtifactStore) -> list[str]:
    """Read every recorded file of the store in full and check it: one line per problem (empty: all good).

    Checked: every file of every directory manifest (``.indextts-dir.json``), the checkpoints a
    training run mirrored (``train/<key>/checkpoints.json``) and the feature shards of every unit
    record that carries a ``shard_sha256``.  Not checked: objects nothing records a hash for
    (unit records themselves, shards of units recorded before shard hashes existed, stray files).
    """
    problems: list[str] = []
    for key in store.list():
        name = key.rsplit("/", 1)[-1]
        folder = key[: -len(name)].rstrip("/")
        try:
            if name == DIR_MANIFEST:
                expected = {f.key: f.sha256 for f in store.dir_info(folder).files}  # type: ignore[union-attr]
            elif name == CHECKPOINT_RECORD and key.startswith("train/"):
                expected = {n: e["sha256"] for n, e in store.get_json(key).items()}
            elif name.startswith("unit-") and name.endswith(".json") and key.startswith("features/"):
                record = store.get_json(key)
                expected = {record["shard"]: record["shard_sha256"]} if record.get("shard_sha256") else {}
            else:
                continue
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            problems.append(f"{store.uri_for(key)}: unreadable record ({e})")
            continue
        problems += _check_files(store, folder, expected)
    return problems


def _check_files(store: ArtifactStore, folder: str, expected: dict[str, str]) -> list[str]:
    """One line per file of ``expected`` ({name under folder: sha256}) that is missing or differs."""
    problems = []
    for rel, want in sorted(expected.items()):
        key = _join(folder, rel) if folder else _check_key(rel)
        try:
            got = store.content_sha256(key)
        except ObjectNotFoundError:
            problems.append(f"{store.uri_for(key)}: missing (recorded with sha256 {want[:12]})")
            continue
        if got != want:
            problems.append(corrupt_message(store.uri_for(key), got, want))
    return problems


def missing_dir_message(store: ArtifactStore, prefix: str) -> str:
    """What a missing directory means: the store (bucket or folder) is gone or empty, or just this folder."""
    root_empty = store.is_empty()
    where = store.uri_for(prefix)
    if root_empty:
        return (f"{where}: not found, and the artifact store {store.uri} is missing or empty (wiped, or the wrong "
                "storage.uri): every cached result that points into it is gone, so its stage runs again")
    return (f"{where}: no complete directory here (no {DIR_MANIFEST}): it was deleted or never finished "
            "uploading; the stage that makes it runs again")
