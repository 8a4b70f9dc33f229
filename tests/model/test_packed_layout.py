"""Padding at the end of each sample: every sample gets its solo numbers (to float tolerance), whatever its batch."""

from __future__ import annotations

import torch

from indextts_core.model.losses import token_sums


def test_pad_at_end_equals_solo_and_the_released_layout_does_not(tiny_bundle):
    model = tiny_bundle.load_gpt().eval()
    g = torch.Generator().manual_seed(0)
    d = model.cfg.model_dim
    lat, emo = torch.randn(3, 32, d, generator=g), torch.randn(3, d, generator=g)
    tl, cl = torch.tensor([5, 9, 3]), torch.tensor([20, 7, 13])
    text = torch.randint(2, 200, (3, 9), generator=g)
    codes = torch.randint(0, 64, (3, 20), generator=g)
    with torch.no_grad():
        packed = model(lat, emo, text, tl, codes, cl, pad_at_end=True)
        released = model(lat, emo, text, tl, codes, cl)
        for i in range(3):
            solo = model(lat[i:i + 1], emo[i:i + 1], text[i:i + 1, :tl[i]], tl[i:i + 1], codes[i:i + 1, :cl[i]],
                         cl[i:i + 1])
            # equal up to float summation order (batched and solo matmuls may block differently on
            # some CPUs); a padding leak moves logits by orders of magnitude more than this
            torch.testing.assert_close(packed.mel_logits[i, :cl[i] + 2], solo.mel_logits[0], atol=1e-5, rtol=1e-4)
            torch.testing.assert_close(packed.text_logits[i, :tl[i] + 2], solo.text_logits[0], atol=1e-5, rtol=1e-4)
        assert packed.mel_logits.shape == released.mel_logits.shape
        assert packed.text_logits.shape == released.text_logits.shape
        # the released layout leaks padding into shorter samples (their mel positions see padded text)
        assert not torch.allclose(token_sums(released).mel_loss, token_sums(packed).mel_loss, atol=1e-3)
