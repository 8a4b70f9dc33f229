"""Random models for tests, the laptop demo and the full-size rehearsal, in the layouts the real ones have.

Nothing in the library imports this package except the download stage's ``tiny://`` and ``random://`` sources;
the tests, the demo and the benchmarks do.  See :mod:`.bundle`, :mod:`.ctc`, :mod:`.tiktoken`, :mod:`.whisper`,
:mod:`.xvector` and :mod:`.full` (the official folder at the released shapes, random weights).
"""

from indextts_core.tiny.bundle import train_base_tokenizer, write_tiny_bundle
from indextts_core.tiny.ctc import write_tiny_ctc
from indextts_core.tiny.tiktoken import learn_merges, write_tiny_tiktoken
from indextts_core.tiny.whisper import write_tiny_whisper
from indextts_core.tiny.xvector import write_tiny_xvector

__all__ = ["learn_merges", "train_base_tokenizer", "write_tiny_bundle", "write_tiny_ctc", "write_tiny_tiktoken",
           "write_tiny_whisper", "write_tiny_xvector"]
