"""Reading the official ``gpt.pth`` and writing checkpoint folders in the official layout.

* :func:`read_state_dict` loads a file a user hands us with ``torch.load(weights_only=True)``:
  a plain state dict or one wrapped under ``"model"``, as the official loader accepts.
* :func:`load_gpt` builds the model from ``config.yaml`` and loads strictly by default; any
  missing, unexpected or mis-shaped key is reported by name (and the post-init alias keys
  ``gpt.wte.weight`` / ``inference_model.*`` and ``module.`` prefixes are recognised and named).
* :func:`export_checkpoint` writes a folder the official ``infer_v2`` loads unchanged: ``gpt.pth``
  as a plain state dict with exactly the official keys (fp32 or fp16), ``config.yaml`` with
  ``gpt.number_text_tokens`` and ``dataset.bpe_model`` updated (everything else, comments
  included, left as it was), the tokenizer, every file the official inference opens that the
  config names (``s2mel.pth``, ``wav2vec2bert_stats.pt``, ``feat1.pt``, ``feat2.pt``, the Qwen
  emotion folder), and the base folder's licence and notes.  The auxiliary models the official
  code keeps in ``hf_cache/`` are not copied (it fetches them itself, or finds them in its cache).
  An IndexTTS-2.5 folder (``version: 2.5``) keeps its config's keys but ``number_text_tokens``,
  and carries the two files ``infer_v2_5`` opens by fixed names: the tiktoken vocabulary and
  ``codec.pth``.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from indextts_core.errors import InputError
from indextts_core.utils.fileio import atomic_copy, atomic_write, sha256_file
from indextts_core.model.config import GPTConfig, release_of, text_rows
from indextts_core.model.unified_voice import UnifiedVoice
from indextts_core.utils.safe_load import torch_load

ALIAS_PREFIXES = ("inference_model.",)
ALIAS_KEYS = ("gpt.wte.weight",)
#: Files of an official checkpoint folder that an export carries over from the base folder, besides
#: the ones its config names (:data:`INFERENCE_KEYS`).
CARRIED_FILES = ("LICENSE", "LICENSE.txt", "LICENSE_ZH.txt", "DISCLAIMER", "README.md", "pinyin.vocab",
                 "glossary.yaml", "indextts-bundle.json")
#: The config keys naming what ``infer_v2`` opens in the model folder besides gpt and tokenizer, with
#: the release's names (what the official ``cli_v2 check`` requires literally).
INFERENCE_KEYS = {"s2mel_checkpoint": "s2mel.pth", "w2v_stat": "wav2vec2bert_stats.pt", "emo_matrix": "feat2.pt",
                  "spk_matrix": "feat1.pt", "qwen_emo_path": "qwen0.6bemo4-merge"}


def inference_files(config: Mapping[str, Any]) -> dict[str, str]:
    """What the official inference opens in a model folder, by config key: the files (and the Qwen folder)
    its config names, falling back to the release's names."""
    files = {"gpt_checkpoint": str(config.get("gpt_checkpoint") or "gpt.pth")}
    if release_of(config.get("version")) == "2.5":  # infer_v2_5 opens these two by fixed names
        from indextts_core.model.config import TIKTOKEN_FILE

        files |= {"tokenizer": TIKTOKEN_FILE, "semantic_codec": "codec.pth"}
    else:
        files["dataset.bpe_model"] = str((config.get("dataset") or {}).get("bpe_model") or "bpe.model")
    return files | {k: str(config.get(k) or default) for k, default in INFERENCE_KEYS.items()}


class CheckpointError(InputError):
    """A checkpoint or its config does not fit the model; the message names the file and keys."""


def read_state_dict(path: str | Path, mmap: bool = False) -> dict[str, torch.Tensor]:
    """Tensors of a ``gpt.pth``-style file (plain or under ``"model"``), loaded with ``weights_only=True``.

    ``mmap=True``: views of a private mapping of the file, read when first touched (see
    :func:`~indextts_core.utils.safe_load.torch_load`).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        obj = torch_load(path, "checkpoint", mmap=mmap)
    except InputError as e:
        raise CheckpointError(str(e)) from None
    if isinstance(obj, Mapping) and "model" in obj and isinstance(obj["model"], Mapping):
        obj = obj["model"]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: expected a state dict of tensors (or one under 'model')")
    return dict(obj)


def official_state_dict(model: UnifiedVoice) -> dict[str, torch.Tensor]:
    """The model's state dict with exactly the official keys (no aliases, no prefixes)."""
    sd = model.state_dict()
    return {k: v for k, v in sd.items() if not k.startswith(ALIAS_PREFIXES) and k not in ALIAS_KEYS}


