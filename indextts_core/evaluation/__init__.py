"""Does the model speak the language? The evaluation set, ASR, scores, intervals, report and promotion rule."""

#: Bump when the evaluation's outputs change for the same inputs (invalidates cached results).
STAGE_VERSION = "2"  # 2: outputs that are not speech are counted, never scored
