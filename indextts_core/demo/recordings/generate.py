"""Regenerate the bundled long demo recordings of the ``curate`` stage, with their ground truth.

Needs the Debian packages ``espeak-ng`` and ``sox`` (not needed to *use* the recordings)::

    apt-get install espeak-ng sox
    uv run python indextts_core/demo/recordings/generate.py

Writes, next to this file, 16 kHz mono 16-bit FLAC "long recordings" made of espeak-ng sentences
joined by pauses, their sidecars and ``truth.json`` (the known sentence spans, pauses and planted
problems, times rounded to 1 ms):

* ``lecture_spk05.flac`` + ``.srt``: a short lecture with subtitles (one cue in ``<i>`` markup, one
  cue on two lines, one cue ending 0.2 s after the next one starts, and one English sentence, the
  planted wrong-script line);
* ``story_spk06.flac`` + ``.txt``: a story with its chapter text; one sentence buried in white noise
  (-5 dB SNR over that sentence only) and one sentence read a second time later (near duplicate);
* ``interview_spk07.flac`` + ``.json``: speech with no text, speaker in the sidecar; one sentence
  amplified x8 and hard-clipped;
* ``reupload_spk05.flac`` + ``.srt``: the first three lecture sentences again, sample for sample
  (an exact duplicate).

Each sentence is synthesized alone (espeak-ng WAV in a temporary folder, resampled to 16 kHz by
sox, no dither), trimmed of espeak's own silence (samples below -45 dBFS at both ends), and placed after a
pause of 0.7-1.4 s.  A seeded -60 dBFS gaussian noise floor runs under the whole recording, so the
pauses are not digital zeros.  Everything random is seeded: rerunning gives the same files.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

HERE = Path(__file__).resolve().parent
SAMPLE_RATE = 16000
TRIM_DBFS = -45.0  # espeak's leading/trailing samples below this are cut
FLOOR_DBFS = -60.0  # the gaussian noise floor under every recording (RMS)
PAUSE_S = (0.7, 1.4)  # the pause before each sentence is drawn from this range
LEAD_S = 0.5  # noise floor before the first sentence
TAIL_S = 0.8  # noise floor after the last sentence
NOISY_SNR_DB = -5.0  # the planted noisy sentence: white noise at this SNR over its span
CLIP_GAIN = 8.0  # the planted clipped sentence: amplified by this, then clipped at +-1.0
SEED = 29

# speaker id -> (espeak-ng variant, pitch 0-99, words per minute); spk01-spk04 are the short demo's
SPEAKERS = {
    "spk05": ("m2", 40, 170),
    "spk06": ("f3", 60, 165),
    "spk07": ("m4", 45, 165),
}

# Short everyday sentences written for these recordings (none is in the short-clip demo).
LECTURE = [  # (text, language); a short talk about coffee, with one stray English line
    ("ዛሬ ስለ ቡና ታሪክ እንማራለን።", "am"),
    ("ቡና በመጀመሪያ የተገኘው በከፋ ነው።", "am"),
    ("ገበሬዎች ቡናን በጥንቃቄ ይለቅማሉ።", "am"),
    ("ፍሬው በፀሐይ ላይ ለብዙ ቀናት ይደርቃል።", "am"),
    ("ከዚያም ባቄላው በምጣድ ላይ ይቆላል።", "am"),
    ("የቡና ሥነ ሥርዓት ሦስት ዙሮች አሉት።", "am"),
    ("Please remember to switch off your phones.", "en"),
    ("የመጀመሪያው ዙር አቦል ይባላል።", "am"),
    ("ሁለተኛው ቶና፣ ሦስተኛው ደግሞ በረካ ይባላል።", "am"),
    ("ጎረቤቶች ተሰብስበው ቡና አብረው ይጠጣሉ።", "am"),
    ("ለዛሬ ትምህርታችን በዚህ ያበቃል።", "am"),
]
LECTURE_ITALIC = 4  # this cue is written as <i>...</i>
LECTURE_TWO_LINES = 8  # this cue is split over two text lines
LECTURE_OVERLAP = 9  # this cue starts 0.2 s before the previous cue ends
OVERLAP_S = 0.2
REUPLOAD_SENTENCES = 3  # the reupload is the lecture up to the pause after this many sentences

STORY = [
    "በአንድ ትንሽ መንደር አንዲት አሮጊት ይኖሩ ነበር።",
    "በየቀኑ ጠዋት ውሃ ለመቅዳት ወደ ወንዝ ይሄዱ ነበር።",
    "አንድ ቀን መንገድ ላይ የጠፋች ፍየል አገኙ።",
    "ፍየሏን ወደ ቤታቸው ወሰዷት።",
    "ማታ ላይ አንድ ትንሽ ልጅ እያለቀሰ መጣ።",
    "ፍየሏ የእኔ ናት አለ።",
    "አሮጊቷ ፈገግ ብለው ፍየሏን መለሱለት።",
    "ልጁ በጣም ተደሰተ።",
    "አንድ ቀን መንገድ ላይ የጠፋች ፍየል አገኙ።",  # STORY[2] read again: the near duplicate
    "ከዚያ ቀን ጀምሮ ጓደኛሞች ሆኑ።",
]
STORY_NOISY = 4
STORY_REREAD = (8, 2)  # (the re-read sentence, the sentence it repeats)
STORY_PARAGRAPH_BREAK = 4  # the second paragraph starts at this sentence

INTERVIEW = [
    "እኔ በአዲስ አበባ ውስጥ መምህር ነኝ።",
    "ሥራዬን በጣም እወደዋለሁ።",
    "ተማሪዎቼ በየቀኑ አዲስ ነገር ያስተምሩኛል።",
    "ትምህርት ቤቱ ከቤቴ ብዙ አይርቅም።",
    "ቅዳሜና እሑድ ከቤተሰቤ ጋር አሳልፋለሁ።",
    "ወደፊት መጽሐፍ መጻፍ እፈልጋለሁ።",
]
INTERVIEW_CLIPPED = 3


def _synthesize(text: str, language: str, speaker: str, tmp: Path) -> np.ndarray:
    """One sentence as float32 16 kHz samples, espeak's leading/trailing silence trimmed."""
    variant, pitch, rate = SPEAKERS[speaker]
    voice = "am" if language == "am" else "en-us"
    raw, wav = tmp / "espeak.wav", tmp / "16k.wav"
    subprocess.run(["espeak-ng", "-v", f"{voice}+{variant}", "-p", str(pitch), "-s", str(rate),
                    "-w", str(raw), text], check=True)
    subprocess.run(["sox", "-D", str(raw), "-r", str(SAMPLE_RATE), "-b", "16", str(wav)], check=True)
    samples, rate_read = sf.read(wav, dtype="float32")
    if rate_read != SAMPLE_RATE or samples.ndim != 1:
        raise RuntimeError(f"sox gave {rate_read} Hz, shape {samples.shape}; expected {SAMPLE_RATE} Hz mono")
    loud = np.flatnonzero(np.abs(samples) >= 10 ** (TRIM_DBFS / 20))
    if loud.size == 0:
        raise RuntimeError(f"espeak-ng produced only silence for {text!r}")
    return samples[loud[0]:loud[-1] + 1]