def _describe_mismatch(path: Path, model_sd: Mapping[str, torch.Tensor], sd: Mapping[str, torch.Tensor]) -> str:
    missing = [k for k in model_sd if k not in sd]
    unexpected = [k for k in sd if k not in model_sd]
    shapes = [f"{k}: file {tuple(sd[k].shape)} vs model {tuple(model_sd[k].shape)}"
              for k in model_sd if k in sd and sd[k].shape != model_sd[k].shape]
    lines = [f"{path}: does not match the model built from its config"]

    def show(title: str, items: list[str]) -> None:
        if items:
            more = f" (and {len(items) - 10} more)" if len(items) > 10 else ""
            lines.append(f"  {title} ({len(items)}): " + ", ".join(items[:10]) + more)

    show("missing", missing)
    show("unexpected", unexpected)
    show("wrong shape", shapes)
    if any(k.startswith("module.") for k in unexpected):
        lines.append("  hint: keys start with 'module.' (saved from DistributedDataParallel); strip the prefix")
    if any(k.startswith(ALIAS_PREFIXES) or k in ALIAS_KEYS for k in unexpected):
        lines.append("  hint: 'inference_model.*' / 'gpt.wte.weight' are aliases added after post_init_gpt2_config;"
                     " the official loader rejects them")
    if any(k.startswith("text_") for k in (s.split(":")[0] for s in shapes)):
        rows = sd.get("text_embedding.weight")
        if rows is not None:
            lines.append(f"  hint: the file has {rows.shape[0]} text rows, i.e. a {rows.shape[0] - 1}-piece tokenizer;"
                         f" config.yaml says number_text_tokens={model_sd['text_embedding.weight'].shape[0] - 1}")
    return "\n".join(lines)


def load_state_dict_into(model: UnifiedVoice, sd: Mapping[str, torch.Tensor], path: Path, strict: bool = True,
                         assign: bool = False) -> None:
    """Load ``sd`` (read from ``path``) into ``model``; a key set or shape that does not fit is a named error.

    ``assign=False`` copies into the model's tensors.  ``assign=True`` makes ``sd``'s tensors the
    model's own (no second copy; for a model built on the meta device): each is first given the
    model's dtype (a float16 file loads as float32, as a copy would) and its own contiguous storage.
    """
    model_sd = official_state_dict(model)
    bad_shape = any(k in sd and sd[k].shape != v.shape for k, v in model_sd.items())
    if bad_shape or (strict and set(sd) != set(model_sd)):
        raise CheckpointError(_describe_mismatch(path, model_sd, sd))
    if assign:
        seen: set[int] = set()
        sd = {k: standalone(v.to(model_sd[k].dtype) if k in model_sd else v, seen) for k, v in sd.items()}
    model.load_state_dict(dict(sd), strict=strict, assign=assign)


def standalone(t: torch.Tensor, seen: set[int]) -> torch.Tensor:
    """``t`` itself when it is contiguous and alone in its storage (none of ``seen``), else a copy that is.

    Adds the result's storage to ``seen``.  A tensor that is a view into a larger storage, or shares
    one with another tensor, would otherwise tie two parameters or be saved with its whole storage.
    """
    storage = t.untyped_storage()
    alone = (t.is_contiguous() and t.storage_offset() == 0 and storage.nbytes() == t.numel() * t.element_size()
             and storage.data_ptr() not in seen)
    out = t if alone else t.clone(memory_format=torch.contiguous_format)
    seen.add(out.untyped_storage().data_ptr())
    return out


