"""Small file helpers: atomic writes, hashing, JSON lines."""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import json
import os
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from indextts_core.errors import OutputError

_CHUNK = 1 << 20


@functools.cache
def default_file_mode() -> int:
    """The mode a plain ``open()`` would give a new file (0o666 minus the umask), without touching the umask."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return 0o666 & ~int(line.split()[1], 8)
    except OSError:
        pass
    return 0o644


def _owner_tag() -> str:
    host = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:40]
    return f"~{host}~{os.getpid()}~"


#: ``.<name>.~<host>~<pid>~<random>.tmp``: every temporary file says which process writes it.
_TEMP_NAME = re.compile(r"^\..+\.~(?P<host>[A-Za-z0-9-]*)~(?P<pid>\d+)~[^.]*\.tmp$")
#: A temporary file not written to for this long is abandoned, whoever wrote it.
STALE_TEMP_AGE_S = 24 * 3600


def make_temp(path: str | os.PathLike[str]) -> tuple[int, str]:
    """``mkstemp`` next to ``path``, named after it and after this host and process.

    The name lets :func:`remove_stale_temp_files` tell a file a killed process left behind from one
    a live process is still writing.
    """
    path = Path(path)
    return tempfile.mkstemp(prefix=f".{path.name}.{_owner_tag()}", suffix=".tmp", dir=path.parent)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def is_stale_temp(path: Path, *, now: float | None = None, max_age_s: float = STALE_TEMP_AGE_S) -> bool:
    """Was ``path`` (a temporary file of ours) left behind by a writer that is gone?

    Ours from a process of this host that no longer runs: yes.  Any ``.*.tmp`` file not modified
    for ``max_age_s`` (a writer on another machine sharing the folder, or an older version's file):
    yes.  Anything else may still be written to.
    """
    name = path.name
    if not (name.startswith(".") and name.endswith(".tmp")):
        return False
    m = _TEMP_NAME.match(name)
    if m and m["host"] == _owner_tag().split("~")[1] and not _pid_alive(int(m["pid"])):
        return True
    try:
        age = (now or time.time()) - path.stat().st_mtime
    except FileNotFoundError:
        return False
    return age > max_age_s


def remove_stale_temp_files(folder: str | os.PathLike[str], *, max_age_s: float = STALE_TEMP_AGE_S) -> list[Path]:
    """Delete the temporary files killed writers left under ``folder``; the paths removed."""
    removed = []
    now = time.time()
    for p in Path(folder).rglob(".*.tmp"):
        if p.is_file() and is_stale_temp(p, now=now, max_age_s=max_age_s):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
                removed.append(p)
    return removed


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """A temporary file name next to ``path``, for writers that take a name (safetensors, torch.save).

    On success the file is fsynced and renamed over ``path``: readers see either the old file or
    the complete new one, never a partial write.  On an exception the temporary file is removed,
    ``path`` is left untouched, and a write the machine refused becomes an :class:`OutputError`.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = make_temp(path)
        os.fchmod(fd, default_file_mode())  # mkstemp creates 0600; give the file the usual permissions
        os.close(fd)
    except OSError as e:
        raise _write_failure(path, e) or e from None
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        failure = _write_failure(path, e)
        if failure is not None:
            raise failure from None
        raise


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str], mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO[Any]]:
    """Open a temporary file next to ``path``; on success it replaces ``path`` (see :func:`atomic_path`)."""
    with atomic_path(path) as tmp, open(tmp, mode, encoding=None if "b" in mode else encoding) as f:
        yield f


_WRITE_FAILURES = {errno.ENOSPC: "no space left on the device", errno.EDQUOT: "the disk quota is exceeded",
                   errno.EROFS: "the file system is read-only", errno.EACCES: "permission denied"}


def _write_failure(path: Path, e: BaseException) -> OutputError | None:
    """A clear error for a write the machine refused (full, read-only, not allowed), or None."""
    if isinstance(e, OSError) and e.errno in _WRITE_FAILURES:
        reason = _WRITE_FAILURES[e.errno]
    elif isinstance(e, RuntimeError) and ("unexpected pos" in str(e) or "file write failed" in str(e)):
        reason = "the write failed part-way (torch.save), which usually means the device is full"
    else:
        return None
    return OutputError(f"{path}: cannot write: {reason}. Nothing was half-written (any earlier {path.name} is "
                       f"unchanged). Free space or make {path.parent} writable, or point run.output_dir or "
                       "storage.uri elsewhere, then run again: finished work is kept and the run resumes.")


