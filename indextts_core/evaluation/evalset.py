"""The fixed evaluation set: what every model is asked to say, with whose voice.

From the preprocessing index (``train_manifest.jsonl`` / ``val_manifest.jsonl`` rows: id, speaker,
language, text, audio, duration):

* ``seen``: held-out validation clips of speakers the model trained on; the prompt is another clip
  of the same speaker (a training clip, so the model was never trained on the target itself);
* ``unseen``: clips of speakers with no training clip (``ingest.val_speakers``), prompted with
  another clip of the same speaker: zero-shot voice cloning in the new language;
* ``sentences``: optional user sentences (one per line, ``<language><TAB><text>`` or just the text
  in the run's language), spoken with the voice of the first ``seen`` prompt of their language;
  they have no reference recording.

Which clips are chosen depends only on the seed and the clip ids (a hash ranking), so the base
model, the fine-tuned one and the current champion are asked the same things, and the set moves
little as data grows.  Rows that cannot be used (no other clip of the speaker) are counted.
"""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from indextts_core.errors import InputError

@dataclass(frozen=True)
class EvalItem:
    id: str
    group: str  # seen | unseen | sentences
    language: str
    speaker: str
    text: str
    prompt_id: str
    prompt_audio: str
    reference_audio: str | None = None
    reference_duration: float | None = None
    reference_codes: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class EvalSet:
    items: list[EvalItem]
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> rows

    def counts(self) -> dict[str, int]:
        return dict(Counter(f"{i.language}/{i.group}" for i in self.items))


def _rank(seed: int, *parts: str) -> str:
    return hashlib.sha256("\x00".join([str(seed), *parts]).encode()).hexdigest()


def read_sentences(path: Path, default_language: str) -> list[tuple[str, str]]:
    """``(language, text)`` per non-empty line of a sentence file (``lang<TAB>text`` or ``text``)."""
    out = []
    for n, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), 1):
        if not line.strip():
            continue
        lang, tab, text = line.partition("\t")
        if not tab:
            lang, text = default_language, line
        lang, text = lang.strip(), text.strip()
        if not lang or not text:
            raise InputError(f"{path}:{n}: expected '<language><TAB><text>' or a sentence, got {line!r}")
        out.append((lang, text))
    return out


def build_eval_set(train_rows: Sequence[Mapping[str, Any]], val_rows: Sequence[Mapping[str, Any]], *,
                   max_items: int, seed: int, sentences: Sequence[tuple[str, str]] = ()) -> EvalSet:
    """At most ``max_items`` per language and group, each with a prompt from the same speaker."""
    by_speaker_train: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    by_speaker_val: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for r in train_rows:
        by_speaker_train[r["speaker"]].append(r)
    for r in val_rows:
        by_speaker_val[r["speaker"]].append(r)
    candidates: dict[tuple[str, str], list[EvalItem]] = defaultdict(list)
    skipped: Counter[str] = Counter()
    for r in val_rows:
        seen = bool(by_speaker_train.get(r["speaker"]))
        pool = (by_speaker_train[r["speaker"]] if seen
                else [o for o in by_speaker_val[r["speaker"]] if o["id"] != r["id"]])
        if not pool:
            skipped["no_other_clip_of_speaker"] += 1
            continue
        same_lang = [o for o in pool if o["language"] == r["language"]] or list(pool)
        prompt = min(same_lang, key=lambda o: _rank(seed, r["id"], o["id"]))
        group = "seen" if seen else "unseen"
        candidates[(r["language"], group)].append(EvalItem(
            id=r["id"], group=group, language=r["language"], speaker=r["speaker"], text=r["text"],
            prompt_id=prompt["id"], prompt_audio=prompt["audio"], reference_audio=r["audio"],
            reference_duration=r.get("duration"), reference_codes=r.get("code_len")))
    items: list[EvalItem] = []
    for (_lang, _group), cands in sorted(candidates.items()):
        chosen = sorted(cands, key=lambda i: _rank(seed, i.id))[:max_items]
        skipped["over_max_items"] += len(cands) - len(chosen)
        items += sorted(chosen, key=lambda i: i.id)
    first_prompt = {}
    for i in items:
        first_prompt.setdefault(i.language, i)
    for n, (lang, text) in enumerate(sentences, 1):
        voice = first_prompt.get(lang) or (items[0] if items else None)
        if voice is None:
            raise InputError("the evaluation sentences need a voice: no validation clip has another clip of its "
                             "speaker to prompt with")
        items.append(EvalItem(id=f"sentence-{n:03d}", group="sentences", language=lang, speaker=voice.speaker,
                              text=text, prompt_id=voice.prompt_id, prompt_audio=voice.prompt_audio))
    return EvalSet(items, {k: v for k, v in skipped.items() if v})
