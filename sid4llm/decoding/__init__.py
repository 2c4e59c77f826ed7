"""Decoding IDs that always name a real item: the prefix trie of valid IDs (``trie``), the ID tokens as its
columns (``columns``), trie-constrained ``generate`` (``logits_processor``) and the fast top-K search
(``top_k``)."""

from .columns import IdDecoder, id_head_rows, left_pad
from .logits_processor import TrieLogitsProcessor
from .top_k import recommend_top_k
from .trie import IdTrie

__all__ = ["IdDecoder", "IdTrie", "TrieLogitsProcessor", "id_head_rows", "left_pad", "recommend_top_k"]