def atomic_copy(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
    """Copy ``src`` to ``dst`` so that ``dst`` is never seen half-written."""
    with open(src, "rb") as fin, atomic_write(dst, "wb") as fout:
        while chunk := fin.read(_CHUNK):
            fout.write(chunk)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


#: Read size for hashing: large reads into one reused buffer (about 1.3 GB/s of sha256 here).
HASH_BUFFER = 8 << 20


def _read_chunks(f: Any, buf: bytearray) -> Iterator[memoryview]:
    """The content of the binary file ``f`` in chunks read into ``buf`` (no allocation per chunk)."""
    view = memoryview(buf)
    while n := f.readinto(buf):
        yield view[:n]


def sha256_file(path: str | os.PathLike[str]) -> str:
    """sha256 of a file's content (the project's one hashing routine)."""
    h = hashlib.sha256()
    with open(path, "rb", buffering=0) as f:
        for chunk in _read_chunks(f, bytearray(HASH_BUFFER)):
            h.update(chunk)
    return h.hexdigest()


def copy_hashing(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> tuple[int, str]:
    """Copy ``src`` to ``dst`` atomically, hashing the bytes on the way: (size, sha256) of what was written.

    One read of ``src``: the hash describes exactly the bytes written, not a second read of them.
    """
    h, size = hashlib.sha256(), 0
    with open(src, "rb", buffering=0) as fin, atomic_path(dst) as tmp, open(tmp, "wb", buffering=0) as fout:
        for chunk in _read_chunks(fin, bytearray(HASH_BUFFER)):
            h.update(chunk)
            fout.write(chunk)
            size += len(chunk)
    return size, h.hexdigest()


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    with atomic_write(path) as f:
        json.dump(obj, f, ensure_ascii=False, indent=2, sort_keys=False, default=str)
        f.write("\n")


def read_json(path: str | os.PathLike[str]) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def write_jsonl(path: str | os.PathLike[str], rows: Iterable[dict[str, Any]]) -> int:
    """Write one JSON object per line, atomically.  Returns the number of rows."""
    n = 0
    with atomic_write(path) as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    return n


def read_jsonl(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Read a JSON-lines file we wrote ourselves (strict: any bad line is an error naming it)."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{lineno}: invalid JSON: {e.msg}") from None
    return rows


def make_temp_dir(folder: str | os.PathLike[str], name: str) -> Path:
    """A new empty folder ``.<name>.~<host>~<pid>~<random>.tmp`` in ``folder``, named like :func:`make_temp`'s
    files, so that :func:`remove_stale_temp_dirs` can tell when the process that fills it is gone."""
    Path(folder).mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{name}.{_owner_tag()}", suffix=".tmp", dir=folder))


def remove_stale_temp_dirs(folder: str | os.PathLike[str], *, max_age_s: float = STALE_TEMP_AGE_S) -> list[Path]:
    """Delete the folders of :func:`make_temp_dir` directly in ``folder`` whose writer is gone (see
    :func:`is_stale_temp`); the paths removed."""
    removed = []
    now = time.time()
    for p in Path(folder).glob(".*.tmp"):
        if p.is_dir() and not p.is_symlink() and is_stale_temp(p, now=now, max_age_s=max_age_s):
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
    return removed


def _link_beside(src: str | os.PathLike[str], dst: Path) -> Path | None:
    """A new hard link of ``src`` under a temporary name beside ``dst``, or None when the file system refuses
    one (another file system, no hard links there, too many links): the caller then copies."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = make_temp(dst)
    os.close(fd)
    os.unlink(tmp)  # os.link will not replace a file: the unique name is kept, the empty file goes
    try:
        os.link(src, tmp)
    except FileNotFoundError:
        raise
    except OSError:
        return None
    return Path(tmp)


def _rename_link(tmp: Path, dst: str | os.PathLike[str]) -> None:
    """Rename the link ``tmp`` over ``dst``.  When ``dst`` already is a link of the same file, rename(2) does
    nothing and leaves ``tmp``: it is removed then."""
    os.replace(tmp, dst)
    tmp.unlink(missing_ok=True)


def link_atomic(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> bool:
    """Make ``dst`` a hard link of ``src`` (a temporary link renamed over ``dst``: never seen half-made).

    Nothing is read.  False, with ``dst`` untouched, when the file system cannot link the two (different
    file systems, or no hard links there).
    """
    tmp = _link_beside(src, Path(dst))
    if tmp is None:
        return False
    try:
        _rename_link(tmp, dst)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return True


def link_hashing(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> tuple[int, str] | None:
    """Make ``dst`` a hard link of ``src`` and hash it on the way: (size, sha256), from one read of the file.

    The link is hashed under its temporary name and only then renamed over ``dst``, so the hash is of the
    very file ``dst`` names.  None, with ``dst`` untouched, when the file system cannot link the two (the
    caller copies instead, e.g. with :func:`copy_hashing`).
    """
    tmp = _link_beside(src, Path(dst))
    if tmp is None:
        return None
    try:
        h, size = hashlib.sha256(), 0
        with open(tmp, "rb", buffering=0) as f:
            for chunk in _read_chunks(f, bytearray(HASH_BUFFER)):
                h.update(chunk)
                size += len(chunk)
        _rename_link(tmp, dst)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return size, h.hexdigest()
