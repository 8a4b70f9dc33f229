"""Where the official IndexTTS-2 checkpoint folder keeps the models next to the GPT (paths relative to it).

Plain names, no torch: the CLI checks and lays out folders with them before any model is loaded.
"""

from __future__ import annotations

from pathlib import Path

#: The encoders and synthesis models the official inference fetches from the hub, kept in the folder.
HF_CACHE = Path("hf_cache")
W2V_DIR = HF_CACHE / "w2v-bert-2.0"
CODEC_FILE = HF_CACHE / "semantic_codec_model.safetensors"
CAMPPLUS_FILE = HF_CACHE / "campplus_cn_common.bin"
BIGVGAN_DIR = HF_CACHE / "bigvgan"
