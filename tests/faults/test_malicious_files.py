"""Files from a user or the store that would run code, or lie about their content, are refused clearly."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
import torch

from indextts_core.errors import InputError
from indextts_core.model.features import read_stats
from indextts_core.preprocess.shards import ShardReader
from indextts_core.utils.safe_load import safetensors_load


class _Payload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_pickled_stats_file_is_refused_with_a_whole_sentence_and_runs_nothing(tmp_path: Path):
    marker = tmp_path / "code-ran"
    stats = tmp_path / "wav2vec2bert_stats.pt"
    torch.save({"mean": torch.zeros(4), "var": torch.ones(4), "hook": _Payload(marker)}, stats)
    with pytest.raises(InputError) as e:
        read_stats(stats)
    message = str(e.value)
    assert message.startswith(f"{stats}: feature statistics (wav2vec2bert_stats.pt) refused")
    assert "weights_only=True" in message and message.rstrip().endswith(".")  # complete, not cut mid-sentence
    assert "Reason: " in message and "\n" not in message
    assert not marker.exists()


def _lying_safetensors(path: Path) -> Path:
    header = b'{"ids":{"dtype":"I64","shape":[1000000],"data_offsets":[0,8000000]}}'
    path.write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 16)  # 16 bytes where it promises 8 MB
    return path


def test_a_lying_safetensors_header_is_a_clear_error(tmp_path: Path):
    path = _lying_safetensors(tmp_path / "text_ids.safetensors")
    with pytest.raises(InputError, match=rf"^{path}: text ids is not a readable safetensors file \(.*\); it is "
                                         "damaged or was not written completely"):
        safetensors_load(path, "text ids")
    with pytest.raises(InputError, match=rf"^{path}: feature shard is not a readable safetensors file"):
        ShardReader(path)
