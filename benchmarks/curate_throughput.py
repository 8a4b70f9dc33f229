"""How fast each step of the curate stage runs, in audio seconds per second, on the bundled long recordings.

    uv run python benchmarks/curate_throughput.py                 # CPU, one thread per step, 3 repeats
    uv run python benchmarks/curate_throughput.py --device cuda --repeats 5

The four demo recordings (``indextts_core/demo/recordings``: 112 s of espeak-ng speech, 30 sentences) are
curated from scratch (a fresh unit folder each repeat) by the stage's own code, with the judge the demo
uses (a tiny random Whisper: its transcripts are noise, so the ASR figure is that of plumbing, not of a
real model) and DNSMOS on.  Each unit records the seconds of each step (decode, VAD, cutting and text
placement, writing the clips: resample, loudness and FLAC, ASR, DNSMOS); the table shows, per step, the
audio seconds it gets through per second: the fastest of the repeats (the least disturbed by other work).

The baseline, measured in the same run: reading the same files with soundfile and nothing else (what any
curation pays); each step's figure is also given as a share of that rate.  Separately, CTC forced
alignment (the ``.txt`` path when the sentences do not match the clips one to one) is timed on the story
with a tiny random wav2vec2 CTC model.  Not a test: it measures and prints, it asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

STEPS = ("decode", "vad", "segment", "write", "asr", "dnsmos")


def baseline(files: list[Path]) -> tuple[float, float]:
    """Audio seconds and the seconds soundfile takes to read ``files``."""
    import soundfile as sf

    start, audio = time.perf_counter(), 0.0
    for f in files:
        data, sr = sf.read(f, dtype="float32")
        audio += len(data) / sr
    return audio, time.perf_counter() - start


def curate_once(root: Path, judge_dir: Path, device: str) -> tuple[dict[str, float], float, float]:
    """Per-step seconds summed over the recordings, the audio seconds and the wall seconds of one curate run."""
    from indextts_core.config import DEMO_DIR, CurateConfig
    from indextts_core.curate.process import Tools
    from indextts_core.curate.run import curate
    from indextts_core.curate.sources import list_recordings
    from indextts_core.curate.units import UnitFolder
    from indextts_core.evaluation.asr import open_transcriber
    from indextts_core.evaluation.naturalness import Naturalness

    cfg = CurateConfig(sources=[str(DEMO_DIR / "recordings")], workers=1, device=device)
    tools = Tools(open_transcriber(judge_dir, "auto", device), Naturalness(threads=1))
    start = time.perf_counter()
    curate(list_recordings(cfg), cfg, "am", root / "out", UnitFolder(root / "units"), lambda: tools, judge="tiny")
    wall = time.perf_counter() - start
    steps = dict.fromkeys(STEPS, 0.0)
    audio = 0.0
    for record_file in (root / "units").glob("*/*/unit.json"):
        record = json.loads(record_file.read_text(encoding="utf-8"))
        audio += record["duration_s"]
        for step, seconds in record["seconds"].items():
            steps[step] += seconds
    return steps, audio, wall


def alignment_rate(ctc_dir: Path, device: str) -> tuple[float, float]:
    """Audio seconds of the story and the seconds of its CTC emissions plus forced alignment."""
    from indextts_core.config import DEMO_DIR
    from indextts_core.curate.align import align_characters, ctc_emissions, split_sentences, tokens_for
    from indextts_core.data.audio import load_audio
    from indextts_core.evaluation.ctc import CTCTranscriber

    judge = CTCTranscriber(ctc_dir, device)
    wave = load_audio(DEMO_DIR / "recordings" / "story_spk06.flac", target_sr=16000).samples
    text = " ".join(split_sentences((DEMO_DIR / "recordings" / "story_spk06.txt").read_text(encoding="utf-8")))
    start = time.perf_counter()
    emissions, _ = ctc_emissions(judge, wave, "am", window_s=2.0)  # the tiny model: 800 frames/s, short windows
    ids, _ = tokens_for(judge, text)
    align_characters(emissions, ids, blank=judge.tokenizer.pad_token_id)
    return len(wave) / 16000, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    import logging

    import torch

    from indextts_core.config import DEMO_DIR
    from indextts_core.tiny.ctc import write_tiny_ctc
    from indextts_core.tiny.whisper import write_tiny_whisper

    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(1)
    files = sorted((DEMO_DIR / "recordings").glob("*.flac"))
    with tempfile.TemporaryDirectory(prefix="curate-bench-") as tmp:
        tmp_path = Path(tmp)
        whisper = write_tiny_whisper(tmp_path / "whisper", seed=0)
        ctc = write_tiny_ctc(tmp_path / "ctc", seed=0, languages=["amh"])
        base_rates, best, walls = [], dict.fromkeys(STEPS, float("inf")), []
        audio = 0.0
        for i in range(args.repeats):
            a, s = baseline(files)
            base_rates.append(a / s)
            steps, audio, wall = curate_once(tmp_path / f"run{i}", whisper, args.device)
            walls.append(wall)
            for step in STEPS:
                best[step] = min(best[step], steps[step])
        align_audio, align_s = alignment_rate(ctc, args.device)
    base = max(base_rates)
    print(f"curate throughput on the demo recordings ({audio:.1f} s of audio, {len(files)} recordings), device "
          f"{args.device}, best of {args.repeats}")
    print(f"{'step':<34}{'audio s / s':>12}{'vs reading':>12}")
    print(f"{'baseline: soundfile reads the files':<34}{base:>12.0f}{1.0:>12.2f}")
    names = {"decode": "decode + resample to 16 kHz", "vad": "Silero VAD", "segment": "cut + place text",
             "write": "resample, loudness, FLAC", "asr": "ASR judge (tiny Whisper)", "dnsmos": "DNSMOS (P.835+P.808)"}
    for step in STEPS:
        rate = audio / best[step] if best[step] > 0 else float("inf")
        print(f"{names[step]:<34}{rate:>12.1f}{rate / base:>12.3f}")
    total = sum(best.values())
    print(f"{'all steps':<34}{audio / total:>12.1f}{audio / total / base:>12.3f}")
    print(f"{'whole stage, wall (fastest run)':<34}{audio / min(walls):>12.1f}{audio / min(walls) / base:>12.3f}")
    print(f"{'CTC alignment (tiny wav2vec2)':<34}{align_audio / align_s:>12.1f}{align_audio / align_s / base:>12.3f}")


if __name__ == "__main__":
    main()
