"""The demo recordings, their ground truth, and a judge that knows it (an oracle standing in for a real ASR)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import correlate

from indextts_core.config import DEMO_DIR

RECORDINGS = DEMO_DIR / "recordings"


def truth() -> dict:
    return json.loads((RECORDINGS / "truth.json").read_text(encoding="utf-8"))


def sentences_within(recording: str, start_s: float, end_s: float) -> list[str]:
    """The truth's sentences of ``recording`` whose middle lies in [start_s, end_s]."""
    return [s["text"] for s in truth()["recordings"][recording]["sentences"]
            if start_s <= (s["start_s"] + s["end_s"]) / 2 <= end_s]


class OracleJudge:
    """Transcribes a 16 kHz slice of a demo recording with the truth's text: it finds where the slice comes
    from (cross-correlation against every demo recording) and says the sentences whose middle is inside.
    What a perfect ASR would hear; ``wrong`` names recordings it mishears (it says nonsense there)."""

    name = "oracle"

    def __init__(self, wrong: tuple[str, ...] = ()):
        self.audio = {p.name: sf.read(p, dtype="float64")[0] for p in sorted(RECORDINGS.glob("*.flac"))}
        self.energy = {name: np.concatenate([[0.0], np.cumsum(a ** 2)]) for name, a in self.audio.items()}
        self.wrong = wrong
        self.calls = 0

    def supports(self, language: str) -> bool:
        return True

    def locate(self, wave: np.ndarray) -> tuple[str, float]:
        probe = np.asarray(wave[:8000], dtype=np.float64)
        best = ("", 0.0, -1.0)
        for name, audio in self.audio.items():
            c = correlate(audio, probe, mode="valid", method="fft")
            cum = self.energy[name]
            score = c / (np.sqrt(cum[len(probe):] - cum[:-len(probe)]) + 1e-9)
            i = int(np.argmax(score))
            if score[i] > best[2]:
                best = (name, i / 16000, float(score[i]))
        return best[0], best[1]

    def transcribe(self, waves, language: str) -> list[str]:
        self.calls += 1
        out = []
        for wave in waves:
            name, start = self.locate(wave)
            text = " ".join(sentences_within(name, start, start + len(wave) / 16000))
            out.append("ብብብ ቅቅቅ" if name in self.wrong else text)
        return out


def copy_recordings(dest: Path, names: list[str]) -> Path:
    """The named demo recordings and their sidecars, copied to ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in names:
        stem = Path(name).stem
        for path in RECORDINGS.glob(f"{stem}.*"):
            (dest / path.name).write_bytes(path.read_bytes())
    return dest