def read_config(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{path}: config.yaml not found") from None
    except yaml.YAMLError as e:
        raise CheckpointError(f"{path}: invalid YAML ({e})") from None
    if not isinstance(data, dict) or "gpt" not in data:
        raise CheckpointError(f"{path}: no 'gpt:' section")
    return data


def load_gpt(checkpoint_dir: str | Path, strict: bool = True, config: GPTConfig | None = None,
             weights: str | None = None, mmap: bool = False) -> UnifiedVoice:
    """Build ``UnifiedVoice`` from ``<dir>/config.yaml`` and load ``<dir>/gpt.pth`` (or ``gpt_checkpoint``).

    The model is built on the meta device and the file's tensors become its parameters, so memory
    peaks near the tensors' own size (not twice it) and no time goes into a random init.  A
    non-strict load that leaves keys out builds the model for real and copies in what the file has.
    ``mmap=True``: the parameters are copy-on-write views of the file, read as they are used (training
    writes to private pages, never to the file); the file must not be rewritten in place meanwhile.
    """
    root = Path(checkpoint_dir)
    data = read_config(root / "config.yaml")
    cfg = config or GPTConfig.from_dict(data["gpt"], f"{root / 'config.yaml'}: gpt", version=data.get("version"))
    path = root / (weights or data.get("gpt_checkpoint", "gpt.pth"))
    sd = read_state_dict(path, mmap=mmap)
    with torch.device("meta"):
        model = UnifiedVoice(cfg)
    load_state_dict_into(model, sd, path, strict=strict, assign=True)
    if any(t.is_meta for t in (*model.parameters(), *model.buffers())):  # keys the file lacks (strict=False)
        model = UnifiedVoice(cfg)
        load_state_dict_into(model, sd, path, strict=strict)
    return model.eval()


# ------------------------------------------------------------------------ export

_SECTION = re.compile(r"^(\S[^:#]*):\s*(#.*)?$")


def update_config_text(text: str, vocab_size: int, bpe_model: str | None) -> str:
    """Set ``gpt.number_text_tokens`` and ``dataset.bpe_model`` in a config.yaml, changing nothing else.

    ``bpe_model=None`` (IndexTTS-2.5, whose vocabulary file has a fixed name): only the first.
    """
    out, section = [], None
    done = {"gpt": False, "dataset": False}
    for line in text.splitlines(keepends=True):
        m = _SECTION.match(line.rstrip("\n"))
        if m:
            section = m.group(1).strip()
        elif section == "gpt" and re.match(r"^\s+number_text_tokens\s*:", line):
            line = re.sub(r"(number_text_tokens\s*:\s*)[^#\s]+", rf"\g<1>{vocab_size}", line)
            done["gpt"] = True
        elif section == "dataset" and bpe_model is not None and re.match(r"^\s+bpe_model\s*:", line):
            line = re.sub(r"(bpe_model\s*:\s*)[^#\s]+", rf"\g<1>{bpe_model}", line)
            done["dataset"] = True
        out.append(line)
    new = "".join(out)
    if not done["gpt"]:
        raise CheckpointError("config.yaml: no gpt.number_text_tokens line to update")
    if bpe_model is None:
        if yaml.safe_load(new)["gpt"]["number_text_tokens"] != vocab_size:
            raise CheckpointError("config.yaml: could not update number_text_tokens safely")
        return new
    if not done["dataset"]:  # the key may be absent: add it under dataset (or a new dataset section)
        data = yaml.safe_load(new) or {}
        if "dataset" in data:
            new = re.sub(r"(?m)^dataset:\s*(#.*)?\n", lambda m: m.group(0) + f"  bpe_model: {bpe_model}\n", new, count=1)
        else:
            new = new.rstrip("\n") + f"\ndataset:\n  bpe_model: {bpe_model}\n"
    parsed = yaml.safe_load(new)
    if parsed["gpt"]["number_text_tokens"] != vocab_size or parsed["dataset"]["bpe_model"] != bpe_model:
        raise CheckpointError("config.yaml: could not update number_text_tokens / bpe_model safely")
    return new


@dataclass(frozen=True)
class ExportResult:
    output_dir: Path
    gpt_path: Path
    config_path: Path
    tokenizer_path: Path
    vocab_size: int
    dtype: str
    files: dict[str, str]  # name -> sha256
    missing_for_inference: tuple[str, ...] = ()  # what the official inference opens and the base folder lacked


def export_checkpoint(
    model: UnifiedVoice,
    output_dir: str | Path,
    base_dir: str | Path,
    tokenizer: str | Path,
    vocab_size: int,
    dtype: str = "float32",
) -> ExportResult:
    """Write an official-layout checkpoint folder for ``model`` (see the module docstring)."""
    if dtype not in ("float32", "float16"):
        raise ValueError(f"dtype must be float32 or float16, got {dtype!r}")
    out, base, tokenizer = Path(output_dir), Path(base_dir), Path(tokenizer)
    out.mkdir(parents=True, exist_ok=True)
    sd = official_state_dict(model)
    rows = sd["text_embedding.weight"].shape[0]
    if rows != text_rows(vocab_size):
        raise CheckpointError(f"model has {rows} text rows but the tokenizer has {vocab_size} pieces "
                              f"(needs {text_rows(vocab_size)} rows)")
    target = torch.float16 if dtype == "float16" else torch.float32
    seen: set[int] = set()  # tensor by tensor, and no copy of one already on the CPU in its own storage
    sd = {k: standalone(v.detach().to("cpu", target if v.is_floating_point() else v.dtype), seen)
          for k, v in sd.items()}
    base_cfg = base / "config.yaml"
    config_text = update_config_text(base_cfg.read_text(encoding="utf-8"), vocab_size,
                                     None if model.cfg.is_v25 else tokenizer.name)
    gpt_name = (yaml.safe_load(config_text) or {}).get("gpt_checkpoint", "gpt.pth")
    with atomic_write(out / gpt_name, "wb") as f:
        torch.save(sd, f)
    with atomic_write(out / "config.yaml") as f:
        f.write(config_text)
    atomic_copy(tokenizer, out / tokenizer.name)
    named = inference_files(yaml.safe_load(config_text) or {})
    missing = []
    for key, name in named.items():
        if key in ("gpt_checkpoint", "dataset.bpe_model", "tokenizer") or (out / name).exists():
            continue
        if (base / name).is_file():
            atomic_copy(base / name, out / name)
        elif (base / name).is_dir():
            shutil.copytree(base / name, out / name)
        else:
            missing.append(name)
    for name in CARRIED_FILES:
        if (base / name).is_file() and not (out / name).exists():
            atomic_copy(base / name, out / name)
    files = {p.relative_to(out).as_posix(): sha256_file(p) for p in sorted(out.rglob("*")) if p.is_file()}
    return ExportResult(out, out / gpt_name, out / "config.yaml", out / tokenizer.name, vocab_size, dtype, files,
                        tuple(missing))
