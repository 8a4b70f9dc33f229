"""Where artifacts live: the object store (local folder or S3) and the download stage that fills it."""
