"""The fixed evaluation set: what every model is asked to say, with whose voice.

From the preprocessing index (``train_manifest.jsonl`` / ``val_manifest.jsonl`` rows: id, speaker,
language, text, audio, duration):

* ``seen``: held-out validation clips of speakers the model trained on; the prompt is another clip
  of the same speaker (a training clip, so the model was never trained on the target itself);
* ``unseen``: clips of speakers with no training clip (``ingest.val_speakers``), prompted with
  another clip of the same speaker: zero-shot voice cloning in the new language;
* ``paragraph``: optional, one per language (``paragraph_sentences`` > 0 and at least two chosen
  held-out items): the first few chosen sentences of the language joined into one paragraph, in
  one voice, to probe long inputs (does the model reach and say the last sentence?); no reference
  recording, but the components' summed reference duration and codes;
* ``sentences``: optional user sentences (one per line, ``<language><TAB><text>`` or just the text
  in the run's language), spoken with the voice of the first ``seen`` prompt of their language;
  they have no reference recording.

Which clips are chosen depends only on the seed, the speakers and the clip ids (hash rankings), so
the base model, the fine-tuned one and the current champion are asked the same things.  Per
(language, group) the clips are drawn round-robin across speakers, so a few prolific speakers do
not fill the set: speakers in hash-rank order ``(seed, speaker)``, each speaker's clips in
hash-rank order ``(seed, id)``, one clip per speaker per round until ``max_items``.

How the set moves as data grows: a new clip of a known speaker enters only if it outranks that
speaker's last chosen clip (it then replaces the last clip drawn in the last round).  A new speaker
slots into the speaker ranking: with at least ``max_items`` speakers only the top ``max_items``
speakers are drawn (one clip each), so a newcomer ranked among them replaces the lowest-ranked one
and nothing else changes; with fewer speakers than ``max_items`` each speaker gets about
``max_items / speakers`` clips, so a newcomer takes its share and every other speaker loses at most
its lowest-ranked clip or two.  Rows that cannot be used (no other clip of the speaker) and rows
over ``max_items`` are counted in ``skipped``.  :meth:`EvalSet.digest` tells two runs whether they
were asked the same things.
"""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from indextts_core.errors import InputError
from indextts_core.text.clean import script_of

#: Characters that end a sentence (Latin, Ethiopic, CJK full stops, question and exclamation marks).
SENTENCE_END = frozenset(".!?…።፧፨。！？")
#: The held-out groups, in the set's order (``seen`` before ``unseen``).
HELD_OUT = ("seen", "unseen")


@dataclass(frozen=True)
class EvalItem:
    id: str
    group: str  # seen | unseen | paragraph | sentences
    language: str
    speaker: str
    text: str
    prompt_id: str
    prompt_audio: str
    reference_audio: str | None = None
    reference_duration: float | None = None
    reference_codes: int | None = None
    sentences: tuple[str, ...] = ()  # a paragraph's component sentences, as they appear in ``text``

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class EvalSet:
    items: list[EvalItem]
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> rows

    def counts(self) -> dict[str, int]:
        """Items per ``"language/group"``."""
        return dict(Counter(f"{i.language}/{i.group}" for i in self.items))

    def speakers(self) -> dict[str, int]:
        """Distinct speakers per ``"language/group"`` (the voice's speaker for paragraphs and sentences)."""
        seen: dict[str, set[str]] = defaultdict(set)
        for i in self.items:
            seen[f"{i.language}/{i.group}"].add(i.speaker)
        return {k: len(v) for k, v in seen.items()}

    def ids(self) -> list[str]:
        """The item ids, in the set's order."""
        return [i.id for i in self.items]

    def digest(self) -> str:
        """A short sha256 of the sorted ids: equal digests mean two runs were asked the same items."""
        return hashlib.sha256("\n".join(sorted(self.ids())).encode()).hexdigest()[:16]


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


