"""Name → (config class, model class) for every ID method, so configs and saved codebooks stay declarative."""

from __future__ import annotations

from .atomic import AtomicConfig, AtomicIds
from .base import IdInputError, IdMethodConfig, IdModel
from .dvae import DiscreteVAE, DVAEConfig
from .reinforce import ReinforceConfig, ReinforceSenderReceiver
from .rqkmeans import ResidualKMeans, RQKMeansConfig

METHODS: dict[str, tuple[type[IdMethodConfig], type[IdModel]]] = {
    "dvae": (DVAEConfig, DiscreteVAE),
    "rqkmeans": (RQKMeansConfig, ResidualKMeans),
    "reinforce": (ReinforceConfig, ReinforceSenderReceiver),
    "atomic": (AtomicConfig, AtomicIds),
}


def config_class(method: str) -> type[IdMethodConfig]:
    if method not in METHODS:
        raise IdInputError(f"unknown ID method {method!r}; choose from {sorted(METHODS)}")
    return METHODS[method][0]


def build_model(config: IdMethodConfig, input_dim: int) -> IdModel:
    return METHODS[config.method][1](config, input_dim)


def config_from_dict(values: dict) -> IdMethodConfig:
    return config_class(values["method"]).from_dict(values)
