"""A recording's plain transcript placed on its voice-activity segments.

A ``.txt`` paired with a recording holds its whole text, with no times.  The text is cut into
sentences (:func:`split_sentences`) and the sentences are put on the VAD segments in one of two ways:

* **by count** (:func:`place_by_count`): when there are exactly as many segments as sentences, the
  i-th segment gets the i-th sentence (a reading paced sentence by sentence, as the demo's are);
* **by CTC forced alignment** (:func:`ctc_emissions`, :func:`tokens_for`, :func:`align_characters`,
  :func:`place_by_alignment`): the evaluation's CTC judge gives per-frame log-probabilities over the
  whole recording, ``torchaudio.functional.forced_align`` places every character of the text on the
  frames, each sentence's time span is that of its first and last aligned characters, and a sentence
  goes to the segment that holds the middle of its span.  A sentence that runs more than
  :data:`STRADDLE_S` into a neighbouring segment joins the two (when the joined clip is no longer
  than ``max_s``; else both are rejected ``text_straddles_cut``).

:func:`place_transcript` chooses between them.  Rejection reasons it writes: ``no_text`` (a segment no
sentence landed on), ``text_straddles_cut``, ``no_aligner`` (no CTC model to align with: a Whisper judge
has no frame-level output to align), ``text_too_long`` (more characters than the recording has frames);
sentences that could not be placed are reported too, paired with a zero-length (or out-of-speech)
:class:`Segment` carrying their text: ``unaligned_text`` (none of their characters is in the CTC
vocabulary) and ``text_outside_speech`` (aligned where no segment is).

Limits: forced alignment holds a table of frames x tokens (about 2 bytes a cell; 2e8 cells took 4.6 s
and 0.4 GB on this 2-core CPU); above ``max_cells`` (4e8 by default: 10 minutes of speech at 50 frames
per second with ~13,000 characters) the recording is refused with advice to give subtitles or cut it
into chapters.  Characters missing from the CTC vocabulary
(digits, punctuation, another script) are skipped: the audio saying "1995" is then aligned to the
neighbouring words, and the round-trip CER gate downstream judges the clip.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from indextts_core.curate.sentences import split_sentences
from indextts_core.curate.types import Rejection, Segment
from indextts_core.errors import InputError

SAMPLE_RATE = 16000
#: How far (seconds) a sentence may run into a neighbouring segment before the two are joined.
STRADDLE_S = 0.3
#: Default limit on frames x tokens of one forced alignment (its memory grows with it).
MAX_CELLS = 4e8

# ----------------------------------------------------------------------------------------- by count


def place_by_count(segments: list[Segment], sentences: list[str]) -> list[Segment] | None:
    """The i-th sentence on the i-th segment (in time order) when the counts are equal; else None."""
    if not segments or len(segments) != len(sentences):
        return None
    ordered = sorted(segments, key=lambda s: (s.start_s, s.end_s))
    return [Segment(s.start_s, s.end_s, text, s.speech_s) for s, text in zip(ordered, sentences)]


# ----------------------------------------------------------------------------------------- CTC alignment


def _samples_per_frame(model) -> int:
    """Input samples per output frame of a wav2vec2-style model (the product of its conv strides)."""
    ratio = getattr(model.config, "inputs_to_logits_ratio", None)
    if ratio is None:
        strides = getattr(model.config, "conv_stride", None)
        if not strides:
            raise InputError(f"{type(model).__name__}: no conv_stride in its config; cannot place its frames in time")
        ratio = math.prod(int(s) for s in strides)
    return int(ratio)


def _frames_for(model, samples: int) -> int:
    """Frames the model gives for ``samples`` input samples."""
    lengths = getattr(model, "_get_feat_extract_output_lengths", None)
    if lengths is None:
        return samples // _samples_per_frame(model)
    return max(0, int(lengths(torch.tensor(samples))))


@torch.no_grad()
def ctc_emissions(transcriber, wave_16k: np.ndarray, language: str,
                  window_s: float = 30.0) -> tuple[torch.Tensor, float]:
    """Log-probabilities (frames x vocabulary, float32 on the CPU) of a whole recording, and seconds per frame.

    The recording is read in windows of ``window_s`` seconds, each with up to a second of context on both
    sides that is run through the model and then trimmed, so no frame is computed at a window's edge.
    Windows start on frame boundaries, so the frames join exactly as one pass over the recording would
    number them (a convolution stack shifted by whole strides shifts its output by whole frames).
    ``transcriber`` is a :class:`~indextts_core.evaluation.ctc.CTCTranscriber`; its adapter for
    ``language`` is loaded first.
    """
    if window_s <= 0:
        raise InputError(f"window_s: must be positive, got {window_s}")
    transcriber._select(language)
    model = transcriber.model
    wave = np.asarray(wave_16k, dtype=np.float32).reshape(-1)
    ratio = _samples_per_frame(model)
    total = _frames_for(model, len(wave))
    if total <= 0:
        raise InputError(f"the recording is too short for the CTC model ({len(wave)} samples)")
    core = max(1, int(round(window_s * SAMPLE_RATE / ratio)))
    context = min(SAMPLE_RATE, max(ratio, int(window_s * SAMPLE_RATE) // 4))  # samples each side
    context_frames = -(-context // ratio)
    pieces: list[torch.Tensor] = []
    at = 0
    while at < total:
        stop = min(total, at + core)
        first = max(0, at - context_frames)  # the frame the chunk starts at
        lo, hi = first * ratio, min(len(wave), stop * ratio + context)
        feats = transcriber.feature_extractor(wave[lo:hi], sampling_rate=SAMPLE_RATE, return_tensors="pt")
        logits = model(feats["input_values"].to(transcriber.device, model.dtype)).logits[0]
        piece = logits[at - first:stop - first].float().log_softmax(-1).cpu()
        if piece.shape[0] != stop - at:  # a model whose frames do not shift with its strides
            raise InputError(f"{getattr(transcriber, 'folder', 'the CTC model')}: frames {at}-{stop} came back "
                             f"as {piece.shape[0]}; its frames cannot be placed in time by windows")
        pieces.append(piece)
        at = stop
    return torch.cat(pieces), ratio / SAMPLE_RATE


def _vocabulary(transcriber) -> tuple[dict[str, int], str]:
    """The single-character tokens of the transcriber's (current language's) vocabulary and its case."""
    tok = transcriber.tokenizer
    specials = set(getattr(tok, "all_special_ids", ()) or ())
    blank = tok.pad_token_id
    vocab = {t: i for t, i in tok.get_vocab().items() if len(t) == 1 and i != blank and i not in specials}
    delimiter = getattr(tok, "_word_delimiter_token", None) or "|"
    if delimiter in tok.get_vocab():
        vocab[delimiter] = tok.get_vocab()[delimiter]
    cased = [t for t in vocab if t.lower() != t.upper()]
    case = ("lower" if cased and all(t.islower() for t in cased)
            else "upper" if cased and all(t.isupper() for t in cased) else "")
    return vocab, case


def tokens_for(transcriber, text: str) -> tuple[list[int], list[int]]:
    """Vocabulary ids of ``text``'s characters, and for each id the index in ``text`` of its character.

    Letters take the vocabulary's case when all its letters share one; a run of whitespace becomes one word
    delimiter (``|``) where the vocabulary has it, none where it does not (and none at either end); a
    character the vocabulary lacks is skipped (count them with ``len`` of the non-space characters minus
    the ids that are not delimiters, or with :func:`skipped_characters`).  Call it after the language is
    selected (:func:`ctc_emissions` selects it): an MMS model's vocabulary is the language's.
    """
    vocab, case = _vocabulary(transcriber)
    delimiter_id = vocab.get(getattr(transcriber.tokenizer, "_word_delimiter_token", None) or "|")
    ids: list[int] = []
    where: list[int] = []
    pending_space: int | None = None
    for k, ch in enumerate(text):
        if ch.isspace():
            if pending_space is None and ids:
                pending_space = k
            continue
        c = ch.lower() if case == "lower" else ch.upper() if case == "upper" else ch
        token = vocab.get(c)
        if token is None:
            continue
        if pending_space is not None and delimiter_id is not None and ids and ids[-1] != delimiter_id \
                and token != delimiter_id:
            ids.append(delimiter_id)
            where.append(pending_space)
        pending_space = None
        ids.append(token)
        where.append(k)
    return ids, where


def skipped_characters(transcriber, text: str) -> dict[str, int]:
    """The characters of ``text`` (not whitespace) that :func:`tokens_for` skips, with their counts."""
    vocab, case = _vocabulary(transcriber)
    skipped: dict[str, int] = {}
    for ch in text:
        c = ch.lower() if case == "lower" else ch.upper() if case == "upper" else ch
        if not ch.isspace() and c not in vocab:
            skipped[ch] = skipped.get(ch, 0) + 1
    return skipped


def frames_needed(token_ids: Sequence[int]) -> int:
    """The fewest frames a CTC path through these tokens takes (a blank between two equal neighbours)."""
    return len(token_ids) + sum(1 for a, b in zip(token_ids, token_ids[1:]) if a == b)


def align_characters(emissions: torch.Tensor, token_ids: Sequence[int], blank: int) -> list[tuple[int, int]]:
    """The (first, last) frame, both inclusive, of each token on the most likely CTC path through them.

    ``emissions``: log-probabilities, frames x vocabulary; ``token_ids`` must not hold ``blank``.  Uses
    ``torchaudio.functional.forced_align`` (Viterbi over the CTC graph of the tokens).
    """
    from torchaudio.functional import forced_align

    if not len(token_ids):
        return []
    if emissions.dim() != 2:
        raise InputError(f"emissions: expected frames x vocabulary, got shape {tuple(emissions.shape)}")
    frames = emissions.shape[0]
    if frames_needed(token_ids) > frames:
        raise InputError(f"{len(token_ids)} characters need at least {frames_needed(token_ids)} frames, "
                         f"the recording has {frames}: the text is longer than the audio can hold")
    if blank in token_ids:
        raise InputError(f"token_ids: holds the blank id {blank}")
    targets = torch.tensor([list(token_ids)], dtype=torch.int32)
    path, _ = forced_align(emissions.detach().float().cpu().unsqueeze(0), targets, blank=blank)
    spans: list[tuple[int, int]] = []
    previous = blank
    for t, label in enumerate(path[0].tolist()):
        if label != blank:
            if label != previous:  # a new token (equal neighbours always have a blank between them)
                spans.append((t, t))
            else:
                spans[-1] = (spans[-1][0], t)
        previous = label
    if len(spans) != len(token_ids):  # cannot happen for a valid CTC path; guard against a changed API
        raise RuntimeError(f"forced alignment gave {len(spans)} token spans for {len(token_ids)} tokens")
    return spans


def _overlap(a0: float, a1: float, b0: float, b1: float) -> float:
    return max(0.0, min(a1, b1) - max(a0, b0))


def place_by_alignment(segments: list[Segment], sentences: list[str], char_times: list[tuple[float, float] | None],
                       max_s: float = 15.0) -> tuple[list[Segment], list[tuple[Segment, Rejection]]]:
    """Sentences placed on segments by the times of their characters.

    ``char_times[k]``: the (start, end) seconds of the k-th character of ``" ".join(sentences)``, None
    where it was not aligned.  A sentence's span runs from its first aligned character's start to its
    last one's end; it goes to the segment holding the span's middle (else the one it overlaps most;
    with none, it is reported ``text_outside_speech``).  A sentence overlapping another segment by more
    than :data:`STRADDLE_S` joins the segments from its own to that one: joined, they are one segment
    when no longer than ``max_s``, else each is rejected ``text_straddles_cut``.  A segment's text is its
    sentences' joined by a space; one with none is rejected ``no_text``.  Sentences with no aligned
    character are reported ``unaligned_text`` (a zero-length segment where they would have been).

    Returns the placed segments in time order, and the rejections (segments, then sentence reports).
    """
    joined = " ".join(sentences)
    if len(char_times) != len(joined):
        raise InputError(f"char_times: {len(char_times)} entries for the {len(joined)} characters of the "
                         "sentences joined by spaces")
    ordered = sorted(segments, key=lambda s: (s.start_s, s.end_s))
    spans: list[tuple[float, float] | None] = []
    offset = 0
    for sentence in sentences:
        times = [t for t in char_times[offset:offset + len(sentence)] if t is not None]
        spans.append((min(t[0] for t in times), max(t[1] for t in times)) if times else None)
        offset += len(sentence) + 1

    reports: list[tuple[Segment, Rejection]] = []
    owner: list[int | None] = [None] * len(sentences)
    parent = list(range(len(ordered)))  # union-find over segment indices

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    last_end = 0.0
    for index, (sentence, span) in enumerate(zip(sentences, spans)):
        if span is None:
            nxt = next((s for s in spans[index + 1:] if s is not None), None)
            at = last_end if nxt is None else min(last_end, nxt[0])
            reports.append((Segment(at, at, sentence), Rejection(
                "unaligned_text", "none of the sentence's characters is in the CTC model's vocabulary",
                {"sentence": index})))
            continue
        start, end = span
        last_end = end
        middle = (start + end) / 2
        holder = next((i for i, s in enumerate(ordered) if s.start_s <= middle <= s.end_s), None)
        if holder is None:
            overlaps = [(_overlap(start, end, s.start_s, s.end_s), -i) for i, s in enumerate(ordered)]
            best = max(overlaps, default=(0.0, 0))
            holder = -best[1] if best[0] > 0 else None
        if holder is None:
            reports.append((Segment(start, end, sentence), Rejection(
                "text_outside_speech", f"the sentence aligns to {start:.2f}-{end:.2f} s, where no speech "
                "segment is", {"sentence": index, "start_s": round(start, 3), "end_s": round(end, 3)})))
            continue
        owner[index] = holder
        for j, s in enumerate(ordered):
            if j != holder and _overlap(start, end, s.start_s, s.end_s) > STRADDLE_S:
                for k in range(min(j, holder), max(j, holder)):
                    parent[root(k + 1)] = root(k)

    groups: dict[int, list[int]] = {}
    for i in range(len(ordered)):
        groups.setdefault(root(i), []).append(i)
    texts: dict[int, list[str]] = {}
    for index, holder in enumerate(owner):
        if holder is not None:
            texts.setdefault(holder, []).append(sentences[index])

    placed: list[Segment] = []
    rejected: list[tuple[Segment, Rejection]] = []
    for members in sorted(groups.values()):
        if len(members) == 1:
            seg = ordered[members[0]]
            if members[0] in texts:
                placed.append(Segment(seg.start_s, seg.end_s, " ".join(texts[members[0]]), seg.speech_s))
            else:
                rejected.append((seg, Rejection("no_text", "no sentence of the transcript aligns inside it",
                                                {"duration_s": round(seg.duration_s, 3)})))
            continue
        first, last = ordered[members[0]], ordered[members[-1]]
        speech = [ordered[i].speech_s for i in members]
        text = " ".join(t for i in members for t in texts.get(i, []))
        duration = last.end_s - first.start_s
        if duration <= max_s:
            placed.append(Segment(first.start_s, last.end_s, text,
                                  None if any(x is None for x in speech) else sum(speech)))
            continue
        for i in members:
            seg = ordered[i]
            rejected.append((Segment(seg.start_s, seg.end_s, " ".join(texts.get(i, [])) or None, seg.speech_s),
                             Rejection("text_straddles_cut", f"a sentence runs across the cut at "
                                       f"{ordered[members[0]].end_s:.2f}-{ordered[members[-1]].start_s:.2f} s "
                                       f"and the joined segments ({duration:.2f} s) exceed {max_s:g} s",
                                       {"joined_s": round(duration, 3), "max_s": max_s,
                                        "segments": len(members)})))
    return placed, rejected + reports


# ----------------------------------------------------------------------------------------- the choice


def place_transcript(segments: list[Segment], transcript: str, name: str, transcriber=None,
                     wave_16k: np.ndarray | None = None, language: str = "am", max_s: float = 15.0,
                     max_cells: float = MAX_CELLS, window_s: float = 30.0,
                     ) -> tuple[list[Segment], list[tuple[Segment, Rejection]], dict]:
    """A recording's transcript placed on its segments: by count when that matches, else by CTC alignment.

    ``name``: the recording (for messages); ``transcriber``: the CTC judge
    (:class:`~indextts_core.evaluation.ctc.CTCTranscriber`) and ``wave_16k`` the recording at 16 kHz mono,
    needed unless the counts match.  Returns the placed segments, the rejections (see the module) and a
    summary: ``method`` (``count``, ``alignment`` or ``none``), ``sentences``, ``placed_sentences``,
    ``skipped_characters`` (not in the CTC vocabulary) and ``skipped`` (those characters with counts).
    """
    from indextts_core.evaluation.ctc import CTCTranscriber

    sentences = split_sentences(transcript)
    info: dict = {"method": "none", "sentences": len(sentences), "placed_sentences": 0,
                  "skipped_characters": 0, "skipped": {}}

    def all_rejected(reason: str, detail: str, **numbers) -> tuple[list, list, dict]:
        return [], [(s, Rejection(reason, detail, dict(numbers))) for s in segments], info

    if not segments:
        return [], [], info
    if not sentences:
        return all_rejected("no_text", f"{name}: the transcript has no text")
    by_count = place_by_count(segments, sentences)
    if by_count is not None:
        info.update(method="count", placed_sentences=len(sentences))
        return by_count, [], info
    if not isinstance(transcriber, CTCTranscriber):
        what = "no ASR model" if transcriber is None else f"the ASR judge {getattr(transcriber, 'name', '?')}"
        return all_rejected("no_aligner", f"{name}: {len(sentences)} sentences for {len(segments)} segments, so the "
                            f"text must be aligned to the audio, and {what} cannot: a Whisper judge cannot align; "
                            "give a CTC model (wav2vec2/MMS) as curate.asr_model, or subtitles",
                            sentences=len(sentences), segments=len(segments))
    if wave_16k is None:
        raise InputError(f"{name}: aligning its transcript needs the recording's audio (wave_16k)")

    transcriber._select(language)
    joined = " ".join(sentences)
    token_ids, where = tokens_for(transcriber, joined)
    skipped = skipped_characters(transcriber, joined)
    info.update(method="alignment", skipped_characters=sum(skipped.values()), skipped=skipped)
    frames = _frames_for(transcriber.model, len(np.asarray(wave_16k).reshape(-1)))
    cells = float(frames) * max(1, len(token_ids))
    if cells > max_cells:
        raise InputError(f"{name}: too long to align its transcript in one piece ({frames} frames x "
                         f"{len(token_ids)} characters = {cells:.3g} cells, above the limit {max_cells:.3g}): give "
                         "subtitles (.srt/.vtt) for it or cut the recording and its text into chapters")
    if frames_needed(token_ids) > frames:
        return all_rejected("text_too_long", f"{name}: the transcript's {len(token_ids)} characters need at least "
                            f"{frames_needed(token_ids)} frames and the recording has {frames}: the text is not "
                            "this recording's", characters=len(token_ids), frames=frames)
    emissions, seconds = ctc_emissions(transcriber, wave_16k, language, window_s=window_s)
    spans = align_characters(emissions, token_ids, transcriber.tokenizer.pad_token_id)
    char_times: list[tuple[float, float] | None] = [None] * len(joined)
    for (first, last), k in zip(spans, where):
        char_times[k] = (first * seconds, (last + 1) * seconds)
    placed, rejected = place_by_alignment(segments, sentences, char_times, max_s=max_s)
    info["placed_sentences"] = len(sentences) - sum(
        1 for _, r in rejected if r.reason in ("unaligned_text", "text_outside_speech"))
    info["frames"], info["tokens"] = int(emissions.shape[0]), len(token_ids)
    return placed, rejected, info