class _Recording:
    """A recording built sentence by sentence: sample positions are known exactly."""

    def __init__(self, speaker: str, rng: np.random.Generator) -> None:
        self.speaker = speaker
        self.rng = rng
        self.parts: list[np.ndarray] = [np.zeros(round(LEAD_S * SAMPLE_RATE), np.float32)]
        self.length = self.parts[0].size
        self.sentences: list[dict] = []  # text, language, start, end (samples)
        self.pauses: list[tuple[int, int]] = []

    def add(self, speech: np.ndarray, text: str, language: str, pause_s: float | None = None) -> None:
        if self.sentences:  # a pause between sentences; the first one follows the lead-in
            pause = round((pause_s if pause_s is not None else self.rng.uniform(*PAUSE_S)) * SAMPLE_RATE)
            self.pauses.append((self.length, self.length + pause))
            self.parts.append(np.zeros(pause, np.float32))
            self.length += pause
        self.sentences.append({"text": text, "language": language,
                               "start": self.length, "end": self.length + speech.size})
        self.parts.append(speech.astype(np.float32))
        self.length += speech.size

    def finish(self) -> np.ndarray:
        """The float samples: speech, pauses and a tail, with the noise floor under everything."""
        self.parts.append(np.zeros(round(TAIL_S * SAMPLE_RATE), np.float32))
        samples = np.concatenate(self.parts)
        samples += self.rng.normal(0.0, 10 ** (FLOOR_DBFS / 20), samples.size).astype(np.float32)
        return samples


