"""The artifact store: a small interface with a local-folder backend and an S3 backend.

``open_store(uri)`` picks the backend from the URI: ``s3://bucket/prefix`` is S3 (through
boto3; any S3-compatible endpoint), anything else is a local folder.  Keys are relative POSIX
paths (``datasets/demo/manifest.jsonl``).  ``store:<key>`` names a key of the run's own store
(``storage.uri``) wherever a URI is expected, so what is recorded does not depend on where the
store is mounted (:func:`read_uri_bytes` resolves it).

Guarantees, for both backends:

* **Atomic objects.**  A reader sees a complete object or none: local writes go to a temporary
  file that is renamed into place; S3 objects (single PUT or multipart) only appear when
  complete.
* **Atomic directories.**  :meth:`ArtifactStore.put_dir` uploads every file and then a
  directory manifest (``.indextts-dir.json``) listing each file's size and sha256 (computed
  while the file is written).  A directory counts as present only once its manifest exists.
* **Content hashes.**  :meth:`ArtifactStore.sha256` gives a file's sha256: a local file is
  hashed on every call (no cache keyed by size or mtime); S3 objects written by us carry the
  sha256 computed at upload in their metadata, so asking costs one HEAD request (that is the
  *recorded* hash, not a re-read: :meth:`ArtifactStore.content_sha256` reads the bytes).

What is checked, and when:

* **Consumption is verified by content, every time.**  :func:`materialize_dir` (what a stage's
  inputs go through) hashes every file of the directory against its manifest on every call, for
  the local folder and for the local copy of an S3 directory alike: there is no size/mtime/inode
  shortcut, so bit rot whose mtime was restored is still caught.  A mismatch is a
  :class:`CorruptArtifactError` naming the file.
* **Downloads are verified** (:meth:`ArtifactStore.get_dir`, :meth:`ArtifactStore.get_file_verified`):
  a copy that does not match the recorded sha256 is deleted and refused.
* **Not checked:** single objects read with :meth:`get_file` / :meth:`get_bytes` (callers that
  have a recorded hash use :meth:`get_file_verified`), and the directory manifests themselves
  (a manifest rewritten together with its files is indistinguishable from a new directory).
  Files that are in a directory but not listed in its manifest are ignored.
* :func:`verify_store` is the full pass (every directory manifest, every recorded checkpoint
  and feature-shard hash, each file read in full), for an explicit ``verify`` command.

A local store folder that cannot be created or written is a :class:`StoreNotWritableError`
naming the folder.  Credentials come from :class:`~indextts_core.config.StorageConfig` or the
standard AWS environment/profile chain and are never logged.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import shutil
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from indextts_core.errors import InputError, OutputError, StorageError
from indextts_core.utils.fileio import (
    STALE_TEMP_AGE_S,
    atomic_write,
    copy_hashing,
    remove_stale_temp_files,
    sha256_bytes,
    sha256_file,
)

log = logging.getLogger(__name__)

DIR_MANIFEST = ".indextts-dir.json"
_MB = 1024 * 1024
#: Read size for hashing and copying: large reads keep sha256, not the system calls, the bottleneck.


class ObjectNotFoundError(InputError, FileNotFoundError):
    """The key does not exist in the store."""


class CorruptArtifactError(StorageError, InputError):
    """A stored file does not match its recorded sha256 (changed or damaged since it was written).

    Deterministic (an :class:`InputError`: never retried, one line on the console); the message names
    the file and what to do."""

    def __init__(self, message: str, transient: bool = False):
        super().__init__(message, transient=False)


class StoreNotWritableError(OutputError):
    """The local artifact store folder cannot be created or written (read-only, no permission)."""


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


def directory_digest(files: Iterable[ObjectInfo]) -> str:
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
    def put_file(self, local: str | os.PathLike[str], key: str) -> ObjectInfo:
        """Store a local file under ``key`` (atomically; large files in parts)."""

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
                          what_to_do: str = "") -> Path:
        """Copy ``key`` to ``dest`` and check the copy against ``sha256``, the hash recorded when it was written.

        On a mismatch the copy is deleted and :class:`CorruptArtifactError` names the store key
        (``what_to_do`` is appended to the message).
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

    def put_dir(self, local_dir: str | os.PathLike[str], prefix: str) -> DirInfo:
        """Upload every file under ``local_dir``, then the directory manifest that makes it visible."""
        local_dir = Path(local_dir)
        if not local_dir.is_dir():
            raise FileNotFoundError(f"{local_dir}: not a directory")
        files = {
            p.relative_to(local_dir).as_posix(): p
            for p in sorted(local_dir.rglob("*"))
            if p.is_file() and p.name != DIR_MANIFEST
        }
        return self.put_files(files, prefix)

    def put_files(self, files: dict[str, str | os.PathLike[str]], prefix: str) -> DirInfo:
        """Upload ``{relative key: local file}`` under ``prefix``, then the directory manifest."""
        infos = []
        for rel, path in sorted(files.items()):
            info = self.put_file(path, _join(prefix, rel))
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
            raise ObjectNotFoundError(_missing_dir(self, prefix))
        dest = Path(dest)
        for f in info.files:
            target = dest / f.key
            if target.is_file() and target.stat().st_size == f.size and sha256_file(target) == f.sha256:
                continue
            self.get_file_verified(_join(prefix, f.key), target, f.sha256)
        return dest


