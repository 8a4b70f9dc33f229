"""Generation: the fine-tuned GPT speaks, as the official inference would (prompt, decoding, metrics)."""

from indextts_core.generation.decode import Decoded, decode, item_generators, trim_at_stop
from indextts_core.generation.prompt import Prompt, build_prompt, conditioning_from_features

__all__ = ["Decoded", "Prompt", "build_prompt", "conditioning_from_features", "decode", "item_generators",
           "trim_at_stop"]
