"""The curate stage: long recordings -> segmented, transcribed, cleaned clips and a manifest ``ingest`` reads.

One module per step: :mod:`~indextts_core.curate.sources` (what recordings there are, their sidecars,
speakers and content digests), :mod:`~indextts_core.curate.subtitles` (SRT/VTT cues), :mod:`~indextts_core.curate.vad`
(Silero voice activity and the cuts), :mod:`~indextts_core.curate.align` (a transcript placed on the
segments), :mod:`~indextts_core.curate.loudness`, :mod:`~indextts_core.curate.quality` (the gates and
duplicates), :mod:`~indextts_core.curate.report` and :mod:`~indextts_core.curate.run` (one unit per
recording, resumable and append-only, then the manifest).  The types they pass are in
:mod:`~indextts_core.curate.types`.
"""