class LocalStore(ArtifactStore):
    """A folder on the local disk."""

    def __init__(self, root: str | os.PathLike[str]):
        self.root = Path(root).expanduser().resolve()
        self.uri = str(self.root)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise self._not_writable(e) or e from None

    def __repr__(self) -> str:
        return f"LocalStore({self.uri!r})"

    def _path(self, key: str) -> Path:
        return self.root / _check_key(key)

    def local_path(self, key: str) -> Path | None:
        return self._path(key)

    def uri_for(self, key: str) -> str:
        return str(self.root / key) if key else str(self.root)

    def _not_writable(self, e: BaseException) -> StoreNotWritableError | None:
        """A clear error when ``e`` (or what caused it) is the folder refusing writes, else None."""
        cause: BaseException | None = e
        while cause is not None:
            if isinstance(cause, OSError) and cause.errno in (errno.EACCES, errno.EPERM, errno.EROFS) \
                    and (cause.filename is None or str(cause.filename).startswith(str(self.root))):
                reason = cause.strerror or str(cause)
                where = f" ({cause.filename})" if cause.filename else ""
                return StoreNotWritableError(
                    f"the artifact store folder {self.root} is not writable: {reason}{where}. Make it writable, or "
                    "point storage.uri (or $INDEXTTS_STORAGE_URI) at a folder this user can write")
            cause = cause.__cause__ or cause.__context__
        return None

    def _writing(self, write: Any) -> Any:
        """Run ``write()``; a refused write becomes :class:`StoreNotWritableError` naming the store folder."""
        try:
            return write()
        except (OSError, OutputError) as e:
            failure = self._not_writable(e)
            if failure is None:
                raise
            raise failure from None

    def put_file(self, local: str | os.PathLike[str], key: str) -> ObjectInfo:
        dest = self._path(key)
        if Path(local).resolve() == dest:
            return self.info(key)
        size, digest = self._writing(lambda: copy_hashing(local, dest))
        return ObjectInfo(_check_key(key), size, digest)

    def get_file(self, key: str, dest: str | os.PathLike[str]) -> Path:
        src = self._path(key)
        if not src.is_file():
            raise ObjectNotFoundError(f"{src}: no such object in the store")
        dest = Path(dest)
        if src.resolve() != dest.resolve():
            copy_hashing(src, dest)
        return dest

    def get_file_verified(self, key: str, dest: str | os.PathLike[str], sha256: str,
                          what_to_do: str = "") -> Path:
        """As :meth:`ArtifactStore.get_file_verified`, hashing while copying (one read of the file)."""
        src, dest = self._path(key), Path(dest)
        if not src.is_file():
            raise ObjectNotFoundError(f"{src}: no such object in the store")
        if src.resolve() == dest.resolve():
            got = sha256_file(src)
        else:
            _, got = copy_hashing(src, dest)
        if got != sha256:
            if src.resolve() != dest.resolve():
                dest.unlink(missing_ok=True)
            raise CorruptArtifactError(corrupt_message(self.uri_for(key), got, sha256, what_to_do))
        return dest

    def put_bytes(self, data: bytes, key: str) -> ObjectInfo:
        def write() -> None:
            with atomic_write(self._path(key), "wb") as f:
                f.write(data)

        self._writing(write)
        return ObjectInfo(_check_key(key), len(data), sha256_bytes(data))

    def get_bytes(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except (FileNotFoundError, IsADirectoryError):
            raise ObjectNotFoundError(f"{self._path(key)}: no such object in the store") from None

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list(self, prefix: str = "") -> list[str]:
        base = self._path(prefix) if prefix else self.root
        if base.is_file():
            return [_check_key(prefix)]
        if not base.is_dir():
            return []
        keys = []
        for p in base.rglob("*"):
            if p.is_file() and not (p.name.startswith(".") and p.name.endswith(".tmp")):
                keys.append(p.relative_to(self.root).as_posix())
        return sorted(keys)

    def info(self, key: str) -> ObjectInfo:
        """Size and sha256 of the file as it is now (hashed on every call: no cache to go stale)."""
        path = self._path(key)
        try:
            size = path.stat().st_size
            digest = sha256_file(path)
        except (FileNotFoundError, IsADirectoryError):
            raise ObjectNotFoundError(f"{path}: no such object in the store") from None
        return ObjectInfo(_check_key(key), size, digest)

    def content_sha256(self, key: str) -> str:
        return self.info(key).sha256

    def delete(self, key: str) -> None:
        path = self._path(key)

        def remove() -> None:
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)

        self._writing(remove)

    def is_empty(self) -> bool:
        return not any(p.is_file() and not (p.name.startswith(".") and p.name.endswith(".tmp"))
                       for p in self.root.rglob("*"))

    def sweep(self, max_age_s: float = STALE_TEMP_AGE_S) -> list[str]:
        """Delete temporary files of writers that were killed (see :func:`is_stale_temp`)."""
        return [str(p) for p in remove_stale_temp_files(self.root, max_age_s=max_age_s)]


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
    return Path(os.environ.get("INDEXTTS_CACHE", Path.home() / ".cache" / "indextts-train"))


