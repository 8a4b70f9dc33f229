"""SentencePiece helpers shared by the model and the tokenizer stage."""

from __future__ import annotations

from pathlib import Path

import sentencepiece as spm

from indextts_core.errors import InputError

SPACE = "\u2581"  # SentencePiece's word-boundary marker


def load_sentencepiece(path: str | Path) -> spm.SentencePieceProcessor:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: tokenizer model not found")
    sp = spm.SentencePieceProcessor()
    try:
        sp.Load(str(path))
    except (OSError, RuntimeError) as e:
        raise InputError(f"{path}: not a SentencePiece model ({e})") from None
    return sp


def new_piece_decompositions(base: spm.SentencePieceProcessor,
                             extended: spm.SentencePieceProcessor) -> dict[int, list[int]]:
    """For every piece the extended model adds, the base pieces its text splits into (``<unk>`` dropped).

    Used to initialise a new piece's model rows from the rows of what the base model would have
    produced for the same text.  A word-initial piece (``▁...``) is segmented as a word; any other
    piece as the middle of a word, i.e. without the word marker SentencePiece puts before a text.
    """
    from sentencepiece import sentencepiece_model_pb2 as pb

    n_base = base.GetPieceSize()
    if extended.GetPieceSize() < n_base:
        raise InputError(f"the extended tokenizer ({extended.GetPieceSize()} pieces) is smaller than the base "
                         f"({n_base})")
    proto = pb.ModelProto()
    proto.ParseFromString(base.serialized_model_proto())
    proto.normalizer_spec.add_dummy_prefix = False
    mid_word = spm.SentencePieceProcessor(model_proto=proto.SerializeToString())
    unk = base.unk_id()
    out: dict[int, list[int]] = {}
    for token in range(n_base, extended.GetPieceSize()):
        piece = extended.IdToPiece(token)
        encoder = base if piece.startswith(SPACE) else mid_word
        ids = encoder.EncodeAsIds(piece.replace(SPACE, " "))
        out[token] = [i for i in ids if i != unk]
    return out
