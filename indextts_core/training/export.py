"""The end of a run: the best checkpoint exported in the official layout, reloaded strictly and checked.

A LoRA run's adapters are merged into the weights first (the export is a plain official
``gpt.pth``); the export is written beside its final place and swapped in whole, so an earlier
export is never half replaced; ``indextts-export.json`` records what it is (step, metrics,
tokenizer, dtype, the checks and their results) and, when the training data's text tokens per
second were measured, the segment budget per language (``segments``,
:func:`~indextts_core.synthesis.budget.segments_record`; our synthesis reads it, the official
inference ignores it).
"""

from __future__ import annotations

import copy
import logging
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from indextts_core.model.checkpoint import export_checkpoint, load_gpt, load_state_dict_into, official_state_dict
from indextts_core.model.vocab import base_rows_digest
from indextts_core.synthesis.budget import DEFAULT_MAX_SEGMENT_S, segments_record
from indextts_core.training.checkpointing import load_file
from indextts_core.training.data import Batch
from indextts_core.training.lora import check_merged_keys, has_lora, merge_lora
from indextts_core.training.objective import forward
from indextts_core.training.setup import ModelSetup
from indextts_core.utils.fileio import sha256_file, write_json

log = logging.getLogger(__name__)


def export(model: nn.Module, source: Path, out: Path, setup: ModelSetup, base_dir: Path, tokenizer: Path,
           export_dtype: str, base_digest: str | None, check: Batch | None, device: torch.device,
           pad_at_end: bool = True, segment_rates: Mapping[str, Mapping[str, Any]] | None = None,
           max_segment_s: float = DEFAULT_MAX_SEGMENT_S) -> tuple[Path, bool, bool | None]:
    """Export ``source`` in the official layout into ``out``, reload it strictly and check it is what was trained.

    The reloaded weights must equal the trained ones bit for bit and, when ``check`` (a validation batch) is
    given and the export is float32, give the same logits within 1e-5 (recorded as ``reload_logits_max_diff``:
    equal weights lying differently in memory can round differently).  ``base_digest``: the base rows' digest
    before training (frozen base rows), checked on the export; None skips that check.
    ``segment_rates``: the training data's text tokens per second per language
    (:func:`~indextts_core.synthesis.budget.tokens_per_second`), recorded with the segment budget
    they give at ``max_segment_s`` as the sidecar's ``segments``; None: no such record.
    Returns (folder, verified, base rows unchanged or None).
    """
    ck = load_file(source)
    load_state_dict_into(model, ck["model"], source)
    step, metrics, fingerprint = ck["progress"]["step"], ck.get("metrics", {}), ck["fingerprint"]
    del ck  # its weights are in the model now, and its optimizer state (twice the weights) is not needed
    final, out = out, out.with_name(f".{out.name}.partial")  # written apart, then swapped in whole
    shutil.rmtree(out, ignore_errors=True)
    merged: list[str] = []
    merge_diff: float | None = None
    if has_lora(model):  # the adapters go into the weights: the export is a plain official checkpoint
        on_cpu = all(p.device.type == "cpu" for p in model.parameters())
        adapted = model if on_cpu else copy.deepcopy(model).cpu()  # the reference: one copy only, the merged one
        was = adapted.training
        model = copy.deepcopy(adapted.eval())
        merged = merge_lora(model)
        base_keys = official_state_dict(load_gpt(base_dir, strict=True, mmap=True))  # keys: the file is not read
        check_merged_keys(official_state_dict(model), base_keys)
        if check is not None:
            with torch.no_grad():
                merge_diff = float((forward(adapted, check, pad_at_end=pad_at_end).mel_logits
                                    - forward(model, check, pad_at_end=pad_at_end).mel_logits).abs().max())
            log.info("LoRA merged into %d layers; mel logits with adapters vs merged: max |diff| %.2e", len(merged),
                     merge_diff)
        adapted.train(was)
        del adapted, base_keys
        device = torch.device("cpu")
    result = export_checkpoint(model, out, base_dir, tokenizer, setup.vocab_size, export_dtype)
    side = tokenizer.with_suffix(".json")
    files = dict(result.files)
    if setup.language and side.is_file():  # 2.5: the language choice travels with the vocabulary (the official
        shutil.copyfile(side, out / side.name)  # code ignores it; our generate/synthesize read the lang code)
        files[side.name] = sha256_file(out / side.name)
    reloaded = load_gpt(out, strict=True, mmap=True)  # the file just written (in the page cache), compared once
    ours = official_state_dict(model)
    theirs = reloaded.state_dict()
    dtype = torch.float16 if export_dtype == "float16" else torch.float32
    differing = [k for k, v in ours.items()
                 if not torch.equal(theirs[k], v.detach().cpu().to(dtype if v.is_floating_point() else v.dtype))]
    same, why = not differing, f"{len(differing)} tensor(s) differ, e.g. {differing[:3]}" if differing else ""
    logits_diff = None
    if same and check is not None and export_dtype == "float32":
        was = model.training
        model.eval()
        with torch.no_grad():
            a = forward(model.cpu(), check, pad_at_end=pad_at_end)
            b = forward(reloaded, check, pad_at_end=pad_at_end)
        model.to(device).train(was)
        # the weights are bit-identical by now; the logits may differ in the last bits where the two models' tensors
        # lie differently in memory (a mapped file, a resized text head: the released shapes showed 2.9e-06)
        logits_diff = max(float((a.mel_logits - b.mel_logits).abs().max()),
                          float((a.text_logits - b.text_logits).abs().max()))
        same = torch.allclose(a.mel_logits, b.mel_logits, rtol=1e-5, atol=1e-5) and \
            torch.allclose(a.text_logits, b.text_logits, rtol=1e-5, atol=1e-5)
        if not same:
            why = f"the weights are equal but the logits are not: max |diff| {logits_diff:.3g}"
    unchanged = base_rows_digest(reloaded, setup.base_vocab, setup.trained_base_rows) == base_digest \
        if base_digest is not None and export_dtype == "float32" else None
    write_json(out / "indextts-export.json", {
        "format": "indextts-export/1", "source": source.name, "step": step,
        "metrics": metrics, "fingerprint": fingerprint,
        "tokenizer": {"file": tokenizer.name, "sha256": setup.tokenizer.sha256,
                      "vocab_size": setup.vocab_size, "base_vocab": setup.base_vocab},
        "number_text_tokens": setup.vocab_size, "text_rows": setup.vocab_size + 1,
        "dtype": export_dtype, "verified_reload": same, "reload_logits_max_diff": logits_diff,
        "base_rows_unchanged": unchanged,
        "files": files, "missing_for_inference": list(result.missing_for_inference),
        **({"lora_merged": {**setup.describe().get("lora", {}), "layers": len(merged),
                            "mel_logits_max_diff": merge_diff}} if merged else {}),
        **({"segments": segments_record(segment_rates, max_segment_s)} if segment_rates is not None else {}),
    })
    if not same:
        raise RuntimeError(f"{final}: the exported checkpoint does not reproduce the trained model ({why})")
    if result.missing_for_inference:
        log.warning("%s: the base folder %s has no %s, so neither has the export: the official inference needs "
                    "them (download the complete official folder)", final, base_dir,
                    ", ".join(result.missing_for_inference))
    if final.exists():  # an earlier export of this run: replaced whole, so nothing of it lingers
        old = final.with_name(f".{final.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        final.rename(old)
        out.rename(final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        out.rename(final)
    log.info("exported %s (step %d) to %s; strict reload verified", source.name, step, final)
    return final, same, unchanged
