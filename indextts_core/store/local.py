"""The local-folder backend of the artifact store.

Same guarantees as every backend (see :mod:`indextts_core.store.objects`).  Here an object is a
file under the store folder: it is written to a temporary file beside it and renamed into place,
so a reader sees it whole or not at all; a writer killed midway leaves only a dot-named ``.tmp``
file, which :meth:`LocalStore.sweep` removes once it is old.  :meth:`LocalStore.info` hashes the
file on every call (no cache keyed by size or mtime), so the sha256 it gives is that of the bytes
stored now.  A folder that cannot be created or written is a :class:`StoreNotWritableError` naming
the folder.

Large files are kept once: :meth:`LocalStore.put_file` with ``link=True`` adopts a file as a hard
link (hashed on the way, one read), files written in a :meth:`LocalStore.staging` folder (dot-named,
inside the root, swept like the ``.tmp`` files) are stored by renaming a link, and
:meth:`LocalStore.copy_object` links one object under a second key.  A linked file must never be
changed in place (every writer here replaces files by renaming); if one is, the next read, which
checks the content, says so.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from indextts_core.errors import OutputError
from indextts_core.store.objects import (
    ArtifactStore,
    CorruptArtifactError,
    ObjectInfo,
    ObjectNotFoundError,
    _check_key,
    corrupt_message,
)
from indextts_core.utils.fileio import (
    STALE_TEMP_AGE_S,
    atomic_copy,
    atomic_write,
    copy_hashing,
    link_atomic,
    link_hashing,
    make_temp_dir,
    remove_stale_temp_dirs,
    remove_stale_temp_files,
    sha256_bytes,
    sha256_file,
)


class StoreNotWritableError(OutputError):
    """The local artifact store folder cannot be created or written (read-only, no permission)."""


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

    def put_file(self, local: str | os.PathLike[str], key: str, *, link: bool = False) -> ObjectInfo:
        """Store ``local`` under ``key``, read once (hashed while copied or linked).

        ``link``: the stored object is a hard link of ``local`` (no copy; a copy when the two are on
        different file systems or the file system has no hard links).  See
        :meth:`ArtifactStore.put_file` for what the caller promises.
        """
        dest = self._path(key)
        if Path(local).resolve() == dest:
            return self.info(key)
        size, digest = self._writing(lambda: _adopt_hashing(local, dest) if link else copy_hashing(local, dest))
        return ObjectInfo(_check_key(key), size, digest)

    def copy_object(self, src_key: str, key: str) -> None:
        """A hard link of ``src_key`` under ``key`` (nothing read, no new space; a copy if linking fails)."""
        src, dest = self._path(src_key), self._path(key)
        if not src.is_file():
            raise ObjectNotFoundError(f"{src}: no such object in the store")
        if src.resolve() != dest.resolve():
            self._writing(lambda: link_atomic(src, dest) or atomic_copy(src, dest))

    @contextlib.contextmanager
    def staging(self, name: str = "staging") -> Iterator[Path]:
        """A dot-named folder in the store's root (see :meth:`ArtifactStore.staging`): files written there are
        stored with ``link=True`` by renaming a link, never copied.  Removed on exit; :meth:`sweep` removes
        the ones whose writer was killed."""
        folder = self._writing(lambda: make_temp_dir(self.root, name))
        try:
            yield folder
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def get_file(self, key: str, dest: str | os.PathLike[str]) -> Path:
        src = self._path(key)
        if not src.is_file():
            raise ObjectNotFoundError(f"{src}: no such object in the store")
        dest = Path(dest)
        if src.resolve() != dest.resolve():
            copy_hashing(src, dest)
        return dest

    def get_file_verified(self, key: str, dest: str | os.PathLike[str], sha256: str,
                          what_to_do: str = "", *, link: bool = False) -> Path:
        """As :meth:`ArtifactStore.get_file_verified`, hashing while copying or linking (one read of the file).

        ``link``: ``dest`` becomes a hard link of the stored file (a copy across file systems).
        """
        src, dest = self._path(key), Path(dest)
        if not src.is_file():
            raise ObjectNotFoundError(f"{src}: no such object in the store")
        if src.resolve() == dest.resolve():
            got = sha256_file(src)
        else:
            _, got = _adopt_hashing(src, dest) if link else copy_hashing(src, dest)
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
            if p.is_file() and not self._temporary(p):
                keys.append(p.relative_to(self.root).as_posix())
        return sorted(keys)

    def _temporary(self, path: Path) -> bool:
        """Whether ``path`` is a writer's temporary file or lies in a staging folder (never an object)."""
        return any(part.startswith(".") and part.endswith(".tmp") for part in path.relative_to(self.root).parts)

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
        return not any(p.is_file() and not self._temporary(p) for p in self.root.rglob("*"))

    def sweep(self, max_age_s: float = STALE_TEMP_AGE_S) -> list[str]:
        """Delete the temporary files and staging folders of writers that were killed (see :func:`is_stale_temp`)."""
        folders = remove_stale_temp_dirs(self.root, max_age_s=max_age_s)
        return [str(p) for p in folders + remove_stale_temp_files(self.root, max_age_s=max_age_s)]


def _adopt_hashing(src: str | os.PathLike[str], dest: Path) -> tuple[int, str]:
    """``dest`` as a hard link of ``src``, else a copy: (size, sha256) from the one read of the file."""
    linked = link_hashing(src, dest)
    return linked if linked is not None else copy_hashing(src, dest)
