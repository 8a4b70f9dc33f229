"""Error types shared by every stage.

Two families matter to the orchestration layer:

* :class:`InputError` (and subclasses) are *deterministic*: bad config, bad manifest, a corrupt
  file.  Running the same thing again gives the same error, so retry policies must not retry them.
* Everything else (network, S3, disk) may be transient and is fair game for a retry.
"""

from __future__ import annotations


class IndexTTSError(Exception):
    """Base class for errors raised by ``indextts_core``."""


class InputError(IndexTTSError, ValueError):
    """A deterministic problem with what the user handed us; retrying will not help."""


class ConfigError(InputError):
    """A configuration value is missing or invalid.  The message names the field and its source."""


class ManifestError(InputError):
    """A manifest cannot be read at all (missing file, unknown format, too many bad rows)."""


class AudioDecodeError(InputError):
    """An audio file is missing, empty or cannot be decoded.  The message names the file."""


class DownloadError(InputError):
    """A requested asset does not exist at its source.  The message names the asset and file."""


class OutputError(InputError):
    """This machine refused a write (disk full, read-only, no permission); the message names the path."""


class StorageError(IndexTTSError):
    """An object-store operation failed.  ``transient`` says whether a retry may succeed."""

    def __init__(self, message: str, transient: bool = True):
        super().__init__(message)
        self.transient = transient

    def __reduce__(self):
        return (type(self), (str(self), self.transient))
