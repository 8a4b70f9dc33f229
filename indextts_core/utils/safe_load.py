"""Reading tensor files someone else wrote, without running their code, with errors that name the file.

``torch.load`` is only ever called with ``weights_only=True`` (tensors and plain containers; no
pickled objects), and safetensors headers are checked by the library; either kind of refusal
becomes an :class:`~indextts_core.errors.InputError` that names the file and says what to do.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from indextts_core.errors import InputError


def _torch_reason(e: Exception) -> str:
    text = str(e)
    found = re.search(r"WeightsUnpickler error:\s*(.+)", text)
    reason = found.group(1) if found else (text.strip().splitlines() or [type(e).__name__])[0]
    sentence = re.match(r"(.+?\.)(\s|$)", reason)  # a whole sentence, never cut in the middle
    return (sentence.group(1) if sentence else reason).strip()


#: Words in torch's messages for a file that ends early or whose zip archive is broken.
_DAMAGE_MARKERS = ("pytorchstreamreader", "central directory", "not a zip archive", "eof", "truncated",
                   "corrupted", "ran out of input", "invalid argument", "unexpected end")


def torch_load(path: str | Path, what: str, mmap: bool = False) -> Any:
    """``torch.load(path, weights_only=True)``; a file that needs pickle is refused, clearly.

    A file that cannot be read because it is cut short or damaged (a download or copy that did not
    finish) is told apart from one that holds pickled objects: the two need different fixes.

    ``mmap=True``: the tensors are views of a private (copy-on-write) mapping of the file, read from
    disk when first touched; writing to them never changes the file.  The file must then not be
    truncated or rewritten in place while they live (replacing it by a rename is safe): the pages
    not yet read would be gone.  A file in the legacy (non-zip) format cannot be mapped and is read
    whole, as with ``mmap=False``.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: {what} not found")
    try:
        size = path.stat().st_size
    except OSError as e:
        raise InputError(f"{path}: {what} cannot be read ({e.strerror or e})") from None
    if size == 0:
        raise InputError(f"{path}: {what} is damaged or incomplete (the file is empty): download/copy it again")
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap and _is_zip(path))
    except MemoryError:
        raise
    except PermissionError as e:
        raise InputError(f"{path}: {what} cannot be read ({e.strerror or e})") from None
    except Exception as e:  # noqa: BLE001 - a damaged file and a refused pickle fail in many ways
        text = str(e)
        damaged = isinstance(e, EOFError | OSError) or any(m in _torch_reason(e).lower() for m in _DAMAGE_MARKERS)
        if "WeightsUnpickler error" in text and not damaged:
            raise InputError(
                f"{path}: {what} refused: it can only be read by unpickling Python objects, which could run code, "
                f"and this platform reads tensor files with weights_only=True (tensors and plain containers only). "
                f"Save it again with torch.save of plain tensors, or use the official file. "
                f"Reason: {_torch_reason(e)}"
            ) from None
        raise InputError(f"{path}: {what} is damaged or incomplete ({size} bytes; {_damage_reason(e)}): "
                         "download/copy it again") from None


def _is_zip(path: Path) -> bool:
    """Whether ``path`` starts like a zip archive (what ``torch.save`` writes since torch 1.6; only it maps)."""
    with open(path, "rb") as f:
        return f.read(4) == b"PK\x03\x04"


def _damage_reason(e: Exception) -> str:
    """torch's first sentence (its zip reader adds a paragraph of advice), with the exception's type."""
    text = _first_line(e) if str(e).strip() else ""
    if not text:
        return "it ends early" if isinstance(e, EOFError) else type(e).__name__
    sentence = re.match(r"(.+?)\.(\s|$)", text)
    text = (sentence.group(1) if sentence else text).strip()
    return text if isinstance(e, RuntimeError) else f"{type(e).__name__}: {text}"


def safetensors_load(path: str | Path, what: str) -> dict[str, torch.Tensor]:
    """All tensors of a safetensors file; a damaged or lying header is an error naming the file."""
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: {what} not found")
    try:
        return load_file(str(path))
    except Exception as e:  # noqa: BLE001 - SafetensorError, OSError, ...
        raise InputError(f"{path}: {what} is not a readable safetensors file ({_first_line(e)}); it is damaged or "
                         "was not written completely: write it again") from None


def safetensors_open(path: str | Path, what: str) -> Any:
    """``safe_open`` for reading tensors one by one, with the same clear error."""
    from safetensors import safe_open

    path = Path(path)
    try:
        return safe_open(str(path), framework="pt")
    except Exception as e:  # noqa: BLE001
        raise InputError(f"{path}: {what} is not a readable safetensors file ({_first_line(e)}); it is damaged or "
                         "was not written completely: write it again") from None


def _first_line(e: Exception) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]
