"""IndexTTS-2 models for training: the GPT (UnifiedVoice), the semantic codec and the feature path."""

from indextts_core.model.config import GPTConfig, text_rows
from indextts_core.model.losses import Losses, compute_losses
from indextts_core.model.unified_voice import GPTOutput, UnifiedVoice

__all__ = ["GPTConfig", "GPTOutput", "Losses", "UnifiedVoice", "compute_losses", "text_rows"]
