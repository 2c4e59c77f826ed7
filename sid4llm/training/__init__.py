"""Training a recommender: the settings (``SidTrainingConfig``, a ``TrainingArguments``), the trainer and its loss,
packing and collation, the callbacks that choose how long to train and which state to keep, and ``run_finetune``
(what ``sid4llm finetune`` runs). Nothing on the inference path imports this package."""

from .config import SidTrainingConfig
from .finetuning import SidDataArguments, load_finished_run, run_finetune

__all__ = ["SidDataArguments", "SidTrainingConfig", "load_finished_run", "run_finetune"]
