"""GPT fine-tuning: data, model set-up, the training loop, checkpoints.  No orchestration imports here."""

from indextts_core.training.trainer import TrainInputs, TrainOptions, TrainResult, train

__all__ = ["TrainInputs", "TrainOptions", "TrainResult", "train"]