def verify_dir(folder: Path, info: DirInfo, label: str) -> None:
    """Check every file of ``folder`` against the directory manifest: size, then sha256 of the content.

    Every file is read in full on every call: no record of earlier checks (size, mtime, inode) is
    trusted, so a file damaged in place is caught even when its timestamps were restored.  Raises
    :class:`CorruptArtifactError` naming the first file that is missing or does not match.
    """
    for f in info.files:
        path = folder / f.key
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            raise CorruptArtifactError(f"{label}/{f.key}: missing (listed in the directory manifest)") from None
        got = sha256_file(path) if size == f.size else f"size {size} != {f.size}"
        if got != f.sha256:
            raise CorruptArtifactError(corrupt_message(f"{label}/{f.key}", got, f.sha256))


def materialize_dir(store: ArtifactStore, prefix: str, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """A local folder holding the complete directory ``prefix``, every file verified by content against its manifest.

    For a local store that is the folder itself; for S3 the directory is downloaded (and verified)
    into a cache folder keyed by its URI and reused while its manifest is unchanged.  Either way
    every file is hashed on every call (see :func:`verify_dir`); a damaged local copy of an S3
    directory is fetched again.  Raises :class:`CorruptArtifactError` when the store's own copy is
    damaged.
    """
    cache = Path(cache_dir or default_cache_dir())
    info = store.dir_info(prefix)
    if info is None:
        raise ObjectNotFoundError(_missing_dir(store, prefix))
    local = store.local_path(prefix)
    if local is not None:
        started = time.monotonic()
        verify_dir(local, info, str(local))
        log.debug("verified %s (%d files, %d bytes) in %.2f s", local, len(info.files), info.total_bytes,
                  time.monotonic() - started)
        return local
    uri = store.uri_for(prefix)
    dest = cache / "s3" / uri.removeprefix("s3://")
    marker = dest / DIR_MANIFEST
    wanted = json.dumps([asdict(f) for f in info.files], sort_keys=True)
    if marker.is_file() and marker.read_text(encoding="utf-8") == wanted:
        try:
            verify_dir(dest, info, str(dest))
            return dest
        except CorruptArtifactError as e:
            log.warning("local copy damaged, fetching again: %s", e)
    store.get_dir(prefix, dest)
    with atomic_write(marker) as f:
        f.write(wanted)
    log.debug("fetched %s (%d files) into %s", uri, len(info.files), dest)
    return dest


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


def _missing_dir(store: ArtifactStore, prefix: str) -> str:
    """What a missing directory means: the store (bucket or folder) is gone or empty, or just this folder."""
    root_empty = store.is_empty()
    where = store.uri_for(prefix)
    if root_empty:
        return (f"{where}: not found, and the artifact store {store.uri} is missing or empty (wiped, or the wrong "
                "storage.uri): every cached result that points into it is gone, so its stage runs again")
    return (f"{where}: no complete directory here (no {DIR_MANIFEST}): it was deleted or never finished "
            "uploading; the stage that makes it runs again")
