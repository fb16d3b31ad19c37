"""Training and evaluation loops on top of the model, data, losses and metrics packages."""

from .config import TrainConfig, load_config
from .evaluate import evaluate_benchmark, evaluate_sets, extract
from .trainer import NonFiniteLoss, Trainer, train

__all__ = ["NonFiniteLoss", "TrainConfig", "Trainer", "evaluate_benchmark", "evaluate_sets", "extract", "load_config",
           "train"]
