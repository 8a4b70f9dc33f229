"""The artifact store: a small interface with a local-folder backend and an S3 backend.

``open_store(uri)`` picks the backend from the URI: ``s3://bucket/prefix`` is S3 (through
boto3; any S3-compatible endpoint), anything else is a local folder.  Keys are relative POSIX
paths (``datasets/demo/manifest.jsonl``).

Guarantees, for both backends:

* **Atomic objects.**  A reader sees a complete object or none: local writes go to a temporary
  file that is renamed into place; S3 objects (single PUT or multipart) only appear when
  complete.
* **Atomic directories.**  :meth:`ArtifactStore.put_dir` uploads every file and then a
  directory manifest (``.indextts-dir.json``) listing each file's size and sha256.  A directory
  counts as present only once its manifest exists, and :meth:`ArtifactStore.get_dir` verifies
  every file against it.
* **Content hashes.**  :meth:`ArtifactStore.sha256` gives a file's sha256; S3 objects written by
  us carry it in their metadata, so asking costs one HEAD request.

Credentials come from :class:`~indextts_core.config.StorageConfig` or the standard AWS
environment/profile chain and are never logged.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from indextts_core.errors import InputError, StorageError
from indextts_core.utils.fileio import (
    STALE_TEMP_AGE_S,
    atomic_copy,
    atomic_write,
    remove_stale_temp_files,
    sha256_bytes,
    sha256_file,
)

log = logging.getLogger(__name__)

DIR_MANIFEST = ".indextts-dir.json"
_MB = 1024 * 1024


class ObjectNotFoundError(InputError, FileNotFoundError):
    """The key does not exist in the store."""


class CorruptArtifactError(StorageError):
    """A stored file does not match its directory manifest (changed or damaged since it was written)."""

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
            self.get_file(_join(prefix, f.key), target)
            got = sha256_file(target)
            if got != f.sha256:
                target.unlink()
                raise CorruptArtifactError(f"{self.uri_for(_join(prefix, f.key))}: sha256 {got[:12]} != manifest "
                                           f"{f.sha256[:12]}")
        return dest


class LocalStore(ArtifactStore):
    """A folder on the local disk."""

    def __init__(self, root: str | os.PathLike[str]):
        self.root = Path(root).expanduser().resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.uri = str(self.root)
        self._hash_cache: dict[tuple[str, int, int], str] = {}

    def __repr__(self) -> str:
        return f"LocalStore({self.uri!r})"

    def _path(self, key: str) -> Path:
        return self.root / _check_key(key)

    def local_path(self, key: str) -> Path | None:
        return self._path(key)

    def uri_for(self, key: str) -> str:
        return str(self.root / key) if key else str(self.root)

    def put_file(self, local: str | os.PathLike[str], key: str) -> ObjectInfo:
        dest = self._path(key)
        if Path(local).resolve() != dest:
            atomic_copy(local, dest)
        return self.info(key)

    def get_file(self, key: str, dest: str | os.PathLike[str]) -> Path:
        src = self._path(key)
        if not src.is_file():
            raise ObjectNotFoundError(f"{src}: no such object in the store")
        dest = Path(dest)
        if src.resolve() != dest.resolve():
            atomic_copy(src, dest)
        return dest

    def put_bytes(self, data: bytes, key: str) -> ObjectInfo:
        with atomic_write(self._path(key), "wb") as f:
            f.write(data)
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
        path = self._path(key)
        try:
            st = path.stat()
        except FileNotFoundError:
            raise ObjectNotFoundError(f"{path}: no such object in the store") from None
        cache_key = (str(path), st.st_size, st.st_mtime_ns)
        digest = self._hash_cache.get(cache_key)
        if digest is None:
            digest = self._hash_cache[cache_key] = sha256_file(path)
        return ObjectInfo(_check_key(key), st.st_size, digest)

    def delete(self, key: str) -> None:
        path = self._path(key)
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)

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


def read_uri_bytes(uri: str, storage: Any | None = None) -> bytes:
    """Read one object named by a full URI (``s3://bucket/key`` or a local path)."""
    if uri.startswith("s3://"):
        bucket, key = split_s3_uri(uri)
        return open_store(f"s3://{bucket}", storage).get_bytes(key)
    try:
        return Path(uri).read_bytes()
    except FileNotFoundError:
        raise ObjectNotFoundError(f"{uri}: file not found") from None


def default_cache_dir() -> Path:
    return Path(os.environ.get("INDEXTTS_CACHE", Path.home() / ".cache" / "indextts-train"))


def verify_dir(folder: Path, info: DirInfo, label: str, record_dir: Path | None = None) -> None:
    """Check every file of ``folder`` against the directory manifest (size and sha256).

    A file is hashed on first use; ``record_dir`` keeps what was verified (size, mtime, inode per
    file), so a later read on this machine re-hashes only files that changed since.  Raises
    :class:`CorruptArtifactError` naming the first file that does not match.
    """
    record_path = None
    record: dict[str, list[int]] = {}
    if record_dir is not None:
        record_path = Path(record_dir) / (hashlib.sha256(str(folder.resolve()).encode()).hexdigest()[:32] + ".json")
        if record_path.is_file():
            try:
                record = json.loads(record_path.read_text(encoding="utf-8"))
            except ValueError:
                record = {}
    verified: dict[str, list[int]] = {}
    for f in info.files:
        path = folder / f.key
        try:
            st = path.stat()
        except FileNotFoundError:
            raise CorruptArtifactError(f"{label}/{f.key}: missing (listed in the directory manifest)") from None
        stamp = [st.st_size, st.st_mtime_ns, st.st_ino]
        if record.get(f.key) == stamp + [int(f.sha256[:12], 16)]:
            verified[f.key] = record[f.key]
            continue
        if st.st_size != f.size or sha256_file(path) != f.sha256:
            raise CorruptArtifactError(f"{label}/{f.key}: content does not match its recorded sha256 {f.sha256[:12]} "
                                       "(changed or damaged after it was stored)")
        verified[f.key] = stamp + [int(f.sha256[:12], 16)]
    if record_path is not None and verified != record:
        with atomic_write(record_path) as out:
            json.dump(verified, out)


def materialize_dir(store: ArtifactStore, prefix: str, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """A local folder holding the complete directory ``prefix``, every file verified against its manifest.

    For a local store that is the folder itself; for S3 the directory is downloaded (and verified)
    into a cache folder keyed by its URI, reused while its manifest is unchanged and its files
    still match.  Files are hashed on first use on a machine and again only when they change
    (see :func:`verify_dir`).  Raises :class:`CorruptArtifactError` when the store's own copy is
    damaged.
    """
    cache = Path(cache_dir or default_cache_dir())
    records = cache / "verified"
    info = store.dir_info(prefix)
    if info is None:
        raise ObjectNotFoundError(_missing_dir(store, prefix))
    local = store.local_path(prefix)
    if local is not None:
        verify_dir(local, info, str(local), records)
        return local
    uri = store.uri_for(prefix)
    dest = cache / "s3" / uri.removeprefix("s3://")
    marker = dest / DIR_MANIFEST
    wanted = json.dumps([asdict(f) for f in info.files], sort_keys=True)
    if marker.is_file() and marker.read_text(encoding="utf-8") == wanted:
        try:
            verify_dir(dest, info, str(dest), records)
            return dest
        except CorruptArtifactError as e:
            log.warning("local copy damaged, fetching again: %s", e)
    store.get_dir(prefix, dest)
    with atomic_write(marker) as f:
        f.write(wanted)
    log.debug("fetched %s (%d files) into %s", uri, len(info.files), dest)
    return dest


def _missing_dir(store: ArtifactStore, prefix: str) -> str:
    """What a missing directory means: the store (bucket or folder) is gone or empty, or just this folder."""
    root_empty = store.is_empty()
    where = store.uri_for(prefix)
    if root_empty:
        return (f"{where}: not found, and the artifact store {store.uri} is missing or empty (wiped, or the wrong "
                "storage.uri): every cached result that points into it is gone, so its stage runs again")
    return (f"{where}: no complete directory here (no {DIR_MANIFEST}): it was deleted or never finished "
            "uploading; the stage that makes it runs again")
