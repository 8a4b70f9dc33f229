"""How natural does an output sound?  DNSMOS, a learned predictor of listener opinion (MOS), per clip.

DNSMOS is Microsoft's non-intrusive speech quality model from the Deep Noise Suppression (DNS)
Challenge: it needs no reference recording, only the clip.  Two networks give four numbers, each on
the 1..5 MOS scale, higher is better:

* ``dnsmos_sig``, ``dnsmos_bak``, ``dnsmos_ovrl``: the ITU-T P.835 ratings of the speech signal
  itself (distortion), of the background (noise) and overall, from ``sig_bak_ovr.onnx`` on the raw
  waveform, each mapped through the polynomial fitted by the DNSMOS authors;
* ``dnsmos_p808``: the ITU-T P.808 overall rating, from ``model_v8.onnx`` on a 120-band log-mel
  spectrogram (20 ms frames, 10 ms hop, dB relative to the clip's peak).

The numbers come from the ``speechmos`` package's own :class:`speechmos.dnsmos.DNSMOS` (its
``__call__`` does the windowing, features and polynomials); this module only builds it from the
models that ship inside the wheel, with quiet single-threaded onnxruntime sessions created once per
evaluation, and checks the input.  Nothing is downloaded.  What DNSMOS does with lengths:

* it scores 9.01 s windows moved by 1 s and averages them;
* a clip shorter than 9.01 s is repeated (the whole clip appended to itself, doubling, as in
  Microsoft's reference script) until it is at least that long, so even a 0.5 s clip gets a score
  and a short clip costs several windows (a 3 s clip becomes 12 s: 3 windows; a 9 s clip becomes
  18 s: 9 windows; a 9.5 s clip: 1 window);
* an empty clip cannot be repeated into anything: :meth:`Naturalness.score` raises ValueError.

The non-personalized models are used (the personalized DNSMOS also penalises interfering talkers, a
question for speech enhancement, not for one synthesized voice).

Caveat (:data:`DNSMOS_NOTE`): DNSMOS was trained on English speech from the noise-suppression
challenge.  For another language, or for a synthetic voice, read it as a relative comparison between
models on the same items, not as an absolute MOS.
"""

from __future__ import annotations

import importlib
import logging
import time
from importlib import resources
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

#: The per-item metrics, all on the 1..5 MOS scale, higher is better.
NATURALNESS_METRICS = ("dnsmos_ovrl", "dnsmos_sig", "dnsmos_bak", "dnsmos_p808")

#: One sentence for the report.
DNSMOS_NOTE = (
    "DNSMOS was trained on English speech (Microsoft's Deep Noise Suppression Challenge data), so for "
    "other languages read it as a relative comparison between models on the same items, not as an "
    "absolute MOS."
)

#: Where the numbers come from (the package is pinned in pyproject.toml).
DNSMOS_SOURCE = (
    "speechmos 0.0.1.1 (MIT licence): Microsoft's DNSMOS models from the Deep Noise Suppression "
    "Challenge, P.835 sig_bak_ovr.onnx and P.808 model_v8.onnx, shipped in the wheel"
)

#: The sample rate DNSMOS was trained on (the caller resamples).
SAMPLE_RATE = 16000

_PACKAGES = ("onnxruntime", "librosa", "speechmos.dnsmos")  # the import order; speechmos needs the others
_MODELS = "dnsmos_models"  # the folder inside the speechmos package
_P835_MODEL = "sig_bak_ovr.onnx"
_P808_MODEL = "model_v8.onnx"


def _import_dnsmos() -> tuple[Any, Any]:
    """``(onnxruntime, speechmos.dnsmos)``, or ImportError naming the package that is missing."""
    modules = {}
    for name in _PACKAGES:
        try:
            modules[name] = importlib.import_module(name)
        except ImportError as exc:
            package = name.split(".")[0]
            raise ImportError(
                f"DNSMOS naturalness needs the Python package {package!r} (speechmos, onnxruntime and librosa "
                f"are project dependencies: run `uv sync --locked`), or set evaluate.naturalness: false; "
                f"importing {name} failed: {exc}"
            ) from exc
    return modules["onnxruntime"], modules["speechmos.dnsmos"]


def _session_options(ort: Any, threads: int) -> Any:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3  # errors only (no warnings about unused initializers and such)
    return options


class Naturalness:
    """DNSMOS for float mono 16 kHz clips; build one per evaluation (the sessions are made once)."""

    def __init__(self, threads: int = 1) -> None:
        """``threads``: onnxruntime intra-op threads per session (0 lets onnxruntime use every core)."""
        if threads < 0:
            raise ValueError(f"threads must be >= 0, got {threads}")
        start = time.perf_counter()
        ort, dnsmos = _import_dnsmos()
        options = _session_options(ort, threads)
        models = resources.files("speechmos") / _MODELS

        def session(name: str) -> Any:
            # from the bytes: works wherever the package's files live, nothing fetched
            return ort.InferenceSession((models / name).read_bytes(), options, providers=["CPUExecutionProvider"])

        class _Sessions(dnsmos.DNSMOS):
            """The package's DNSMOS with our sessions (its __init__ makes default ones from paths)."""

            def __init__(self) -> None:  # no super().__init__(): it would build default sessions
                self.primary_model_path = str(models / _P835_MODEL)
                self.onnx_sess = session(_P835_MODEL)
                self.p808_onnx_sess = session(_P808_MODEL)

        self._dnsmos = _Sessions()
        # librosa imports its submodules lazily (seconds: scipy.signal, numba): pay that here, once
        importlib.import_module("librosa").feature.melspectrogram
        self.threads = threads
        self.start_s = time.perf_counter() - start
        log.info("DNSMOS ready in %.2f s (%d onnxruntime thread(s))", self.start_s, threads)

    def score(self, wave_16k: np.ndarray) -> dict[str, float]:
        """The four DNSMOS numbers (:data:`NATURALNESS_METRICS`) of one float mono 16 kHz clip.

        Samples are clipped to [-1, 1] first.  A clip shorter than 9.01 s is repeated until it is that
        long (DNSMOS's own rule, see the module docstring); an empty, non-mono or non-finite clip raises
        ValueError.
        """
        samples = np.asarray(wave_16k, dtype=np.float32)
        if samples.ndim != 1:
            raise ValueError(f"DNSMOS needs a mono clip (a 1-D array), got shape {samples.shape}")
        if samples.size == 0:
            raise ValueError("DNSMOS cannot score an empty clip (it repeats short clips to 9.01 s)")
        if not np.isfinite(samples).all():
            raise ValueError("DNSMOS cannot score a clip with NaN or infinite samples")
        scores = self._dnsmos(np.clip(samples, -1.0, 1.0), SAMPLE_RATE, False)
        return {
            "dnsmos_ovrl": float(scores["ovrl_mos"]),
            "dnsmos_sig": float(scores["sig_mos"]),
            "dnsmos_bak": float(scores["bak_mos"]),
            "dnsmos_p808": float(scores["p808_mos"]),
        }


def open_naturalness(enabled: bool, threads: int = 1) -> Naturalness | None:
    """The DNSMOS scorer when ``enabled`` (``evaluate.naturalness``), else None.

    Raises ImportError naming the package when speechmos, onnxruntime or librosa cannot be imported.
    """
    if not enabled:
        return None
    return Naturalness(threads=threads)