def _to_pcm16(samples: np.ndarray) -> np.ndarray:
    return np.clip(np.round(np.clip(samples, -1.0, 1.0) * 32767.0), -32768, 32767).astype(np.int16)


def _seconds(samples: int) -> float:
    return round(samples / SAMPLE_RATE, 3)


def _srt_time(seconds: float) -> str:
    ms = round(seconds * 1000)
    return f"{ms // 3_600_000:02d}:{ms // 60_000 % 60:02d}:{ms // 1000 % 60:02d},{ms % 1000:03d}"


def _write_srt(path: Path, cues: list[dict]) -> None:
    blocks = []
    for n, cue in enumerate(cues, start=1):
        lines = "\n".join(cue["lines"])
        blocks.append(f"{n}\n{_srt_time(cue['start_s'])} --> {_srt_time(cue['end_s'])}\n{lines}\n")
    path.write_text("\n".join(blocks), encoding="utf-8")


def _lecture_cues(sentences: list[dict]) -> list[dict]:
    """The lecture's subtitle cues: the known speech spans, with the realistic quirks planted."""
    cues = []
    for i, s in enumerate(sentences):
        lines = [s["text"]]
        if i == LECTURE_ITALIC:
            lines = [f"<i>{s['text']}</i>"]
        elif i == LECTURE_TWO_LINES:
            words = s["text"].split(" ")
            half = len(words) // 2
            lines = [" ".join(words[:half]), " ".join(words[half:])]
        cues.append({"start_s": _seconds(s["start"]), "end_s": _seconds(s["end"]), "lines": lines})
    # the cue before LECTURE_OVERLAP lingers: it ends OVERLAP_S after the next cue starts
    cues[LECTURE_OVERLAP - 1]["end_s"] = round(cues[LECTURE_OVERLAP]["start_s"] + OVERLAP_S, 3)
    return cues


def _entry(rec: _Recording, samples: np.ndarray, sidecar: str | None, planted: list[dict]) -> dict:
    return {
        "duration_s": _seconds(samples.size),
        "num_samples": int(samples.size),
        "speaker": rec.speaker,
        "sidecar": sidecar,
        "sentences": [{"text": s["text"], "start_s": _seconds(s["start"]), "end_s": _seconds(s["end"]),
                       "language": s["language"], "start_sample": s["start"], "end_sample": s["end"]}
                      for s in rec.sentences],
        "pauses": [[_seconds(a), _seconds(b)] for a, b in rec.pauses],
        "planted": planted,
    }


def _span(rec: _Recording, i: int) -> dict:
    s = rec.sentences[i]
    return {"start_s": _seconds(s["start"]), "end_s": _seconds(s["end"]), "text": s["text"]}


def _write_flac(path: Path, pcm: np.ndarray) -> None:
    sf.write(path, pcm, SAMPLE_RATE, subtype="PCM_16", format="FLAC")


