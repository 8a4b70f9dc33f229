"""A tiny random checkpoint folder in the official layout (either release), for tests and the laptop demo.

:func:`write_tiny_bundle` writes every file the official folder has (GPT, tokenizer, statistics,
Wav2Vec2-BERT and the codec in ``hf_cache/``, S2Mel, CAMPPlus, BigVGAN, the emotion banks and the
Qwen emotion folder) with tiny widths and random weights, and an ``indextts-bundle.json`` noting
the tiny Wav2Vec2-BERT's feature layer.  It opens through :func:`~indextts_core.model.bundle.open_bundle`
like a real folder.  Not a trained model: whatever it says is noise.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch
import yaml

from indextts_core.model.bundle import (
    BIGVGAN_DIR,
    BUNDLE_META,
    CAMPPLUS_FILE,
    CODEC_FILE,
    CODEC_V25_FILE,
    RESOURCES,
    W2V_DIR,
    ModelBundle,
    open_bundle,
)
from indextts_core.model.checkpoint import read_config
from indextts_core.model.codec import CodecConfig, SemanticCodec
from indextts_core.model.config import GPTConfig
from indextts_core.model.unified_voice import UnifiedVoice
from indextts_core.utils.fileio import atomic_write, write_json

TINY_GPT = {
    "model_dim": 64, "max_mel_tokens": 600, "max_text_tokens": 200, "heads": 4, "use_mel_codes_as_input": True,
    "mel_length_compression": 1024, "layers": 2, "number_text_tokens": 0, "number_mel_codes": 66,
    "start_mel_token": 64, "stop_mel_token": 65, "start_text_token": 0, "stop_text_token": 1,
    "train_solo_embeddings": False, "condition_type": "conformer_perceiver",
    "condition_module": {"output_size": 8, "linear_units": 32, "attention_heads": 2, "num_blocks": 2,
                         "input_layer": "conv2d2", "perceiver_mult": 2},
    "emo_condition_module": {"output_size": 8, "linear_units": 32, "attention_heads": 2, "num_blocks": 2,
                             "input_layer": "conv2d2", "perceiver_mult": 0.0625},
}
TINY_CODEC = {"codebook_size": 64, "hidden_size": 1024, "codebook_dim": 8, "vocos_dim": 16,
              "vocos_intermediate_dim": 32, "vocos_num_layers": 2}
#: The released ``s2mel:`` schema with tiny widths (the decoder needs an even head size, wavenet = DiT width).
TINY_S2MEL = {
    "preprocess_params": {"sr": 22050, "spect_params": {"n_fft": 1024, "win_length": 1024, "hop_length": 256,
                                                        "n_mels": 80, "fmin": 0, "fmax": "None"}},
    "dit_type": "DiT", "reg_loss_type": "l1", "style_encoder": {"dim": 192},
    "length_regulator": {"channels": 32, "is_discrete": False, "in_channels": 1024, "content_codebook_size": 16,
                         "sampling_ratios": [1, 1, 1, 1], "vector_quantize": False, "n_codebooks": 1,
                         "quantizer_dropout": 0.0, "f0_condition": False, "n_f0_bins": 512},
    "DiT": {"hidden_dim": 64, "num_heads": 4, "depth": 5, "class_dropout_prob": 0.1, "block_size": 8192,
            "in_channels": 80, "style_condition": True, "final_layer_type": "wavenet", "target": "mel",
            "content_dim": 32, "content_codebook_size": 16, "content_type": "discrete", "f0_condition": False,
            "n_f0_bins": 512, "content_codebooks": 1, "is_causal": False, "long_skip_connection": True,
            "zero_prompt_speech_token": False, "time_as_token": False, "style_as_token": False,
            "uvit_skip_connection": True, "add_resblock_in_transformer": False},
    "wavenet": {"hidden_dim": 64, "num_layers": 3, "kernel_size": 5, "dilation_rate": 1, "p_dropout": 0.2,
                "style_condition": True},
}
#: nvidia/bigvgan_v2_22khz_80band_256x with 128 initial channels instead of 1536.
TINY_BIGVGAN = {"resblock": "1", "upsample_rates": [4, 4, 2, 2, 2, 2], "upsample_kernel_sizes": [8, 8, 4, 4, 4, 4],
                "upsample_initial_channel": 128, "resblock_kernel_sizes": [3, 7, 11],
                "resblock_dilation_sizes": [[1, 3, 5], [1, 3, 5], [1, 3, 5]], "use_tanh_at_final": False,
                "use_bias_at_final": False, "activation": "snakebeta", "snake_logscale": True, "num_mels": 80,
                "n_fft": 1024, "hop_size": 256, "win_size": 1024, "sampling_rate": 22050, "fmin": 0, "fmax": None}
#: CAMPPlus constructor widths of the tiny bundle (the release uses the defaults).
TINY_CAMPPLUS = {"growth_rate": 8, "bn_size": 2, "init_channels": 32}


def train_base_tokenizer(lines: list[str], dest: Path, vocab_size: int = 256) -> int:
    """A SentencePiece unigram model with the official special ids (<s>=0, </s>=1, <unk>=2, no pad).

    ``lines`` should already be front-end text (upper-cased, CJK split).  Returns the piece count.
    """
    import sentencepiece as spm

    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_writer=buf, model_type="unigram", vocab_size=vocab_size,
        hard_vocab_limit=False, bos_id=0, eos_id=1, unk_id=2, pad_id=-1, character_coverage=1.0,
        normalization_rule_name="nmt_nfkc", add_dummy_prefix=True, remove_extra_whitespaces=True,
        byte_fallback=False, max_sentencepiece_length=16, num_threads=1, minloglevel=2,
    )
    with atomic_write(dest, "wb") as f:
        f.write(buf.getvalue())
    sp = spm.SentencePieceProcessor(model_proto=buf.getvalue())
    return sp.GetPieceSize()


def write_tiny_bundle(dest: str | Path, seed: int = 0, vocab_size: int = 256, version: str = "2.0") -> ModelBundle:
    """Write a tiny random checkpoint folder in the official layout (about 35 MB, a few seconds).

    ``version="2.5"``: the IndexTTS-2.5 layout (a tiny tiktoken vocabulary learned from the bundled
    sentences with ``vocab_size`` merges, ``codec.pth`` with stride-2 down-sampling, the CAMPPlus
    speaker row and the language embedding).
    """
    from indextts_core.model.config import release_of
    from safetensors.torch import save_model
    from transformers import SeamlessM4TFeatureExtractor, Wav2Vec2BertConfig, Wav2Vec2BertModel
    from transformers.utils import logging as hf_logging

    from indextts_core.text.frontend import split_cjk

    hf_logging.disable_progress_bar()
    root = Path(dest)
    root.mkdir(parents=True, exist_ok=True)
    v25 = release_of(version) == "2.5"
    sentences = [line for line in (RESOURCES / "base_languages.txt").read_text(encoding="utf-8").splitlines()
                 if line.strip()]
    if v25:
        from indextts_core.text.tiktoken_vocab import TIKTOKEN_FILE, load_tiktoken_vocab
        from indextts_core.tiny.tiktoken import write_tiny_tiktoken

        write_tiny_tiktoken(root / TIKTOKEN_FILE, [line.lower() for line in sentences], merges=vocab_size)
        n_pieces = load_tiktoken_vocab(root / TIKTOKEN_FILE).n_vocab
        config: dict[str, Any] = {}
    else:
        n_pieces = train_base_tokenizer([split_cjk(line) for line in sentences], root / "bpe.model", vocab_size)
        config = {"dataset": {"bpe_model": "bpe.model"}}

    gpt = dict(TINY_GPT, number_text_tokens=n_pieces)
    config |= {"gpt": gpt, "semantic_codec": TINY_CODEC, "gpt_checkpoint": "gpt.pth",
               "w2v_stat": "wav2vec2bert_stats.pt", "version": 2.5 if v25 else 2.0}
    with atomic_write(root / "config.yaml") as f:
        f.write("# tiny random IndexTTS-2-layout bundle for tests and the demo (not a trained model)\n")
        yaml.safe_dump(config, f, sort_keys=False)

    torch.manual_seed(seed)
    model = UnifiedVoice(GPTConfig.from_dict(gpt, version=config["version"]))
    with torch.no_grad():  # the released init leaves these at zero; make the tiny model less degenerate
        if v25:  # like the release: the trained languages' rows small, the others nn.Embedding's N(0, 1)
            from indextts_core.text.tiktoken_vocab import RELEASED_LANGUAGES, language_index

            for code in RELEASED_LANGUAGES:
                model.lang_embedding.weight[language_index(code)].normal_(std=0.02)
        else:
            model.speed_emb.weight.normal_(std=0.02)
    with atomic_write(root / "gpt.pth", "wb") as f:
        torch.save(model.state_dict(), f)

    hidden = TINY_CODEC["hidden_size"]
    g = torch.Generator().manual_seed(seed + 1)
    stats = {"mean": torch.randn(hidden, generator=g) * 0.1, "var": torch.rand(hidden, generator=g) + 0.5}
    with atomic_write(root / "wav2vec2bert_stats.pt", "wb") as f:
        torch.save(stats, f)

    w2v_dir = root / W2V_DIR
    torch.manual_seed(seed + 2)
    w2v = Wav2Vec2BertModel(Wav2Vec2BertConfig(
        hidden_size=hidden, num_hidden_layers=1, num_attention_heads=16, intermediate_size=64,
        feature_projection_input_dim=160, hidden_act="swish", position_embeddings_type="relative_key",
        left_max_position_embeddings=64, right_max_position_embeddings=8, conv_depthwise_kernel_size=31,
        layer_norm_eps=1e-5, add_adapter=False))
    w2v.save_pretrained(str(w2v_dir))
    SeamlessM4TFeatureExtractor(feature_size=80, num_mel_bins=80, padding_value=1.0, sampling_rate=16000, stride=2,
                                return_attention_mask=True, padding_side="right").save_pretrained(str(w2v_dir))

    torch.manual_seed(seed + 3)
    codec = SemanticCodec(CodecConfig.from_dict(TINY_CODEC, version=config["version"]))
    if v25:
        with atomic_write(root / CODEC_V25_FILE, "wb") as f:
            torch.save({"model": codec.state_dict()}, f)
    else:
        (root / CODEC_FILE).parent.mkdir(parents=True, exist_ok=True)
        save_model(codec, str(root / CODEC_FILE))
    _write_tiny_synthesis(root, seed, gpt["model_dim"])
    _write_tiny_emotion_banks(root, seed, gpt["model_dim"])
    write_json(root / BUNDLE_META, {"format": 1, "kind": "tiny-random", "seed": seed, "w2v_bert_hidden_layer": 1,
                                    "campplus": TINY_CAMPPLUS})
    return open_bundle(root)


def _write_tiny_synthesis(root: Path, seed: int, gpt_dim: int) -> None:
    """Random S2Mel (``s2mel.pth`` + the ``s2mel:`` config section), CAMPPlus and BigVGAN in the release layout."""
    from indextts_core.model.bigvgan import BigVGAN
    from indextts_core.model.campplus import CAMPPlus
    from indextts_core.model.s2mel import LengthRegulator, gpt_layer
    from indextts_core.model.s2mel_decoder import FlowMatching

    torch.manual_seed(seed + 4)
    net = {"cfm": FlowMatching(TINY_S2MEL).state_dict(),
           "length_regulator": LengthRegulator.from_config(TINY_S2MEL["length_regulator"]).state_dict(),
           "gpt_layer": gpt_layer(gpt_dim).state_dict()}
    with atomic_write(root / "s2mel.pth", "wb") as f:
        torch.save({"net": net}, f)
    config = read_config(root / "config.yaml")
    config |= {"s2mel": TINY_S2MEL, "s2mel_checkpoint": "s2mel.pth"}
    with atomic_write(root / "config.yaml") as f:
        f.write("# tiny random IndexTTS-2-layout bundle for tests and the demo (not a trained model)\n")
        yaml.safe_dump(config, f, sort_keys=False)
    torch.manual_seed(seed + 5)
    with atomic_write(root / CAMPPLUS_FILE, "wb") as f:
        torch.save(CAMPPlus(**TINY_CAMPPLUS).state_dict(), f)
    torch.manual_seed(seed + 6)
    (root / BIGVGAN_DIR).mkdir(parents=True, exist_ok=True)
    write_json(root / BIGVGAN_DIR / "config.json", TINY_BIGVGAN)
    with atomic_write(root / BIGVGAN_DIR / "bigvgan_generator.pt", "wb") as f:
        torch.save({"generator": BigVGAN(TINY_BIGVGAN).state_dict()}, f)


#: Rows per emotion category of feat1.pt / feat2.pt, as the release's ``emo_num`` (sum 73).
EMO_NUM = [3, 17, 2, 8, 4, 5, 10, 24]
QWEN_DIR = "qwen0.6bemo4-merge"


def _write_tiny_emotion_banks(root: Path, seed: int, gpt_dim: int) -> None:
    """The rest of the official folder: ``feat1.pt`` (speaker-style bank, CAMPPlus width 192), ``feat2.pt``
    (emotion bank in the GPT's emotion space), a tiny random Qwen3 text-to-emotion folder, a licence note,
    and the config keys that name them."""
    g = torch.Generator().manual_seed(seed + 7)
    rows = sum(EMO_NUM)
    for name, width in (("feat1.pt", 192), ("feat2.pt", gpt_dim)):
        with atomic_write(root / name, "wb") as f:
            torch.save(torch.randn(rows, width, generator=g), f)
    _write_tiny_qwen(root / QWEN_DIR, seed)
    with atomic_write(root / "LICENSE.txt") as f:
        f.write("Tiny random stand-in for the IndexTTS-2 folder (tests and the demo). The real folder's licence "
                "is the bilibili IndexTTS model licence; an export carries it over.\n")
    config = read_config(root / "config.yaml")
    config |= {"emo_matrix": "feat2.pt", "spk_matrix": "feat1.pt", "emo_num": EMO_NUM, "qwen_emo_path": QWEN_DIR}
    with atomic_write(root / "config.yaml") as f:
        f.write("# tiny random IndexTTS-2-layout bundle for tests and the demo (not a trained model)\n")
        yaml.safe_dump(config, f, sort_keys=False)


def _write_tiny_qwen(dest: Path, seed: int) -> None:
    """A tiny random Qwen3 causal LM with a byte-level tokenizer and a chat template, in the layout
    ``AutoTokenizer`` / ``AutoModelForCausalLM`` load (the official code loads ``qwen_emo_path`` so)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import GenerationConfig, PreTrainedTokenizerFast, Qwen3Config, Qwen3ForCausalLM
    from transformers.utils import logging as hf_logging

    from indextts_core.text.byte_level import byte_alphabet

    hf_logging.disable_progress_bar()
    dest.mkdir(parents=True, exist_ok=True)
    core = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(byte_alphabet())}, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    tok = PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                  additional_special_tokens=["<|im_start|>"])
    tok.chat_template = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
                         "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    tok.save_pretrained(str(dest))
    _portable_tokenizer_config(dest / "tokenizer_config.json")
    cfg = Qwen3Config(vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1, head_dim=8, max_position_embeddings=256,
                      eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, tie_word_embeddings=True)
    torch.manual_seed(seed + 8)
    Qwen3ForCausalLM(cfg).save_pretrained(str(dest))
    GenerationConfig(eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                     max_new_tokens=32).save_pretrained(str(dest))


def _portable_tokenizer_config(path: Path) -> None:
    """Name the tokenizer in words every transformers release reads, the official pin (4.52) included.

    transformers 5 writes ``tokenizer_class: TokenizersBackend`` and ``extra_special_tokens``, which 4.52
    cannot resolve (the official ``IndexTTS2(...)`` would fail on our folder); ``PreTrainedTokenizerFast``
    and ``additional_special_tokens`` load the same ``tokenizer.json`` in both.
    """
    import json

    config = json.loads(path.read_text(encoding="utf-8"))
    config.pop("backend", None)
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    extra = config.pop("extra_special_tokens", None)
    if extra:
        config["additional_special_tokens"] = list(extra)
    with atomic_write(path) as f:
        json.dump(config, f, indent=2, ensure_ascii=False)
