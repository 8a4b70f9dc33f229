"""Text: cleaning, the official front-end, SentencePiece helpers, the corpus and extend-bpe stages."""
