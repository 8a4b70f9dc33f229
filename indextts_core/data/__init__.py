"""The dataset: audio decoding, manifests, the ingest stage (validation, split, report)."""