def round_robin(cands: Sequence[EvalItem], *, max_items: int, seed: int) -> list[EvalItem]:
    """At most ``max_items`` of ``cands``, one per speaker per round, in draw order.

    Speakers are visited in hash-rank order ``(seed, speaker)`` and each speaker's items in
    hash-rank order ``(seed, id)``; the result does not depend on the order of ``cands``.
    """
    queues: dict[str, list[EvalItem]] = defaultdict(list)
    for c in cands:
        queues[c.speaker].append(c)
    order = sorted(queues, key=lambda s: (_rank(seed, s), s))
    ranked = [sorted(queues[s], key=lambda i: (_rank(seed, i.id), i.id)) for s in order]
    chosen: list[EvalItem] = []
    for depth in range(max((len(q) for q in ranked), default=0)):
        for queue in ranked:
            if len(chosen) >= max_items:
                return chosen
            if depth < len(queue):
                chosen.append(queue[depth])
    return chosen


def end_sentence(text: str) -> str:
    """``text`` ending with a sentence mark: kept if it has one, else ``።`` for Ethiopic script, ``.`` otherwise."""
    text = text.strip()
    core = text.rstrip("\"'”’»)]」』")  # a closing quote or bracket may follow the mark
    if core and core[-1] in SENTENCE_END:
        return text
    return text + ("።" if any(script_of(c) == "ETHIOPIC" for c in text) else ".")


def paragraph_item(items: Sequence[EvalItem], language: str, sentences: int) -> EvalItem | None:
    """The paragraph probe of ``language`` from the set's held-out ``items`` (None under two of them).

    Its text joins the first ``sentences`` held-out items of the language (in the set's order), each
    ended with a sentence mark; the voice is the first ``seen`` item's (else the first item's).  The
    reference duration and codes are the components' sums when every component has them.
    """
    held = [i for i in items if i.language == language and i.group in HELD_OUT and i.reference_audio is not None]
    parts = held[:sentences]
    if sentences <= 0 or len(parts) < 2:
        return None
    voice = next((i for i in held if i.group == "seen"), held[0])
    texts = tuple(end_sentence(i.text) for i in parts)
    durations = [i.reference_duration for i in parts if i.reference_duration is not None]
    codes = [i.reference_codes for i in parts if i.reference_codes is not None]
    return EvalItem(
        id=f"paragraph-{language}", group="paragraph", language=language, speaker=voice.speaker,
        text=" ".join(texts), prompt_id=voice.prompt_id, prompt_audio=voice.prompt_audio,
        reference_duration=sum(durations) if len(durations) == len(parts) else None,
        reference_codes=sum(codes) if len(codes) == len(parts) else None,
        sentences=texts)


def build_eval_set(train_rows: Sequence[Mapping[str, Any]], val_rows: Sequence[Mapping[str, Any]], *,
                   max_items: int, seed: int, sentences: Sequence[tuple[str, str]] = (),
                   paragraph_sentences: int = 0) -> EvalSet:
    """At most ``max_items`` per language and group, drawn round-robin across speakers, each item with
    a prompt from the same speaker; then one paragraph per language when ``paragraph_sentences`` > 0;
    then the user ``sentences``.

    Items come grouped by (language, group), sorted, and within a group in draw order (the first
    round first, so the leading items are the ones that move least as data grows).
    """
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
        prompt = min(same_lang, key=lambda o: (_rank(seed, r["id"], o["id"]), o["id"]))
        group = "seen" if seen else "unseen"
        candidates[(r["language"], group)].append(EvalItem(
            id=r["id"], group=group, language=r["language"], speaker=r["speaker"], text=r["text"],
            prompt_id=prompt["id"], prompt_audio=prompt["audio"], reference_audio=r["audio"],
            reference_duration=r.get("duration"), reference_codes=r.get("code_len")))
    items: list[EvalItem] = []
    for (_lang, _group), cands in sorted(candidates.items()):
        chosen = round_robin(cands, max_items=max_items, seed=seed)
        skipped["over_max_items"] += len(cands) - len(chosen)
        items += chosen
    if paragraph_sentences > 0:
        for lang in sorted({i.language for i in items}):
            if (paragraph := paragraph_item(items, lang, paragraph_sentences)) is not None:
                items.append(paragraph)
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


def emotion_probe_items(items: Sequence[EvalItem], per_language: int) -> list[tuple[int, EvalItem]]:
    """The emotion probe's items: the first ``per_language`` ``seen`` items of each language, in the set's order,
    each with its position in ``items`` (its seed offset, so the probe's neutral output is the main pass's)."""
    taken: Counter[str] = Counter()
    chosen = []
    for k, item in enumerate(items):
        if item.group == "seen" and taken[item.language] < per_language:
            taken[item.language] += 1
            chosen.append((k, item))
    return chosen
