"""Evaluate checkpoint folders on one evaluation set: speak every item, score it, summarise per language.

For each model (``base``, ``fine-tuned``, ``champion``... in the order given) every item of the
set is synthesized with its prompt and the same seed (item ``k`` uses ``seed + k`` for both the GPT's
sampling and the decoder's noise), so differences come from the weights.  Each output is scored:

* ``cer`` / ``wer``: the transcript of the output (the ASR backend, language forced) against the
  item's text, after :func:`~indextts_core.evaluation.scoring.normalize_for_scoring` on both;
  WER only where the language separates words with spaces;
* ``speaker_sim``: cosine of the CAMPPlus embeddings of the prompt and the output (both read at
  16 kHz the same way; 0 for an output under 0.2 s);
* ``duration_ratio``: output seconds / the reference recording's seconds (items with one);
* ``stop_failure``: 1 when a segment did not stop before its code limit (``max_duration_ratio``
  times the reference's codes, or the model's limit);
* ``chars_per_s``: the speaking rate (:func:`~indextts_core.evaluation.prosody.speaking_rate`: characters of the
  normalised text per second of the output with its leading and trailing silence trimmed), speech only;
  ``summary["pace"]`` gives each model's mean per language and its ``pace_drift`` against the real recordings of
  the same items (:func:`~indextts_core.evaluation.prosody.pace_summary`);
* ``speech_failure``: 1 when the output is not speech (:mod:`~indextts_core.evaluation.speech`:
  silent, or it never stopped); such an item keeps ``not_speech`` (why) and gets no CER, WER or
  speaker similarity: a judge's reading of silence or babble says nothing about the model.

The real recordings are scored the same way (``reference``: the ASR's own error on real speech,
and the speaker similarity two real clips of a speaker reach), the floor and ceiling to read the
models against.  The judge is judged first (:func:`judge_of`): a language whose real recordings it
reads with a CER above ``evaluate.max_judge_cer`` has its CER/WER marked unreliable (and promotion
does not decide on them); every model's CER is also given as ``cer_excess``, its excess over the real
recording's CER on the same items.  With a second judge (``evaluate.asr_secondary``), the items the first
read above 50% CER are re-read (:func:`second_opinion`: ``transcript_secondary``, ``cer_secondary``,
``wer_secondary``; ``summary["judge_secondary"]``), and ``summary["judges"]`` records each judge's name,
revision and licence (:mod:`~indextts_core.evaluation.judges`).  Results: ``items.jsonl`` (one row per model
and item), ``evaluation.json`` (means
with bootstrap intervals per language and group, paired differences between models, headline
numbers), and the audio under ``audio/``.

With ``evaluate.emotion_prompt`` set, the emotion probe (:mod:`~indextts_core.evaluation.emotion`): each model says
the first ``evaluate.emotion_items`` seen items per language again with the emotion prompt; its neutral side is the
main pass's output (the same seed).  Results: ``emotion_probe.jsonl`` (one row per model and item, both wavs under
``audio/emotion/<model>/``) and ``summary["emotion"]`` (per model and language the mean transfer figures, and each
model's ``transfer_kept`` against the base model's); its time per model is ``models[<name>].emotion_probe_seconds``
(not part of the model's ``seconds``).

(Some 540 lines: the per-item loop and the per-language summaries read the same items and options; each
score is computed in its own module: scoring, speech, prosody, emotion, speaker, robust, stats.)
"""

from __future__ import annotations

