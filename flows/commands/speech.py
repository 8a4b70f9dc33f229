"""The speech commands: ``generate`` (codes and latents), ``synthesize`` (wav files), ``normalize`` (text as
the tokenizer sees it).

They run in this process on a checkpoint folder, not as stages.  Decoding settings are flags made
from the ``generation:`` section and ``--language`` from the run's ``language`` (:mod:`flows.flags`).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from flows.cli_support import (
    ConfigOpt,
    HfCacheOpt,
    LangCodeOpt,
    ModelOpt,
    PromptOpt,
    SetOpt,
    TextOpt,
    checked_language,
    fail,
    load_run_config,
    open_model,
    read_lines,
)
from flows.flags import config_flags
from flows.printing import print_outputs
from indextts_core.errors import InputError


@config_flags("generation", "language")
def generate(
    model: ModelOpt,
    speaker_prompt: PromptOpt,
    text: TextOpt = None,
    lines: Annotated[Path | None, typer.Option(help="A UTF-8 file with one line to say per line.", exists=True,
                                               dir_okay=False)] = None,
    lang_code: LangCodeOpt = None,
    emotion_prompt: Annotated[Path | None, typer.Option(help="Audio whose emotion to use (default: the speaker "
                                                              "prompt's).", exists=True, dir_okay=False)] = None,
    output_dir: Annotated[Path, typer.Option(help="Where codes.jsonl, latents.safetensors and generate.json go.")]
    = Path("generated"),
    w2v_bert: Annotated[Path | None, typer.Option(help="Wav2Vec2-BERT 2.0 folder for the prompts (default: "
                                                       "in --hf-cache).", file_okay=False)] = None,
    hf_cache: HfCacheOpt = None,
    device: Annotated[str, typer.Option(help="cpu, cuda or auto.")] = "auto",
    config: ConfigOpt = None,
    overrides: SetOpt = None,
    flags: dict | None = None,
) -> None:
    """Say lines of text with a fine-tuned (or the official) GPT: semantic codes and the s2mel latent per line.

    Decoding follows infer_v2 (its defaults; change them with --set generation.<option>=...), text goes
    through the training front-end and the folder's tokenizer.
    """
    import torch

    from indextts_core.generation.run import generate_lines

    try:
        cfg = load_run_config(config, overrides, flags)
        if not text and lines is None:
            raise InputError("nothing to say: give --text or --lines")
        said = list(text or [])
        where = "--text"
        if lines is not None:
            said += read_lines(lines)
            where = str(lines) if not text else "--text/--lines"
        language = cfg.language
        bundle = open_model(model, hf_cache, cfg, w2v_bert)
        dev = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
        result = generate_lines(bundle, said, language, speaker_prompt, output_dir, cfg.generation,
                                emotion_prompt=emotion_prompt, device=dev, where=where, lang_code=lang_code)
    except (InputError, ValueError) as e:
        raise fail(e) from None
    print_outputs("Generated", {
        "lines": f"{result.lines} ({result.stopped} stopped before generation.max_mel_tokens)",
        "codes": f"{result.codes} in {result.seconds:.1f} s",
        "codes.jsonl": str(output_dir / "codes.jsonl"), "latents": str(output_dir / "latents.safetensors"),
    })


@config_flags("generation", "language")
def synthesize(
    model: ModelOpt,
    speaker_prompt: PromptOpt,
    text: TextOpt = None,
    lines: Annotated[Path | None, typer.Option(help="A UTF-8 file with one line to say per line (one wav each).",
                                               exists=True, dir_okay=False)] = None,
    lang_code: LangCodeOpt = None,
    emotion_prompt: Annotated[Path | None, typer.Option(help="Audio whose emotion to use (default: the speaker "
                                                              "prompt's).", exists=True, dir_okay=False)] = None,
    out: Annotated[Path | None, typer.Option(help="The wav file, for a single --text (default: "
                                                  "<output-dir>/line1.wav).", dir_okay=False)] = None,
    output_dir: Annotated[Path, typer.Option(help="Where line<N>.wav and synthesize.json go.")] = Path("synthesized"),
    diffusion_steps: Annotated[int, typer.Option(help="Flow-matching steps (infer_v2: 25).")] = 25,
    cfg_rate: Annotated[float, typer.Option(help="Classifier-free guidance rate (infer_v2: 0.7).")] = 0.7,
    interval_silence: Annotated[int, typer.Option(help="Silence between segments, ms (infer_v2: 200).")] = 200,
    hf_cache: HfCacheOpt = None,
    device: Annotated[str, typer.Option(help="cpu, cuda or auto.")] = "auto",
    config: ConfigOpt = None,
    overrides: SetOpt = None,
    flags: dict | None = None,
) -> None:
    """Speak lines of text as 22.05 kHz wav files: GPT codes, S2Mel and BigVGAN, as infer_v2 runs them.

    Decoding follows infer_v2 (change it with --set generation.<option>=...; generation.seed fixes the
    random stream); long lines are cut into infer_v2's segments and joined with silence.
    """
    import torch

    from indextts_core.synthesis.run import synthesize_lines

    try:
        cfg = load_run_config(config, overrides, flags)
        said = list(text or [])
        if lines is not None:
            said += read_lines(lines)
        if not said:
            raise InputError("nothing to say: give --text or --lines")
        if out is not None and len(said) != 1:
            raise InputError(f"--out names one file but there are {len(said)} lines: use --output-dir")
        outputs = [out] if out is not None else [output_dir / f"line{n}.wav" for n in range(1, len(said) + 1)]
        language = cfg.language
        bundle = open_model(model, hf_cache, cfg)
        dev = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
        result = synthesize_lines(bundle, said, language, speaker_prompt, outputs, cfg.generation,
                                  emotion_prompt=emotion_prompt, device=dev, diffusion_steps=diffusion_steps,
                                  cfg_rate=cfg_rate, interval_silence_ms=interval_silence, lang_code=lang_code,
                                  report=(out.parent if out is not None else output_dir) / "synthesize.json")
    except (InputError, ValueError) as e:
        raise fail(e) from None
    print_outputs("Synthesized", {
        "audio": f"{len(result.wavs)} file(s), {result.audio_seconds:.1f} s in {result.seconds:.1f} s",
        "wav": str(result.wavs[0]) if len(result.wavs) == 1 else str(output_dir),
    })


def normalize(
    text: Annotated[list[str] | None, typer.Argument(help="Text to prepare (default: lines from standard input).")]
    = None,
    language: Annotated[str, typer.Option(help="Language of the text (e.g. am, en, zh).")] = "am",
) -> None:
    """Print text as the tokenizer sees it (the platform's front-end), e.g. for the official inference code."""
    from indextts_core.text.frontend import TextFrontend

    try:
        language = checked_language(language)
    except InputError as e:
        raise fail(e) from None
    fe = TextFrontend()
    lines = [" ".join(text)] if text else [line.rstrip("\n") for line in sys.stdin]
    for line in lines:
        sys.stdout.write(fe(line, language) + "\n")
