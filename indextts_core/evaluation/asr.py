"""Speech recognition for the intelligibility metrics: an interface and its Whisper implementation.

A :class:`Transcriber` turns 16 kHz mono waveforms into text in a language given explicitly
(never detected: a model that speaks the wrong language must score badly, not be transcribed in
the language it chose).  :class:`WhisperTranscriber` loads a Hugging Face Whisper folder
(``config.json``, the weights, the tokenizer and feature-extractor files, ``generation_config.json``
with ``lang_to_id``) from a local path; nothing is fetched.  Any Whisper size works, as does a
fine-tuned one for the language.

:func:`indextts_core.tiny.write_tiny_whisper` writes a tiny random Whisper folder of the same layout:
the tests and the laptop demo load it through the same code as a real one (its transcripts are noise).

:func:`open_transcriber` picks the backend for a folder (``evaluate.asr_backend``): Whisper, or the CTC
judge of :mod:`indextts_core.evaluation.ctc` (wav2vec2 / MMS, for languages Whisper cannot read).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from indextts_core.errors import InputError
from indextts_core.languages import whisper_language

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
#: What a Whisper folder must hold besides the weights.
WHISPER_FILES = ("config.json", "generation_config.json", "preprocessor_config.json")
#: ``evaluate.asr_backend``'s choices.
BACKENDS = ("auto", "whisper", "ctc")


class Transcriber(Protocol):
    """Text of each 16 kHz waveform, in ``language`` (an ISO 639-1 code)."""

    name: str

    def transcribe(self, waves: Sequence[np.ndarray], language: str) -> list[str]: ...

    def supports(self, language: str) -> bool: ...


class WhisperTranscriber:
    """Greedy Whisper transcription with the language and task forced, in batches."""

    def __init__(self, folder: str | Path, device: str | torch.device = "cpu", batch_size: int = 8,
                 max_new_tokens: int = 200):
        from transformers import WhisperForConditionalGeneration, WhisperProcessor
        from transformers.utils import logging as hf_logging

        folder = Path(folder)
        if not folder.is_dir():
            raise InputError(f"{folder}: ASR model folder not found (evaluate.asr_model or download.asr)")
        missing = [f for f in WHISPER_FILES if not (folder / f).is_file()]
        if missing:
            raise InputError(f"{folder}: not a Whisper folder in the Hugging Face layout "
                             f"(missing {', '.join(missing)})")
        kind = json.loads((folder / "config.json").read_text()).get("model_type")
        if kind != "whisper":
            raise InputError(f"{folder / 'config.json'}: model_type is {kind!r}; the ASR backend reads Whisper models")
        hf_logging.disable_progress_bar()
        self.folder, self.device = folder, torch.device(device)
        try:
            self.processor = WhisperProcessor.from_pretrained(str(folder), local_files_only=True)
        except Exception as e:  # noqa: BLE001 - OSError, JSONDecodeError, ...: tokenizer files missing or damaged
            raise InputError(f"{folder}: cannot load the Whisper tokenizer and feature extractor ({_first_line(e)}); "
                             "a file there is missing, damaged or incomplete: download/copy the folder again") from None
        try:
            model = WhisperForConditionalGeneration.from_pretrained(str(folder), local_files_only=True)
        except Exception as e:  # noqa: BLE001 - a refused pickle, a damaged file, a missing one
            raise _weights_error(folder, e) from None
        self.model = model.to(self.device).eval()
        self.languages = {t.strip("<|>") for t in (getattr(self.model.generation_config, "lang_to_id", None) or {})}
        if not self.languages:
            raise InputError(f"{folder / 'generation_config.json'}: no lang_to_id (an English-only or outdated "
                             "Whisper); the language must be set explicitly")
        self.batch_size, self.max_new_tokens = batch_size, max_new_tokens
        self.name = f"whisper:{folder.name}"

    def supports(self, language: str) -> bool:
        return whisper_language(language) in self.languages

    @torch.no_grad()
    def transcribe(self, waves: Sequence[np.ndarray], language: str) -> list[str]:
        lang = whisper_language(language)
        if lang not in self.languages:
            raise InputError(f"{self.folder}: Whisper does not know language {language!r} (it knows "
                             f"{len(self.languages)}: {', '.join(sorted(self.languages)[:20])}...)")
        texts: list[str] = []
        for at in range(0, len(waves), self.batch_size):
            chunk = [np.asarray(w, dtype=np.float32) for w in waves[at:at + self.batch_size]]
            feats = self.processor.feature_extractor(chunk, sampling_rate=SAMPLE_RATE, return_tensors="pt",
                                                     return_attention_mask=True)
            out = self.model.generate(feats.input_features.to(self.device, self.model.dtype),
                                      attention_mask=feats.attention_mask.to(self.device), language=lang,
                                      task="transcribe", do_sample=False, num_beams=1,
                                      max_new_tokens=self.max_new_tokens)
            texts += [t.strip() for t in self.processor.tokenizer.batch_decode(out, skip_special_tokens=True)]
        return texts


def read_model_config(folder: str | Path) -> tuple[Path, dict]:
    """An ASR folder's ``config.json`` (its path and content); an InputError naming the folder or file otherwise."""
    path = Path(folder) / "config.json"
    if not Path(folder).is_dir():
        raise InputError(f"{folder}: ASR model folder not found (evaluate.asr_model or download.asr)")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{path}: missing; not an ASR model folder in the Hugging Face layout") from None
    except (OSError, ValueError) as e:
        raise InputError(f"{path}: cannot be read ({_first_line(e)})") from None
    if not isinstance(config, dict):
        raise InputError(f"{path}: not a model configuration (a JSON object)")
    return path, config


