"""Small helpers every layer uses: atomic file writes and hashing, progress bars, GPU out-of-memory backoff."""
