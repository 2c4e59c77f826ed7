"""The language model side: ID tokens in a tokenizer (``tokenization``), training examples (``tasks``), the
causal LMs (``models``), fine-tuning (``finetuning``), the saved recommender (``recommender``) and its model
card (``model_card``). Import the modules themselves; this package imports nothing, so that ``decoding`` can
use ``lm.tokenization`` without pulling in the trainer."""