def backend_of(folder: str | Path) -> str:
    """Which backend reads a folder, from its ``config.json``: ``whisper`` or ``ctc``; an InputError otherwise."""
    from indextts_core.evaluation.ctc import is_ctc_config

    path, config = read_model_config(folder)
    if config.get("model_type") == "whisper":
        return "whisper"
    if is_ctc_config(config):
        return "ctc"
    raise InputError(f"{path}: neither a Whisper model (model_type {config.get('model_type')!r}) nor a CTC one "
                     f"(architectures {config.get('architectures')!r}, none ending in ForCTC); "
                     "evaluate.asr_backend reads only these")


def open_transcriber(folder: str | Path, backend: str = "auto", device: str | torch.device = "cpu",
                     batch_size: int = 8) -> Transcriber:
    """The judge for an ASR folder: ``auto`` reads its ``config.json``; ``whisper``/``ctc`` must match it."""
    if backend not in BACKENDS:
        raise InputError(f"evaluate.asr_backend: {backend!r} is not one of {', '.join(BACKENDS)}")
    found = backend_of(folder)
    if backend != "auto" and backend != found:
        raise InputError(f"{Path(folder) / 'config.json'}: evaluate.asr_backend is {backend}, but this folder holds "
                         f"a {'Whisper' if found == 'whisper' else 'CTC'} model; set evaluate.asr_backend: "
                         f"{found} (or auto)")
    if found == "whisper":
        return WhisperTranscriber(folder, device, batch_size)
    from indextts_core.evaluation.ctc import CTCTranscriber

    return CTCTranscriber(folder, device, batch_size)


def _first_line(e: BaseException) -> str:
    text = (str(e).strip().splitlines() or [""])[0].strip()
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def _weights_error(folder: Path, e: Exception) -> InputError:
    """What went wrong loading Whisper's weights, naming the file; a pickled ``.bin`` is refused, never run."""
    weights = [folder / n for n in ("model.safetensors", "pytorch_model.bin") if (folder / n).is_file()]
    if "WeightsUnpickler error" in str(e) or "Weights only load failed" in str(e):
        where = folder / "pytorch_model.bin" if (folder / "pytorch_model.bin").is_file() else folder
        return InputError(f"{where}: Whisper weights refused: they can only be read by unpickling Python objects, "
                          "which could run code, and this platform reads weights with weights_only=True. Convert "
                          "the folder to safetensors (on a machine you trust: WhisperForConditionalGeneration."
                          "from_pretrained(folder).save_pretrained(folder, safe_serialization=True)) or use the "
                          "official model.safetensors")
    if isinstance(e, OSError) and not weights:
        return InputError(f"{folder}: no Whisper weights (model.safetensors) there ({_first_line(e)}): "
                          "download the ASR model again (download.asr)")
    return InputError(f"{weights[0] if weights else folder}: cannot load the Whisper weights ({_first_line(e)}); "
                      "the file is damaged or incomplete: download/copy it again")
