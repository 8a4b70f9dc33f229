"""Regenerate the bundled demo dataset (60 clips, 4 synthetic speakers, Amharic + English).

Needs the Debian packages ``espeak-ng`` and ``sox`` (not needed to *use* the dataset)::

    apt-get install espeak-ng sox
    python indextts_core/demo/dataset/generate.py

Each "speaker" is an espeak-ng voice variant with its own pitch and rate, so clips of one
speaker sound alike and speakers differ.  Every speaker reads 12 Amharic and 3 English
sentences; no sentence is read twice.  Audio is written as 16-bit FLAC at espeak-ng's native
22.05 kHz (the pipeline resamples to 16 kHz itself), and ``manifest.jsonl`` lists the clips
in the platform's manifest schema with paths relative to this folder.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent

# Short everyday sentences written for this demo.  A few carry Ethiopic punctuation
# (፣ ፤ ።), the traditional word separator (፡) and digits, which the text front-end must handle.
AMHARIC = [
    "ሰላም ነው?",
    "እንኳን ደህና መጡ።",
    "አዲስ አበባ የኢትዮጵያ ዋና ከተማ ናት።",
    "ዛሬ የአየሩ ሁኔታ ጥሩ ነው።",
    "ቡና መጠጣት እወዳለሁ።",
    "ልጆቹ በትምህርት ቤት ይማራሉ።",
    "መጽሐፉን ጠረጴዛው ላይ አስቀምጥ።",
    "ነገ ጠዋት ወደ ገበያ እሄዳለሁ።",
    "እባክህ ቀስ ብለህ ተናገር።",
    "አመሰግናለሁ፣ በጣም ደስ ብሎኛል።",
    "ስምህ ማን ነው?",
    "ስሜ አበበ ነው።",
    "የኢትዮጵያ ቀን መቁጠሪያ አሥራ ሦስት ወራት አሉት።",
    "ውሃ ለሕይወት አስፈላጊ ነው።",
    "አባቴ ገበሬ ነው፤ እናቴ ደግሞ መምህርት ናት።",
    "ባቡሩ በሰዓቱ ደረሰ።",
    "ዝናብ ስለሚዘንብ ጃንጥላ ያዝ።",
    "እንጀራ በወጥ በጣም ጣፋጭ ነው።",
    "ከተማዋ በሌሊት ጸጥ ያለች ናት።",
    "የቤተ መጻሕፍቱ በር ተከፍቷል።",
    "ሁለት ሺህ ሰዎች በስብሰባው ተገኙ።",
    "እሑድ ቤተሰቦቼን እጠይቃለሁ።",
    "ሙዚቃ ማዳመጥ ያስደስተኛል።",
    "ጤና ይስጥልኝ!",
    "መንገዱ ረጅም ቢሆንም ደረስን።",
    "ተማሪዎቹ ፈተናውን አለፉ።",
    "በዓሉን በደስታ አከበርን።",
    "ጓደኛዬ ከሐረር መጣ።",
    "ይህ ቤት በጣም ትልቅ ነው።",
    "በ2015 ዓ.ም. ከዩኒቨርሲቲ ተመረቀ።",
    "ፀሐይ በምሥራቅ ትወጣለች።",
    "ወንዙ ወደ ሐይቁ ይፈሳል።",
    "ዶሮዎቹ በማለዳ ይጮኻሉ።",
    "ምግቡ ዝግጁ ነው፣ ኑ ብሉ።",
    "ሐኪሙ መድኃኒት ሰጠኝ።",
    "አውቶቡሱ ሞልቷል።",
    "እናቴ ዳቦ ጋገረች።",
    "የሀገራችን ተራሮች ውብ ናቸው።",
    "ሰዓቱ ስንት ነው?",
    "ደብዳቤውን ትናንት ላክሁት።",
    "ገበሬዎቹ ስንዴ ዘሩ።",
    "ልጅቷ መዝሙር ዘመረች።",
    "በሩን ዝጋ፣ ብርድ ነው።",
    "አንድ ኩባያ ሻይ እፈልጋለሁ።",
    "ሥራውን በሰዓቱ ጨረስን።",
    "ጋዜጣውን አነበብከው?",
    "ከብቶቹ በሜዳ ላይ ይግጣሉ።",
    "ሰላም፡ለዚህ፡ቤት።",
]

ENGLISH = [
    "The quick brown fox jumps over the lazy dog.",
    "Please call Stella and ask her to bring these things.",
    "It is a beautiful morning in the mountains.",
    "We will meet at the station at half past nine.",
    "Learning a new language takes patience and practice.",
    "The library opens early on weekdays.",
    "She sold 312 tickets yesterday.",
    "Coffee was first discovered in Ethiopia.",
    "How long does the journey take by train?",
    "Thank you very much for your help.",
    "The river was calm and the sky was clear.",
    "Turn left at the next corner, then walk straight ahead.",
]

# speaker id -> (espeak-ng variant, pitch 0-99, words per minute)
SPEAKERS = {
    "spk01": ("m1", 35, 150),
    "spk02": ("f2", 65, 160),
    "spk03": ("m3", 50, 135),
    "spk04": ("f4", 80, 170),
}
PER_SPEAKER_AM = len(AMHARIC) // len(SPEAKERS)
PER_SPEAKER_EN = len(ENGLISH) // len(SPEAKERS)


def _speak(text: str, voice: str, variant: str, pitch: int, rate: int, out_flac: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "clip.wav"
        subprocess.run(
            ["espeak-ng", "-v", f"{voice}+{variant}", "-p", str(pitch), "-s", str(rate),
             "-w", str(wav), text],
            check=True,
        )
        # Trim leading/trailing silence, leave 0.1 s of room, write 16-bit FLAC.
        subprocess.run(
            ["sox", str(wav), "-b", "16", str(out_flac),
             "silence", "1", "0.02", "0.5%", "reverse", "silence", "1", "0.02", "0.5%", "reverse",
             "pad", "0.1", "0.1"],
            check=True,
        )


def main() -> int:
    for tool in ("espeak-ng", "sox"):
        if shutil.which(tool) is None:
            print(f"error: {tool} is not installed (apt-get install espeak-ng sox)", file=sys.stderr)
            return 1
    audio_dir = HERE / "audio"
    if audio_dir.exists():
        shutil.rmtree(audio_dir)
    audio_dir.mkdir()
    rows = []
    for s, (speaker, (variant, pitch, rate)) in enumerate(SPEAKERS.items()):
        am = AMHARIC[s * PER_SPEAKER_AM:(s + 1) * PER_SPEAKER_AM]
        en = ENGLISH[s * PER_SPEAKER_EN:(s + 1) * PER_SPEAKER_EN]
        for lang, voice, texts in (("am", "am", am), ("en", "en-us", en)):
            for i, text in enumerate(texts, start=1):
                clip_id = f"{speaker}_{lang}_{i:03d}"
                rel = Path("audio") / f"{clip_id}.flac"
                _speak(text, voice, variant, pitch, rate, HERE / rel)
                rows.append({"id": clip_id, "audio": rel.as_posix(), "text": text,
                             "speaker": speaker, "language": lang})
    with open(HERE / "manifest.jsonl", "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    total = sum(p.stat().st_size for p in audio_dir.iterdir())
    print(f"wrote {len(rows)} clips for {len(SPEAKERS)} speakers, {total / 1e6:.2f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
