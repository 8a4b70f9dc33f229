"""IndexTTS-2.5 in the training core: CAMPPlus speaker rows and 25 Hz codes in preprocessing, the
language row that trains alone, the 2.5 config update on export."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml

from indextts_core.model.campplus import load_campplus, style_features
from indextts_core.model.checkpoint import update_config_text
from indextts_core.model.vocab import OneRowEmbedding, train_language_row
from indextts_core.preprocess.extract import FeatureExtractor
from indextts_core.text.tiktoken_vocab import RELEASED_LANGUAGES, language_index


def test_feature_extraction_on_a_2_5_base(tiny_bundle_v25):
    ex = FeatureExtractor(tiny_bundle_v25, torch.device("cpu"), cond_max_seconds=1.0)
    g = np.random.default_rng(0)
    waves = [g.standard_normal(n).astype(np.float32) * 0.1 for n in (16000 * 2, 16000 // 2 + 320)]
    out = ex(waves)
    feats, lengths = ex.features.extract_padded(waves)
    campplus = load_campplus(tiny_bundle_v25.campplus_path, tiny_bundle_v25.campplus_config)
    with torch.no_grad():
        for wave, (codes, spk, emo), n in zip(waves, out, lengths.tolist()):
            assert len(codes) == (n + 1) // 2  # 25 Hz: ceil(T / 2) codes for T 50 Hz frames
            cut = torch.from_numpy(wave[:16000])  # the prompt is cut to cond_max_seconds, as inference cuts it
            want = ex.gpt.speaker_projection(campplus(style_features(cut).unsqueeze(0)))[0]
            assert spk.shape == (1, 64)
            torch.testing.assert_close(torch.from_numpy(spk), want, atol=1e-5, rtol=1e-4)
            assert emo.shape == (64,)


def test_only_the_chosen_language_row_trains(tiny_bundle_v25):
    model = tiny_bundle_v25.load_gpt()
    before = model.lang_embedding.weight.detach().clone()
    released = [language_index(c) for c in RELEASED_LANGUAGES]
    done = train_language_row(model, 75, "released_mean", released)
    assert isinstance(model.lang_embedding, OneRowEmbedding)
    assert done["norm_before"] > 3 and done["norm_after"] < 0.5  # an untrained N(0, 1) row, replaced
    torch.testing.assert_close(model.lang_embedding.weight[75], before[released].mean(dim=0))
    assert [n for n, p in model.lang_embedding.named_parameters()] == ["trained"]
    opt = torch.optim.AdamW(model.lang_embedding.parameters(), lr=0.1, weight_decay=0.1)
    model.language_rows(torch.tensor([75, 75])).sum().backward()
    opt.step()
    after = model.state_dict()["lang_embedding.weight"]  # one official tensor in the state dict
    changed = (after != before).any(dim=1).nonzero().flatten().tolist()
    assert changed == [75]
    fresh = tiny_bundle_v25.load_gpt()
    fresh.lang_embedding = OneRowEmbedding(fresh.lang_embedding, 75)
    fresh.load_state_dict(model.state_dict())
    assert torch.equal(fresh.lang_embedding.weight, model.lang_embedding.weight)
    with pytest.raises(ValueError, match="initialisation"):
        train_language_row(tiny_bundle_v25.load_gpt(), 75, "zeros", released)


def test_a_2_5_config_keeps_its_keys_on_export(tiny_bundle_v25):
    text = (tiny_bundle_v25.checkpoint_dir / "config.yaml").read_text()
    new = update_config_text(text, 4321, None)
    data = yaml.safe_load(new)
    assert data["gpt"]["number_text_tokens"] == 4321 and "dataset" not in data and data["version"] == 2.5
    assert new.replace("4321", "X") == text.replace(str(yaml.safe_load(text)["gpt"]["number_text_tokens"]), "X")


@pytest.mark.parametrize(("language", "code", "row", "trains"), [
    ("am", None, 75, {"lang_embedding.trained", "text_embedding.trained"}),  # own row, re-initialised
    ("am", "ar", 13, set()),  # a released language's rows, kept as released
    ("ti", None, 105, {"lang_embedding.trained"}),  # outside the table: 'common', as inference does (no token)
])
def test_what_trains_for_the_language_choice(tiny_bundle_v25, tmp_path, language, code, row, trains):
    from indextts_core.text.encoder import language_choice
    from indextts_core.text.tiktoken_stage import run_tiktoken_stage
    from indextts_core.training.setup import prepare_model

    choice = language_choice(language, code)
    stage = run_tiktoken_stage(tiny_bundle_v25.tokenizer_path, {language: ["ሰላም ለዓለም", "selam"]}, choice, tmp_path)
    setup = prepare_model(tiny_bundle_v25, stage.model_path)
    names = {n for n, p in setup.model.named_parameters() if p.requires_grad}
    assert {n for n in names if n.startswith(("lang_embedding", "text_embedding", "text_head"))} == trains
    assert setup.language["row"] == row and setup.describe()["language"]["code"] == (code or language)
    if "text_embedding.trained" in trains:
        assert setup.trained_base_rows == [setup.language["token_id"]]
        assert setup.language["token_norm_after"] < 0.5  # from the released prefixes' rows
    else:
        assert setup.trained_base_rows == []


def test_an_index_framed_for_another_language_row_is_refused(tmp_path):
    from indextts_core.errors import InputError
    from indextts_core.training.setup import check_language_rows

    language = {"language": "am", "code": "am", "row": 75}
    check_language_rows([{"id": "a", "language": "am", "lang": 75}, {"id": "b", "language": "en", "lang": 0}],
                        language, tmp_path)
    with pytest.raises(InputError, match="re-run preprocess") as e:
        check_language_rows([{"id": "a", "language": "am", "lang": 13}], language, tmp_path)
    assert "'a'" in str(e.value) and "row 75" in str(e.value)
    check_language_rows([{"id": "a", "language": "am"}], None, tmp_path)  # 2.0: nothing to check
