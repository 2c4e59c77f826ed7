"""The language model side: the ID tokens' first embeddings (``embedding_init``), training examples (``tasks``,
``requests``), the causal LMs (``models``), fine-tuning (``finetuning``), the saved recommender
(``recommender``), its model card (``model_card``) and the words of a chat answer (``narration``). The ID tokens
themselves live one layer below, in :mod:`sid4llm.vocabulary`, shared with :mod:`sid4llm.decoding`."""
