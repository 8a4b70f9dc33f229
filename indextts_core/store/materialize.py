"""A store directory as a local folder whose every file was just verified by content: what a stage's inputs go through.

:func:`materialize_dir` hashes every file of the directory against its manifest on every call,
for the local folder and for the local copy of an S3 directory alike: there is no size, mtime or
inode shortcut, so bit rot whose mtime was restored is still caught.  A mismatch is a
:class:`~indextts_core.store.objects.CorruptArtifactError` naming the file.  :func:`link_dir` puts
such a directory into another folder (a run folder) as hard links, checking each file on the way:
still one read of each file, and no second copy on the disk.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict
from pathlib import Path

from indextts_core.store.objects import (
    DIR_MANIFEST,
    ArtifactStore,
    CorruptArtifactError,
    DirInfo,
    ObjectNotFoundError,
    missing_dir_message,
    corrupt_message,
    default_cache_dir,
)
from indextts_core.utils.fileio import atomic_write, copy_hashing, link_atomic, sha256_file

log = logging.getLogger(__name__)


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
        raise ObjectNotFoundError(missing_dir_message(store, prefix))
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


def link_dir(store: ArtifactStore, prefix: str, into: str | os.PathLike[str],
             cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Fill the folder ``into`` with the files of the directory ``prefix``, each verified by content once.

    Each file becomes a hard link, not a copy, where the file systems allow (a copy where they do
    not, checked by content on the way).  From a local store, each stored file is linked and the
    link hashed (one read); from S3, :func:`materialize_dir` fetches or checks the cached copy (one
    read) and that copy is linked.  The links share the store's (or the cache's) files: nothing may
    change them in place; if something does, the next read of the store, which checks the content,
    says so.  Raises :class:`CorruptArtifactError` naming the first file that is missing or differs.
    """
    into = Path(into)
    local = store.local_path(prefix)
    if local is None:
        _link_cached(materialize_dir(store, prefix, cache_dir), into, store.uri_for(prefix),
                     _manifest(store, prefix))
        return into
    for f in _manifest(store, prefix).files:
        try:
            store.get_file_verified(f"{prefix}/{f.key}", into / f.key, f.sha256, link=True)
        except ObjectNotFoundError:
            raise CorruptArtifactError(f"{local}/{f.key}: missing (listed in the directory manifest)") from None
    return into


def _manifest(store: ArtifactStore, prefix: str) -> DirInfo:
    """The directory manifest of ``prefix``; :class:`ObjectNotFoundError` saying why when there is none."""
    info = store.dir_info(prefix)
    if info is None:
        raise ObjectNotFoundError(missing_dir_message(store, prefix))
    return info


def _link_cached(cached: Path, into: Path, label: str, info: DirInfo) -> None:
    """Link each file of the verified local copy ``cached`` into ``into`` (copy and check it where linking fails)."""
    for f in info.files:
        if link_atomic(cached / f.key, into / f.key):
            continue
        _, got = copy_hashing(cached / f.key, into / f.key)
        if got != f.sha256:
            (into / f.key).unlink(missing_ok=True)
            raise CorruptArtifactError(corrupt_message(f"{label}/{f.key}", got, f.sha256))
