"""The CTC speech-recognition judge: wav2vec2 / MMS / community fine-tunes, for languages Whisper cannot read.

:class:`CTCTranscriber` loads a Hugging Face ``AutoModelForCTC`` folder from a local path (nothing is
fetched): ``config.json`` (an ``architectures`` entry ending in ``ForCTC``), the weights as
safetensors only (a pickled ``pytorch_model.bin`` or ``adapter.<lang>.bin`` is refused, never
unpickled), ``preprocessor_config.json`` and the tokenizer files (``vocab.json``).  Decoding is greedy
CTC (argmax per frame, repeats merged, then blanks and the other special tokens dropped), in padded
batches; frames past a clip's end are not read, so padding never becomes text.

Languages: a folder in the layout of MMS-1b-all (a ``vocab.json`` keyed by ISO 639-3 code and
``adapter.<iso3>.safetensors`` files) reads every language it has an adapter for: the run's ISO
639-1 code is mapped to ISO 639-3 (``am`` -> ``amh``), the tokenizer's ``target_lang`` is set and
``model.load_adapter`` swaps the attention adapters and the CTC head.  A plain single-language folder
reads the languages listed in a ``languages`` field of its ``config.json`` (ISO 639-1 or 639-3
codes) when there is one; otherwise it is taken to be a model for the language it is asked about.

:func:`indextts_core.tiny.write_tiny_ctc` writes tiny random folders of both layouts for the tests.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from itertools import groupby
from pathlib import Path

import numpy as np
import torch

from indextts_core.errors import InputError
from indextts_core.evaluation.asr import SAMPLE_RATE, _first_line, read_model_config
from indextts_core.languages import UnknownLanguage, canonical_language, iso639_3, whisper_language

log = logging.getLogger(__name__)

ADAPTER_FILE = re.compile(r"^adapter\.(.+)\.safetensors$")
SAFE_WEIGHTS = ("model.safetensors", "model.safetensors.index.json")
PICKLED_WEIGHTS = ("pytorch_model.bin", "pytorch_model.bin.index.json")


def is_ctc_config(config: dict) -> bool:
    """Whether a ``config.json`` describes a CTC model (an ``architectures`` entry ending in ``ForCTC``)."""
    return isinstance(config, dict) and any(str(a).endswith("ForCTC") for a in config.get("architectures") or ())


class CTCTranscriber:
    """Greedy CTC transcription in batches; per-language adapters where the folder has them (MMS)."""

    def __init__(self, folder: str | Path, device: str | torch.device = "cpu", batch_size: int = 8):
        from transformers import AutoFeatureExtractor, AutoModelForCTC, AutoTokenizer
        from transformers.utils import logging as hf_logging

        folder = Path(folder)
        config_path, config = read_model_config(folder)
        if not is_ctc_config(config):
            raise InputError(f"{config_path}: not a CTC model (architectures {config.get('architectures')!r}, "
                             f"model_type {config.get('model_type')!r}); the CTC backend reads *ForCTC models")
        for name in ("preprocessor_config.json", "vocab.json"):
            if not (folder / name).is_file():
                raise InputError(f"{folder / name}: missing; a CTC folder needs its feature-extractor and "
                                 "tokenizer files")
        if not any((folder / n).is_file() for n in SAFE_WEIGHTS):
            pickled = [folder / n for n in PICKLED_WEIGHTS if (folder / n).is_file()]
            if pickled:
                raise InputError(f"{pickled[0]}: CTC weights refused: they can only be read by unpickling Python "
                                 "objects, which could run code, and this platform reads weights as safetensors. "
                                 "Convert the folder (on a machine you trust: AutoModelForCTC.from_pretrained(folder)"
                                 ".save_pretrained(folder, safe_serialization=True)) or use the model's "
                                 "model.safetensors")
            raise InputError(f"{folder}: no CTC weights (model.safetensors) there: download the ASR model again "
                             "(download.asr)")
        try:
            vocab = json.loads((folder / "vocab.json").read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise InputError(f"{folder / 'vocab.json'}: cannot be read ({_first_line(e)})") from None
        nested = isinstance(vocab, dict) and bool(vocab) and all(isinstance(v, dict) for v in vocab.values())
        self.folder, self.device, self.batch_size = folder, torch.device(device), batch_size
        self.name = f"ctc:{folder.name}"
        self.adapters: dict[str, Path] = {}
        self.languages: set[str] | None = None  # None: whatever it is asked about (a plain folder, no list)
        if nested:
            files = {m.group(1): p for p in folder.iterdir() if (m := ADAPTER_FILE.match(p.name))}
            self.adapters = {code: files[code] for code in vocab if code in files}
            if not self.adapters:
                pickled = sorted(folder.glob("adapter.*.bin"))
                raise InputError(f"{pickled[0] if pickled else folder / 'vocab.json'}: "
                                 + ("adapter weights refused: pickled .bin (only adapter.<lang>.safetensors is read)"
                                    if pickled else "a vocabulary per language but no adapter.<lang>.safetensors "
                                    "next to it"))
            if config.get("adapter_attn_dim") is None:
                raise InputError(f"{config_path}: adapter files are there but adapter_attn_dim is not set")
        elif "languages" in config:
            try:
                listed = config["languages"]
                self.languages = {canonical_language(x) for x in ([listed] if isinstance(listed, str) else listed)}
            except (UnknownLanguage, TypeError) as e:
                raise InputError(f"{config_path}: languages: {e}") from None
        hf_logging.disable_progress_bar()
        start = "eng" if "eng" in self.adapters else next(iter(sorted(self.adapters)), None)
        try:
            self.feature_extractor = AutoFeatureExtractor.from_pretrained(str(folder), local_files_only=True)
            self.tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True,
                                                           **({"target_lang": start} if nested else {}))
        except Exception as e:  # noqa: BLE001 - OSError, JSONDecodeError, ...: a file missing or damaged
            raise InputError(f"{folder}: cannot load the CTC tokenizer and feature extractor ({_first_line(e)}); "
                             "a file there is missing, damaged or incomplete: download/copy the folder again") from None
        try:
            model = AutoModelForCTC.from_pretrained(str(folder), local_files_only=True, use_safetensors=True)
        except Exception as e:  # noqa: BLE001 - a damaged file, a missing one
            raise InputError(f"{folder / 'model.safetensors'}: cannot load the CTC weights ({_first_line(e)}); "
                             "the file is damaged or incomplete: download/copy it again") from None
        if self.adapters and not hasattr(model, "_get_adapters"):  # wav2vec2's own load_adapter, not PEFT's
            raise InputError(f"{config_path}: {type(model).__name__} has no per-language adapters, yet the folder "
                             "has adapter files")
        self.model = model.to(self.device).eval()
        self.target_lang: str | None = None  # the adapter loaded now

    def _adapter_for(self, language: str) -> str | None:
        """The adapter name of a language (``am`` -> ``amh``; ``cmn-script_simplified``-style names too)."""
        code = iso639_3(language)
        if code in self.adapters:
            return code
        scripted = [name for name in self.adapters if name.split("-")[0] == code]
        return scripted[0] if len(scripted) == 1 else None

    def supports(self, language: str) -> bool:
        if self.adapters:
            return self._adapter_for(language) is not None
        if self.languages is None:
            return True
        try:
            return canonical_language(whisper_language(language)) in self.languages
        except UnknownLanguage:
            return False

    def _select(self, language: str) -> None:
        if not self.adapters:
            if self.languages is None:
                if self.target_lang != language:
                    log.info("%s: a single-language CTC model with no 'languages' in its config.json: taken to "
                             "read %r", self.folder, language)
                    self.target_lang = language
            elif not self.supports(language):
                raise InputError(f"{self.folder / 'config.json'}: this CTC model reads "
                                 f"{', '.join(sorted(self.languages))}, not {language!r}")
            return
        code = self._adapter_for(language)
        if code is None:
            have = sorted(self.adapters)
            more = ", ..." if len(have) > 20 else ""
            raise InputError(f"{self.folder}: no CTC adapter for language {language!r} (adapter."
                             f"{iso639_3(language)}.safetensors); it has {len(have)}: {', '.join(have[:20])}{more}")
        if code != self.target_lang:
            try:
                self.tokenizer.set_target_lang(code)
                self.model.load_adapter(code, local_files_only=True, use_safetensors=True)
            except Exception as e:  # noqa: BLE001 - a damaged adapter file, keys that do not fit
                raise InputError(f"{self.adapters[code]}: cannot load the adapter ({_first_line(e)})") from None
            self.model.eval()
            self.target_lang = code

    @torch.no_grad()
    def transcribe(self, waves: Sequence[np.ndarray], language: str) -> list[str]:
        self._select(language)
        blank = self.tokenizer.pad_token_id
        texts: list[str] = []
        for at in range(0, len(waves), self.batch_size):
            chunk = [np.asarray(w, dtype=np.float32).reshape(-1) for w in waves[at:at + self.batch_size]]
            feats = self.feature_extractor(chunk, sampling_rate=SAMPLE_RATE, return_tensors="pt", padding=True)
            kwargs = {}
            if feats.get("attention_mask") is not None:
                kwargs["attention_mask"] = feats["attention_mask"].to(self.device)
            logits = self.model(feats["input_values"].to(self.device, self.model.dtype), **kwargs).logits
            ids = logits.argmax(dim=-1).cpu()
            frames = getattr(self.model, "_get_feat_extract_output_lengths", None)
            lengths = (frames(torch.tensor([len(w) for w in chunk])).tolist() if frames is not None
                       else [ids.shape[1]] * len(chunk))
            # greedy CTC: repeats merged, then blanks dropped; frames past a clip's end (padding) are not read
            seqs = [[t for t, _ in groupby(ids[row, :int(n)].tolist()) if t != blank]
                    for row, n in enumerate(lengths)]
            texts += [" ".join(t.split()) for t in self.tokenizer.batch_decode(
                seqs, skip_special_tokens=True, group_tokens=False)]
        return texts
