"""GPT fine-tuning: data, model set-up, the training loop, checkpoints.  No orchestration imports here."""

from indextts_core.training.records import TrainInputs, TrainResult
from indextts_core.training.trainer import STAGE_VERSION, train

__all__ = ["STAGE_VERSION", "TrainInputs", "TrainResult", "train"]
