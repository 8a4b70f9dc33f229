"""What verifying by content costs: seconds per GB of sha256 verification vs a plain read of the same bytes.

Writes a few hundred MB of temporary files, then, in the same run, times (1) reading every file
in full and (2) :func:`~indextts_core.store.materialize.verify_dir` (what every stage's input goes
through: each file hashed against its directory manifest).  Both passes read from the page cache
after the first warm-up read, so the ratio is the hashing overhead itself.  Prints both figures
and their ratio; asserts nothing.

    uv run python benchmarks/verify_cost.py [--mb 384] [--files 6]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from indextts_core.store.materialize import verify_dir
from indextts_core.store.objects import DirInfo, ObjectInfo
from indextts_core.utils.fileio import HASH_BUFFER, sha256_file

GB = 1024**3


def make_files(folder: Path, total_mb: int, files: int) -> DirInfo:
    """``files`` random files of ``total_mb`` MB in all, and their manifest."""
    per = total_mb * 1024 * 1024 // files
    infos = []
    for i in range(files):
        path = folder / f"part-{i}.bin"
        with open(path, "wb") as f:
            for _ in range(per // (4 << 20)):
                f.write(os.urandom(4 << 20))
            f.write(os.urandom(per % (4 << 20)))
        infos.append(ObjectInfo(path.name, path.stat().st_size, sha256_file(path)))  # also warms the page cache
    return DirInfo("bench", tuple(infos))


def plain_read(folder: Path, info: DirInfo) -> None:
    """Read every byte, as a consumer that trusts the files would (same buffer size as the hashing)."""
    buf = bytearray(HASH_BUFFER)
    for f in info.files:
        with open(folder / f.key, "rb", buffering=0) as fh:
            while fh.readinto(buf):
                pass


def best_of(n: int, fn, *args) -> float:
    times = []
    for _ in range(n):
        start = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=int, default=384, help="total size of the temporary files (MB)")
    ap.add_argument("--files", type=int, default=6)
    ap.add_argument("--repeat", type=int, default=3, help="timed passes of each kind (the best counts)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="indextts-verify-bench-") as tmp:
        folder = Path(tmp)
        info = make_files(folder, args.mb, args.files)
        gb = info.total_bytes / GB
        read_s = best_of(args.repeat, plain_read, folder, info)
        verify_s = best_of(args.repeat, verify_dir, folder, info, str(folder))
    print(f"data: {info.total_bytes / 1e6:.0f} MB in {len(info.files)} files (page cache warm, best of {args.repeat})")
    print(f"plain read:           {read_s / gb:.3f} s/GB ({gb / read_s:.2f} GB/s)")
    print(f"content verification: {verify_s / gb:.3f} s/GB ({gb / verify_s:.2f} GB/s)")
    print(f"ratio verify/read:    {verify_s / read_s:.1f}x")


if __name__ == "__main__":
    main()
