"""sid4llm: variable-length semantic IDs for LLM recommendation, the Hugging Face way."""

__version__ = "0.1.0"
