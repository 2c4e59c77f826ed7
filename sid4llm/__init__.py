"""sid4llm: variable-length semantic IDs for LLM recommendation, the Hugging Face way."""

__version__ = "0.1.0"

_LAZY = {
    "SemanticIdCodebook": "sid4llm.ids",
    "SidRecommender": "sid4llm.lm.recommender",
    "RecommendationPipeline": "sid4llm.pipeline",
    "IdVocabulary": "sid4llm.vocabulary",
    "PreparedData": "sid4llm.data",
    "CatalogueProfile": "sid4llm.data",
}


def __getattr__(name):  # import heavy modules only when used
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'sid4llm' has no attribute {name!r}")


__all__ = list(_LAZY)