import logging
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from indextts_core.config import EvaluateConfig, GenerationConfig
from indextts_core.data.audio import load_audio, resample
from indextts_core.data.prompt_audio import read_emotion_prompt
from indextts_core.errors import InputError
from indextts_core.evaluation.asr import Transcriber
from indextts_core.evaluation.emotion import probe_model, summarise_probe
from indextts_core.evaluation.evalset import EvalItem, EvalSet, emotion_probe_items
from indextts_core.evaluation.naturalness import DNSMOS_NOTE, DNSMOS_SOURCE, NATURALNESS_METRICS, Naturalness
from indextts_core.evaluation.prosody import pace_summary, prosody, speaking_rate
from indextts_core.evaluation.robust import robust_table
from indextts_core.evaluation.scoring import char_error_rate, cosine, has_words, last_sentence_cer, word_error_rate
from indextts_core.evaluation.speaker import OWN_ENCODER_LABEL, XVectorEmbedder, speaker_scale
from indextts_core.evaluation.speech import not_speech
from indextts_core.evaluation.stats import bootstrap_mean, paired_difference
from indextts_core.model.bundle import ModelBundle
from indextts_core.model.campplus import CAMPPlus, style_features
from indextts_core.synthesis.chain import SAMPLE_RATE, write_wav
from indextts_core.utils.fileio import sha256_file, write_json, write_jsonl
from indextts_core.utils.progress import track

log = logging.getLogger(__name__)

#: Metrics, and whether lower is better.
METRICS: dict[str, bool] = {"cer": True, "cer_excess": True, "wer": True, "last_sentence_cer": True,
                            "speaker_sim": False, "speaker_sim_verifier": False,
                            **{m: False for m in NATURALNESS_METRICS},
                            "duration_ratio": False, "stop_failure": True, "speech_failure": True}
#: The metrics the ASR judge gives (untrusted for a language whose real recordings it reads badly).
ASR_METRICS = ("cer", "cer_excess", "wer", "last_sentence_cer")
#: Computed by :func:`summarise` from the rows: a model's CER minus the real recording's CER on the same item.
DERIVED = frozenset({"cer_excess"})
REFERENCE = "reference"
#: The pseudo-language of the figures over the languages whose judge is trusted (``summary["judge"]["trusted"]``).
TRUSTED = "trusted"
#: The ``kind`` of the tiny random models of the tests and the demo (their output is not speech).
TINY_RANDOM = "tiny-random"
#: Every random kind: those and ``random://``'s folder at the released shapes (``indextts_core.tiny.full``).
RANDOM_KINDS = (TINY_RANDOM, "full-random")
#: What an evaluation of those says about itself, in the report and on the console.
TINY_RANDOM_NOTE = ("These are random models (the demo's tiny ones, or random:// at the released shapes): their "
                    "output is not speech, so this evaluation shows "
                    "that every step runs, not how well a model speaks; outputs that are not speech are counted, "
                    "never scored.")
ASR_SR = 16000
#: Outputs shorter than this get speaker similarity 0 (too few frames for a speaker vector).
MIN_EMBED_S = 0.2
#: The ``evaluate`` settings recorded in ``evaluation.json`` (those that change the numbers).
SUMMARY_OPTIONS = {"diffusion_steps", "cfg_rate", "max_duration_ratio", "resamples", "confidence"}


@dataclass(frozen=True)
class EvalResult:
    output_dir: Path
    summary: dict[str, Any]
    items: int
    seconds: float


class SpeakerEmbedder:
    """CAMPPlus speaker vectors of 16 kHz audio (Kaldi fbank, mean-normalised, as for the style vector)."""

    def __init__(self, model: CAMPPlus):
        self.model = model.eval()
        self.device = next(model.parameters()).device

    @torch.no_grad()
    def __call__(self, wave_16k: np.ndarray | torch.Tensor) -> torch.Tensor:
        x = torch.as_tensor(wave_16k, dtype=torch.float32).reshape(1, -1).to(self.device)
        return self.model(style_features(x).unsqueeze(0))[0].cpu()

    def similarity(self, wave_16k: np.ndarray, prompt: torch.Tensor) -> float:
        """Cosine with the prompt's vector; 0 for an output too short (or too silent) to embed, so a model
        that says nothing scores low instead of dropping out of the mean."""
        if len(wave_16k) < MIN_EMBED_S * ASR_SR:
            return 0.0
        vec = self(wave_16k)
        return cosine(vec, prompt) if bool(torch.isfinite(vec).all()) else 0.0


