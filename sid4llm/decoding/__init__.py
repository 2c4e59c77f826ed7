"""Decoding IDs that always name a real item: the prefix trie of valid IDs (``trie``) and the constrained
beam search over it (``beam_search``)."""
