"""Synthesis: text -> waveform through the GPT, S2Mel and BigVGAN, as infer_v2 runs them."""