def main() -> int:
    for tool in ("espeak-ng", "sox"):
        if shutil.which(tool) is None:
            print(f"error: {tool} is not installed (apt-get install espeak-ng sox)", file=sys.stderr)
            return 1
    rng = np.random.default_rng(SEED)
    truth: dict = {"sample_rate": SAMPLE_RATE, "recordings": {}}
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)

        # -- the lecture (SRT) and its exact re-upload --------------------------------------------
        lecture = _Recording("spk05", rng)
        for text, language in LECTURE:
            lecture.add(_synthesize(text, language, "spk05", tmp), text, language)
        samples = lecture.finish()
        pcm = _to_pcm16(samples)
        _write_flac(HERE / "lecture_spk05.flac", pcm)
        cues = _lecture_cues(lecture.sentences)
        _write_srt(HERE / "lecture_spk05.srt", cues)
        english = [i for i, (_, language) in enumerate(LECTURE) if language == "en"]
        entry = _entry(lecture, pcm, "srt", [{"kind": "wrong_script", **_span(lecture, i)} for i in english])
        entry["cues"] = [[c["start_s"], c["end_s"]] for c in cues]
        truth["recordings"]["lecture_spk05.flac"] = entry

        end = lecture.pauses[REUPLOAD_SENTENCES - 1][1]  # up to the end of the pause after sentence 3
        reupload = _Recording("spk05", rng)
        reupload.sentences = lecture.sentences[:REUPLOAD_SENTENCES]
        reupload.pauses = lecture.pauses[:REUPLOAD_SENTENCES - 1]
        _write_flac(HERE / "reupload_spk05.flac", pcm[:end])
        _write_srt(HERE / "reupload_spk05.srt", cues[:REUPLOAD_SENTENCES])
        entry = _entry(reupload, pcm[:end], "srt",
                       [{"kind": "exact_duplicate", **_span(reupload, i), "of": f"lecture_spk05.flac:{i}"}
                        for i in range(REUPLOAD_SENTENCES)])
        entry["cues"] = [[c["start_s"], c["end_s"]] for c in cues[:REUPLOAD_SENTENCES]]
        truth["recordings"]["reupload_spk05.flac"] = entry

        # -- the story (chapter text): a noisy sentence and a re-read one -------------------------
        story = _Recording("spk06", rng)
        speech_of: dict[str, np.ndarray] = {}
        reread, original = STORY_REREAD
        for i, text in enumerate(STORY):
            speech = speech_of.get(text)
            if speech is None:
                speech = speech_of[text] = _synthesize(text, "am", "spk06", tmp)
            pause_s = None
            if i == reread:  # a pause that surely differs from the one before the original
                before = story.pauses[original - 1]
                pause_s = PAUSE_S[1] if (before[1] - before[0]) / SAMPLE_RATE < 1.0 else PAUSE_S[0]
            story.add(speech, text, "am", pause_s)
        samples = story.finish()
        s = story.sentences[STORY_NOISY]
        span = samples[s["start"]:s["end"]]
        noise_rms = np.sqrt(np.mean(span.astype(np.float64) ** 2)) / 10 ** (NOISY_SNR_DB / 20)
        samples[s["start"]:s["end"]] += rng.normal(0.0, noise_rms, span.size).astype(np.float32)
        pcm = _to_pcm16(samples)
        _write_flac(HERE / "story_spk06.flac", pcm)
        paragraphs = [" ".join(STORY[:STORY_PARAGRAPH_BREAK]), " ".join(STORY[STORY_PARAGRAPH_BREAK:])]
        (HERE / "story_spk06.txt").write_text("\n\n".join(paragraphs) + "\n", encoding="utf-8")
        truth["recordings"]["story_spk06.flac"] = _entry(story, pcm, "txt", [
            {"kind": "noisy", **_span(story, STORY_NOISY), "snr_db": NOISY_SNR_DB},
            {"kind": "near_duplicate", **_span(story, reread), "of": f"story_spk06.flac:{original}"},
        ])

        # -- the interview (no text): a clipped sentence -----------------------------------------
        interview = _Recording("spk07", rng)
        for i, text in enumerate(INTERVIEW):
            speech = _synthesize(text, "am", "spk07", tmp)
            if i == INTERVIEW_CLIPPED:
                speech = np.clip(speech * CLIP_GAIN, -1.0, 1.0)
            interview.add(speech, text, "am")
        pcm = _to_pcm16(interview.finish())
        _write_flac(HERE / "interview_spk07.flac", pcm)
        sidecar = {"speaker": "spk07", "note": "An interview answer with no transcript: segments come from "
                   "VAD and text from the ASR judge. Synthetic espeak-ng speech (Amharic)."}
        (HERE / "interview_spk07.json").write_text(json.dumps(sidecar, ensure_ascii=False, indent=2) + "\n",
                                                   encoding="utf-8")
        truth["recordings"]["interview_spk07.flac"] = _entry(interview, pcm, "json", [
            {"kind": "clipped", **_span(interview, INTERVIEW_CLIPPED), "gain": CLIP_GAIN},
        ])

    (HERE / "truth.json").write_text(json.dumps(truth, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    total = sum(p.stat().st_size for p in HERE.iterdir() if p.is_file())
    for name, rec in truth["recordings"].items():
        print(f"{name}: {rec['duration_s']:.1f} s, {len(rec['sentences'])} sentences, "
              f"{(HERE / name).stat().st_size / 1e3:.0f} kB")
    print(f"folder: {total / 1e6:.2f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