def _wave_16k(pcm: torch.Tensor) -> np.ndarray:
    """Synthesized (1, N) int16-scale samples at 22.05 kHz -> float 16 kHz."""
    return resample(pcm.float().reshape(-1) / 32767.0, SAMPLE_RATE, ASR_SR)


def _transcribe(asr: Transcriber | None, waves: Mapping[str, np.ndarray],
                language_of: Mapping[str, str]) -> dict[str, str]:
    """Transcripts by key, one batch per language; empty where the ASR does not know the language."""
    if asr is None:
        return {}
    by_lang: dict[str, list[str]] = defaultdict(list)
    for key in waves:
        by_lang[language_of[key]].append(key)
    out: dict[str, str] = {}
    for lang, keys in sorted(by_lang.items()):
        if not asr.supports(lang):
            log.warning("%s does not know language %r: no CER/WER for its %d item(s)", asr.name, lang, len(keys))
            continue
        for key, text in zip(keys, asr.transcribe([waves[k] for k in keys], lang)):
            out[key] = text
    return out


#: Items whose CER under the first judge is above this get a second opinion (``evaluate.asr_secondary``).
SECOND_OPINION_CER = 0.5


def second_opinion(rows: Sequence[dict[str, Any]], waves: Mapping[str, np.ndarray], asr: Transcriber | None,
                   above: float = SECOND_OPINION_CER) -> int:
    """Re-transcribe with the second judge the rows whose first-judge CER is above ``above`` (their wave, by item
    id, in ``waves``): each gets ``transcript_secondary``, ``cer_secondary`` and ``wer_secondary`` (in place).
    Rows of a language the second judge does not know keep none.  Returns how many rows got a second opinion."""
    if asr is None:
        return 0
    doubtful = [r for r in rows if r.get("cer") is not None and float(r["cer"]) > above and r["id"] in waves]
    texts = _transcribe(asr, {r["id"]: waves[r["id"]] for r in doubtful}, {r["id"]: r["language"] for r in doubtful})
    n = 0
    for r in doubtful:
        if r["id"] in texts:
            scores = _scores(r["text"], r["language"], texts[r["id"]])
            r |= {"transcript_secondary": texts[r["id"]], "cer_secondary": scores["cer"],
                  "wer_secondary": scores["wer"]}
            n += 1
    return n


