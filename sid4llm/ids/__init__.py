"""Semantic IDs: the variable-length discrete VAE of arXiv 2602.16375, its fixed-length variant, RQ-KMeans,
REINFORCE and atomic (one token per item) baselines, and the ``SemanticIdCodebook`` artefact they all produce."""

from .atomic import AtomicConfig, AtomicIds
from .base import IdInputError, IdMethodConfig, IdModel
from .codebook import SemanticIdCodebook, disambiguate
from .collaborative import CollaborativeInput, CollaborativeSettings, cooccurrence_embeddings
from .dvae import DiscreteVAE, DVAEConfig
from .quality import collapse_problems, id_metrics, plot_length_vs_popularity, summary_table
from .registry import METHODS, build_model, config_class
from .reinforce import ReinforceConfig, ReinforceSenderReceiver
from .rqkmeans import ResidualKMeans, RQKMeansConfig
from .training import (
    CodebookCollapseError,
    IdTrainingArguments,
    load_finished_run,
    save_training_outputs,
    train_semantic_ids,
)

__all__ = [
    "CollaborativeInput", "CollaborativeSettings", "cooccurrence_embeddings",
    "AtomicConfig",
    "AtomicIds",
    "CodebookCollapseError",
    "METHODS",
    "DVAEConfig",
    "DiscreteVAE",
    "IdInputError",
    "IdMethodConfig",
    "IdModel",
    "IdTrainingArguments",
    "RQKMeansConfig",
    "ReinforceConfig",
    "ReinforceSenderReceiver",
    "ResidualKMeans",
    "SemanticIdCodebook",
    "build_model",
    "collapse_problems",
    "config_class",
    "disambiguate",
    "id_metrics",
    "plot_length_vs_popularity",
    "load_finished_run",
    "save_training_outputs",
    "summary_table",
    "train_semantic_ids",
]
