"""A store directory as a local folder whose every file was just verified by content: what a stage's inputs go through.

:func:`materialize_dir` hashes every file of the directory against its manifest on every call,
for the local folder and for the local copy of an S3 directory alike: there is no size, mtime or
inode shortcut, so bit rot whose mtime was restored is still caught.  A mismatch is a
:class:`~indextts_core.store.objects.CorruptArtifactError` naming the file.
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
from indextts_core.utils.fileio import atomic_write, sha256_file

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