def secondary_summary(rows: Sequence[Mapping[str, Any]], info: Mapping[str, Any],
                      above: float = SECOND_OPINION_CER) -> dict[str, Any]:
    """``summary["judge_secondary"]``: the second judge (``info``: name, revision, licence), the items it
    re-read, and both judges' mean CER on them, over all rows and per model (the reference included)."""
    seconded = [r for r in rows if r.get("cer_secondary") is not None]

    def means(rs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        return {"items": len(rs), "mean_cer_first": float(np.mean([r["cer"] for r in rs])) if rs else None,
                "mean_cer_second": float(np.mean([r["cer_secondary"] for r in rs])) if rs else None}

    by_model: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for r in seconded:
        by_model[r["model"]].append(r)
    return {**{k: info.get(k) for k in ("name", "revision", "licence")}, "above_cer": above, **means(seconded),
            "by_model": {m: means(rs) for m, rs in by_model.items()}}


def _scores(text: str, language: str, transcript: str | None) -> dict[str, float | None]:
    if transcript is None:
        return {"cer": None, "wer": None}
    return {"cer": char_error_rate(text, transcript),
            "wer": word_error_rate(text, transcript) if has_words(language) else None}


def evaluate_models(
    models: Mapping[str, ModelBundle],
    evalset: EvalSet,
    out_dir: Path,
    opts: GenerationConfig,
    *,
    asr: Transcriber | None,
    embedder: SpeakerEmbedder,
    secondary: Transcriber | None = None,
    judges: Sequence[Mapping[str, Any]] | None = None,
    verifier: XVectorEmbedder | None = None,
    naturalness: Naturalness | None = None,
    read_audio: Callable[[str], bytes],
    options: EvaluateConfig | None = None,
    device: str | torch.device = "cpu",
) -> EvalResult:
    """Speak and score every item with every model; write the results to ``out_dir``.

    ``options``: the ``evaluate`` section (decoder steps, guidance, duration limit, intervals); item ``k``
    is spoken with seed ``opts.seed + k`` (the generation section's seed).  ``secondary``: the second judge
    (:func:`second_opinion` on the items above 50% CER); ``judges``: their provenance (name, revision, licence;
    ``role`` first / secondary), recorded as ``summary["judges"]``.  ``verifier``: an independent speaker
    verification model (``speaker_sim_verifier`` next to the own encoder's ``speaker_sim``); ``naturalness``:
    DNSMOS per item (``dnsmos_*``).  Both encoders' same-speaker ceiling and different-speaker floor on the real
    recordings go into ``summary["speaker_scale"]``."""
    options = options or EvaluateConfig()
    from indextts_core.synthesis.run import Synthesizer

    start = time.monotonic()
    items = evalset.items
    if not items:
        raise ValueError("the evaluation set is empty")
    audio = out_dir / "audio"
    clips: dict[str, bytes] = {}

    def clip(uri: str) -> bytes:
        if uri not in clips:
            clips[uri] = read_audio(uri)
        return clips[uri]

    # the real recordings: prompts and references, copied next to the report, and scored as a model would be
    rows: list[dict[str, Any]] = []
    prompt_vec: dict[str, torch.Tensor] = {}
    prompt_vec_verifier: dict[str, torch.Tensor] = {}
    ref_waves: dict[str, np.ndarray] = {}
    real_clips: dict[str, tuple[str, str, str, np.ndarray]] = {}  # clip id -> (language, speaker, id, wave)

    def extra_scores(wave: np.ndarray, item: EvalItem) -> dict[str, float]:
        """The independent verifier's similarity to the prompt and DNSMOS, for a clip that is speech."""
        out: dict[str, float] = {}
        if verifier is not None:
            out["speaker_sim_verifier"] = verifier.similarity(wave, prompt_vec_verifier[item.prompt_audio])
        if naturalness is not None:
            out |= naturalness.score(wave)
        out["chars_per_s"] = speaking_rate(item.text, wave)
        return out

    def limit_of(item: EvalItem) -> int | None:
        """The item's code limit: ``max_duration_ratio`` times its reference's codes (None: the model's own)."""
        return max(1, int(item.reference_codes * options.max_duration_ratio)) if item.reference_codes else None

    for item in items:
        for kind, uri in (("prompt", item.prompt_audio), ("reference", item.reference_audio)):
            if uri is None:
                continue
            dest = audio / kind / f"{item.prompt_id if kind == 'prompt' else item.id}{Path(uri).suffix or '.wav'}"
            if not dest.is_file():
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.write_bytes(clip(uri))
        if item.prompt_audio not in prompt_vec:
            wave = load_audio(clip(item.prompt_audio), ASR_SR, name=item.prompt_audio).samples
            prompt_vec[item.prompt_audio] = embedder(wave)
            if verifier is not None:
                prompt_vec_verifier[item.prompt_audio] = verifier(wave)
            real_clips.setdefault(item.prompt_id, (item.language, item.speaker, item.prompt_id, wave))
        if item.reference_audio is not None:
            ref_waves[item.id] = load_audio(clip(item.reference_audio), ASR_SR, name=item.reference_audio).samples
            real_clips.setdefault(item.id, (item.language, item.speaker, item.id, ref_waves[item.id]))
    ref_failed = {key: why for key, wave in ref_waves.items() if (why := not_speech(wave)) is not None}
    ref_text = _transcribe(asr, {k: w for k, w in ref_waves.items() if k not in ref_failed},
                           {i.id: i.language for i in items})
    for item in items:
        if item.reference_audio is None:
            continue
        speech = item.id not in ref_failed
        rows.append({"model": REFERENCE, **_item_fields(item), "wav": f"audio/reference/{item.id}"
                     f"{Path(item.reference_audio).suffix or '.wav'}", "transcript": ref_text.get(item.id),
                     **_scores(item.text, item.language, ref_text.get(item.id) if asr and speech else None),
                     "speaker_sim": embedder.similarity(ref_waves[item.id], prompt_vec[item.prompt_audio])
                     if speech else None, "not_speech": ref_failed.get(item.id), "speech_failure": float(not speech),
                     "duration_ratio": 1.0, "stop_failure": 0.0, "audio_s": item.reference_duration, "seconds": 0.0,
                     **(extra_scores(ref_waves[item.id], item) if speech else {})})
    second_opinion(rows, {k: w for k, w in ref_waves.items() if k not in ref_failed}, secondary)

    chosen, probe = emotion_probe(options, items, audio, clip)
    probe_ids = {item.id for _, item in chosen}
    probe_rows: list[dict[str, Any]] = []
    model_info: dict[str, Any] = {}
    for name, bundle in models.items():
        t0 = time.monotonic()
        synth = Synthesizer(bundle, opts, device=device, diffusion_steps=options.diffusion_steps,
                            cfg_rate=options.cfg_rate)
        model_info[name] = {"folder": str(bundle.checkpoint_dir), "gpt_sha256": sha256_file(bundle.gpt_path),
                            "tokenizer_sha256": sha256_file(bundle.tokenizer_path)}
        states: dict[str, Any] = {}
        waves: dict[str, np.ndarray] = {}
        neutral: dict[str, Any] = {}
        made: list[dict[str, Any]] = []
        for k, item in enumerate(track(items, description=f"evaluating {name}")):
            if item.prompt_audio not in states:
                states[item.prompt_audio] = synth.prompt(clip(item.prompt_audio), name=item.prompt_audio)
            limit = limit_of(item)
            t = time.monotonic()
            random = torch.Generator(device=synth.device).manual_seed(opts.seed + k)
            spoken = synth.speak(item.text, item.language, states[item.prompt_audio], random,
                                 max_mel_tokens=limit, where=f"evaluation item {item.id}")
            wav = write_wav(spoken.pcm, audio / name / f"{item.id}.wav")
            wave = _wave_16k(spoken.pcm)
            why = not_speech(wave, spoken.stopped)
            if why is None:
                waves[item.id] = wave
            if item.id in probe_ids:  # the probe's neutral output: this one, said with the same seed
                neutral[item.id] = spoken
            made.append({"model": name, **_item_fields(item), "wav": wav.relative_to(out_dir).as_posix(),
                         "speaker_sim": embedder.similarity(wave, prompt_vec[item.prompt_audio]) if why is None
                         else None, **(extra_scores(wave, item) if why is None else {}),
                         "not_speech": why, "speech_failure": float(why is not None),
                         "duration_ratio": (spoken.seconds / item.reference_duration
                                            if item.reference_duration else None),
                         "stop_failure": 0.0 if spoken.stopped else 1.0, "codes": spoken.codes,
                         "audio_s": round(spoken.seconds, 3), "seconds": round(time.monotonic() - t, 3)})
        probe_s = 0.0
        if probe is not None:
            t = time.monotonic()
            probe_rows += probe_model(synth, name, chosen, neutral, states, *probe, out_dir, opts.seed,
                                      limit_of=limit_of, wave_16k=_wave_16k)
            probe_s = time.monotonic() - t
            model_info[name]["emotion_probe_seconds"] = round(probe_s, 2)
        del synth
        texts = _transcribe(asr, waves, {i.id: i.language for i in items})  # speech only
        for row, item in zip(made, items):
            row["transcript"] = texts.get(row["id"])
            row |= _scores(row["text"], row["language"], texts.get(row["id"]) if asr else None)
            if item.sentences and row["cer"] is not None:  # the paragraph probe: is its last sentence spoken?
                row["last_sentence_cer"] = last_sentence_cer(item.sentences, row["transcript"] or "")
        second_opinion(made, waves, secondary)
        rows += made
        failed = Counter(row["not_speech"] for row in made if row["not_speech"])
        model_info[name] |= {"seconds": round(time.monotonic() - t0 - probe_s, 2), "not_speech": dict(failed)}
        log.info("evaluated %s: %d items in %.1f s%s", name, len(made), model_info[name]["seconds"],
                 f"; not speech (not scored): {_counts(failed, len(made))}" if failed else "")

    out_dir.mkdir(parents=True, exist_ok=True)
    write_jsonl(out_dir / "items.jsonl", rows)
    summary = summarise(rows, list(models), options, opts.seed, asr=asr.name if asr else None)
    summary["robust"] = robust_table(rows, [REFERENCE, *models])
    prompt_ids = {i.prompt_audio: i.prompt_id for i in items}  # the prompts' vectors are known: not computed again
    known = {"own": {prompt_ids[a]: v for a, v in prompt_vec.items()},
             "verifier": {prompt_ids[a]: v for a, v in prompt_vec_verifier.items()}}
    summary["speaker_scale"] = scale_summary(rows, list(real_clips.values()), embedder, verifier, opts.seed, known)
    summary["naturalness"] = {"source": DNSMOS_SOURCE, "note": DNSMOS_NOTE} if naturalness is not None else None
    summary["pace"] = pace_summary(rows, list(models), REFERENCE)
    summary["emotion"] = None
    if probe is not None:
        write_jsonl(out_dir / "emotion_probe.jsonl", probe_rows)
        summary["emotion"] = {"prompt": probe[1], "prompt_wav": probe_wav(audio, probe[1]).relative_to(out_dir)
                              .as_posix(), "prompt_prosody": probe[2].as_dict(),
                              "items_per_language": options.emotion_items, "items": [i.id for _, i in chosen],
                              "seconds": {m: info.get("emotion_probe_seconds") for m, info in model_info.items()},
                              **summarise_probe(probe_rows, list(models))}
    judges = [dict(j) for j in judges or ()]
    if secondary is not None:
        info = next((j for j in judges if j.get("role") == "secondary"), {"name": secondary.name})
        summary["judge_secondary"] = secondary_summary(rows, info)
    summary |= {"format": "indextts-evaluate/1", "models": model_info, "asr": asr.name if asr else None,
                "judges": judges,
                "tiny_random": any(b.kind in RANDOM_KINDS for b in models.values()),
                "not_speech": {name: info["not_speech"] for name, info in model_info.items()}
                | ({REFERENCE: dict(Counter(ref_failed.values()))} if ref_failed else {}),
                "evalset": {"items": len(items), "by_language_group": evalset.counts(), "skipped": evalset.skipped,
                            "speakers": evalset.speakers(), "digest": evalset.digest(), "ids": evalset.ids()},
                "options": {"seed": opts.seed, **options.model_dump(mode="json", include=SUMMARY_OPTIONS),
                            "generation": opts.model_dump(mode="json")},
                "seconds": round(time.monotonic() - start, 2),
                "audio_s": round(sum(r["audio_s"] or 0 for r in rows if r["model"] != REFERENCE), 2)}
    write_json(out_dir / "evaluation.json", summary)
    return EvalResult(out_dir, summary, len(items), summary["seconds"])


def probe_wav(audio: Path, prompt_name: str) -> Path:
    """Where the emotion prompt is copied next to the report (``audio/emotion/prompt<suffix>``)."""
    return audio / "emotion" / f"prompt{Path(prompt_name).suffix or '.wav'}"


def emotion_probe(options: EvaluateConfig, items: Sequence[EvalItem], audio: Path, clip: Callable[[str], bytes]
                  ) -> tuple[list[tuple[int, EvalItem]], tuple[bytes, str, Any] | None]:
    """The emotion probe's items and prompt ``(bytes, file name, its prosody)``, the prompt copied under
    ``audio/emotion/``; ``([], None)`` without ``evaluate.emotion_prompt``, with ``emotion_items`` 0, or without a
    ``seen`` item to say.  The prompt's prosody is measured on what the model reads (16 kHz, at most 15 s)."""
    path = options.emotion_prompt
    if path is None or options.emotion_items <= 0:
        return [], None
    chosen = emotion_probe_items(items, options.emotion_items)
    if not chosen:
        log.warning("emotion probe skipped: the evaluation set has no seen item to say")
        return [], None
    if not Path(path).is_file():
        raise InputError(f"evaluate.emotion_prompt: {path} not found")
    data = Path(path).read_bytes()
    dest = probe_wav(audio, Path(path).name)
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(data)
    wave = read_emotion_prompt(data, str(path))[0].numpy()
    log.info("emotion probe: %d item(s) said with and without %s", len(chosen), Path(path).name)
    return chosen, (data, Path(path).name, prosody(wave))


def scale_summary(rows: Sequence[Mapping[str, Any]], clips: Sequence[tuple[str, str, str, np.ndarray]],
                  embedder: SpeakerEmbedder, verifier: XVectorEmbedder | None, seed: int = 0,
                  known: Mapping[str, Mapping[str, torch.Tensor]] | None = None) -> dict[str, Any]:
    """Per encoder (``own``: the checkpoint's CAMPPlus; ``verifier``: the independent one, when given) and language:
    the same-speaker ceiling and different-speaker floor on the real recordings (prompts and references,
    :func:`~indextts_core.evaluation.speaker.speaker_scale`), each model's mean similarity, and where that mean sits
    on the scale (``scaled``: 0 at the floor, 1 at the ceiling; None without both).  ``known``: per encoder key, the
    vectors of clips already embedded (the prompts), by clip id."""
    out: dict[str, Any] = {}
    encoders = [("own", "speaker_sim", embedder, OWN_ENCODER_LABEL, "CAMPPlus")]
    if verifier is not None:
        encoders.append(("verifier", "speaker_sim_verifier", verifier, verifier.label, verifier.name))
    for key, metric, encoder, label, name in encoders:
        scale = speaker_scale(clips, encoder, seed=seed, known=(known or {}).get(key))
        sims: dict[tuple[str, str], list[float]] = defaultdict(list)
        for r in rows:
            if r.get(metric) is not None:
                sims[(r["language"], r["model"])].append(float(r[metric]))
        for lang, entry in scale.items():
            ceiling, floor = entry["ceiling"]["mean"], entry["floor"]["mean"]
            entry["models"] = {}
            for (language, model), values in sorted(sims.items()):
                if language != lang:
                    continue
                mean = float(np.mean(values))
                scaled = ((mean - floor) / (ceiling - floor) if ceiling is not None and floor is not None
                          and ceiling > floor else None)
                entry["models"][model] = {"mean": mean, "n": len(values), "scaled": scaled}
        out[key] = {"label": label, "name": name, "metric": metric, "by_language": scale}
    return out


def _counts(failed: Mapping[str, int], total: int) -> str:
    return ", ".join(f"{n} of {total} {why}" for why, n in sorted(failed.items()))


def _item_fields(item: Any) -> dict[str, Any]:
    return {"id": item.id, "group": item.group, "language": item.language, "speaker": item.speaker,
            "text": item.text, "prompt_id": item.prompt_id}


def judge_of(rows: Sequence[Mapping[str, Any]], max_cer: float, name: str | None) -> dict[str, Any] | None:
    """The judge judged first: its mean CER on the real recordings per language (the ``reference`` rows it
    scored), and the languages where that exceeds ``max_cer`` (its CER/WER there are not trusted).
    None when no real recording was scored (no ASR, or none of the set's languages)."""
    by_lang: dict[str, list[float]] = defaultdict(list)
    for r in rows:
        if r["model"] == REFERENCE and r.get("cer") is not None:
            by_lang[r["language"]].append(float(r["cer"]))
    if not by_lang:
        return None
    reference_cer = {lang: float(np.mean(v)) for lang, v in sorted(by_lang.items())}
    return {"name": name, "reference_cer": reference_cer, "max_judge_cer": max_cer,
            "unreliable": [lang for lang, x in reference_cer.items() if x > max_cer]}


def _with_excess(rows: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The rows with ``cer_excess``: each model's CER minus the real recording's CER on the same item."""
    ref = {r["id"]: r["cer"] for r in rows if r["model"] == REFERENCE and r.get("cer") is not None}
    return [r if r["model"] == REFERENCE or r.get("cer") is None or r["id"] not in ref
            else {**r, "cer_excess": float(r["cer"]) - float(ref[r["id"]])} for r in rows]


def summarise(rows: Sequence[Mapping[str, Any]], models: Sequence[str], options: EvaluateConfig,
              seed: int = 0, *, asr: str | None = None) -> dict[str, Any]:
    """Means with intervals per (language, group, model, metric) and overall; paired differences vs the first model.

    ``headline[model][metric]`` is the mean over every item; ``differences`` compare each later model with
    every earlier one on the items both have a value for (the same items, resampled together).
    ``cer_excess`` is a model's CER minus the real recording's on the same item.  ``judge``
    (:func:`judge_of`, with ``asr`` its name): the judge's CER on the real recordings per language and the
    languages it is unreliable for; when some (not all) are, ``judge["trusted"]`` holds the ASR figures over
    the trusted languages only (``languages``, ``headline``, ``differences``), what promotion may decide on.
    """
    rows = _with_excess(rows)
    judge = judge_of(rows, options.max_judge_cer, asr)
    unreliable = set(judge["unreliable"]) if judge else set()
    trusted = sorted(set(judge["reference_cer"]) - unreliable) if judge and unreliable else []
    names = [REFERENCE, *models]
    values: dict[tuple[str, str, str, str], dict[str, float]] = defaultdict(dict)
    for r in rows:
        for metric in METRICS:
            v = r.get(metric)
            if v is None:
                continue
            keys = [(r["language"], r["group"]), ("all", "all")]
            if metric in ASR_METRICS and r["language"] in trusted:
                keys.append((TRUSTED, "all"))
            for lang, group in keys:
                values[(lang, group, r["model"], metric)][r["id"]] = float(v)
    table, headline, trusted_headline = [], {m: {} for m in names}, {m: {} for m in names}
    for (lang, group, model, metric), by_id in sorted(values.items()):
        est = bootstrap_mean(list(by_id.values()), options.resamples, options.confidence, seed)
        if lang == TRUSTED:
            trusted_headline[model][metric] = est.mean
            continue
        table.append({"language": lang, "group": group, "model": model, "metric": metric, **est.as_dict()})
        if lang == "all":
            headline[model][metric] = est.mean
    diffs = []
    for i, a in enumerate(models):
        for b in models[:i]:
            for (lang, group, model, metric), by_id in sorted(values.items()):
                if model != a or metric in DERIVED or (lang, group, b, metric) not in values:
                    continue
                other = values[(lang, group, b, metric)]
                common = sorted(set(by_id) & set(other))
                if not common:
                    continue
                est = paired_difference([by_id[k] for k in common], [other[k] for k in common], options.resamples,
                                        options.confidence, seed)
                diffs.append({"language": lang, "group": group, "model": a, "versus": b, "metric": metric,
                              **est.as_dict()})
    if judge and trusted:
        judge["trusted"] = {"languages": trusted, "headline": {k: v for k, v in trusted_headline.items() if v},
                            "differences": [d for d in diffs if d["language"] == TRUSTED]}
    return {"table": table, "differences": [d for d in diffs if d["language"] != TRUSTED],
            "headline": {k: v for k, v in headline.items() if v}, "lower_is_better": METRICS, "judge": judge}
