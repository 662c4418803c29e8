"""Training: fine-tuning descriptors on a collection (trainer, data, augmentation, processes)."""

from pyinstance.train.checkpoint import CheckpointMismatchError
from pyinstance.train.config import Config, ConfigError, load_config
from pyinstance.train.data import TrainingSet, load_training_set
from pyinstance.train.trainer import Trainer, TrainingDiverged, TrainResult
from pyinstance.train.verification import VerificationResult, VerificationTrainer

__all__ = [
    "CheckpointMismatchError",
    "Config",
    "ConfigError",
    "TrainResult",
    "Trainer",
    "TrainingDiverged",
    "TrainingSet",
    "VerificationResult",
    "VerificationTrainer",
    "load_config",
    "load_training_set",
]
