"""The fast path for top-K items: one prompt pass, then a beam search over the trie that reuses the prompt's KV
cache (tree attention: one new token per beam per step, all beams of a user in one sequence) and scores only
the ID tokens' rows of the LM head (normalised over them, or over each node's continuations for a model trained
with ``trie_softmax``), in batches of users with left padding. Summed
log-probabilities rank candidates (no length normalisation); the search stops as soon as no open beam can beat
the K-th finished item. Items a user must not get (the history, as evaluations in the field leave it out) are
never finished: their end marker is masked."""

from __future__ import annotations

from collections.abc import Collection

import torch

from .columns import IdDecoder, cache_keyword, id_head_rows, left_pad, output_cache, transformer_of


@torch.no_grad()
def recommend_top_k(model, decoder: IdDecoder, prompts: list[list[int]], k: int = 10, num_beams: int | None = None,
                    pad_token_id: int = 0, exclude: list[Collection[int]] | None = None) -> list[list[tuple[int, float]]]:
    """Top-``k`` (codebook index, summed log-prob) per prompt; the next token after each prompt starts an ID.
    ``exclude``: per prompt, codebook indices never to return."""
    num_beams = max(num_beams or k, k)
    device = next(model.parameters()).device
    dec = decoder if decoder.column_token_ids.device == device else decoder.to(device)
    trie, C = dec.trie, dec.num_columns
    B = len(prompts)
    input_ids, attention = left_pad(prompts, pad_token_id, device)
    width = input_ids.shape[1]
    positions = (attention.cumsum(1) - 1).clamp(min=0)
    backbone = transformer_of(model)
    out = backbone(input_ids=input_ids, attention_mask=attention, position_ids=positions, use_cache=True)
    cache = output_cache(out)
    cache_arg = cache_keyword(backbone)
    head = id_head_rows(model, dec.column_token_ids)  # [C, H]
    banned = torch.zeros((B, len(dec.vocab.codebook)), dtype=torch.bool, device=device)
    for user, items in enumerate(exclude or []):
        banned[user, list(items)] = True
    end_column = torch.full((1,), C - 1, dtype=torch.long, device=device)
    any_banned = bool(banned.any())

    def next_log_probs(hidden: torch.Tensor, nodes: torch.Tensor, users: torch.Tensor) -> torch.Tensor:
        """Log-probabilities of each row's next column, normalised as the model was trained; -inf off the trie and
        on the end marker that would finish a left-out item (a user's items are renormalised by a constant, so
        leaving some out changes no other item's rank)."""
        mask = trie.allowed_mask(nodes, C)
        logp = dec.log_probs(hidden @ head.T, mask)
        if any_banned:
            finishing = trie.items_of(trie.step(nodes, end_column.expand_as(nodes)))
            mask[:, C - 1] &= ~((finishing >= 0) & banned[users, finishing.clamp(min=0)])
        return logp.masked_fill(~mask, float("-inf"))

    # First expansion: from the root, each user keeps its best `num_beams` first tokens.
    root = torch.zeros(B, dtype=torch.long, device=device)
    logp = next_log_probs(out.last_hidden_state[:, -1], root, torch.arange(B, device=device))
    beams = num_beams
    first = min(beams, C)
    scores = torch.full((B, beams), float("-inf"), device=device)
    cols = torch.zeros((B, beams), dtype=torch.long, device=device)
    scores[:, :first], cols[:, :first] = logp.topk(first, dim=1)  # beams past `first` start empty (-inf)
    nodes = trie.step(root.repeat_interleave(beams), cols.reshape(-1))
    scores = scores.reshape(-1)
    # Tree attention with a growing tree cache: each step feeds one new token per beam, all beams of a user as
    # one sequence, appended to that user's cache (prompt + every token fed so far). A beam's token attends to
    # the prompt and to the cached tokens of its own ancestors only, so the prompt cache is never copied per
    # beam or reordered and no token is computed twice.
    first_position = positions[:, -1] + 1  # [B]
    dtype = out.last_hidden_state.dtype
    blocked = torch.finfo(dtype).min
    prompt_mask = torch.where(attention.bool(), 0.0, blocked).to(dtype)  # [B, W]
    last_cols = cols.reshape(-1)  # the token each beam chose last, not yet fed to the model
    ancestors = torch.empty((B * beams, 0), dtype=torch.long, device=device)  # tree-cache slots of fed tokens
    user_of = torch.arange(B, device=device).repeat_interleave(beams)
    fed = 0  # tree tokens in the cache (per user)
    finished: list[list[tuple[float, int]]] = [[] for _ in range(B)]

    for depth in range(trie.max_depth):
        items = trie.items_of(nodes)
        done = (items >= 0) & (scores > float("-inf"))
        for flat, item, score in zip(done.nonzero().squeeze(1).tolist(), items[done].tolist(), scores[done].tolist()):
            finished[flat // beams].append((score, item))
        scores = torch.where(items >= 0, torch.full_like(scores, float("-inf")), scores)
        # Stop when no open beam can beat the k-th finished item of its user (log-probs only decrease).
        best_open = scores.reshape(B, beams).max(1).values
        kth = torch.tensor([sorted(f, reverse=True)[k - 1][0] if len(f) >= k else float("-inf") for f in finished],
                           device=device)
        if bool(((best_open == float("-inf")) | (best_open <= kth)).all()):
            break
        own = fed + torch.arange(beams, device=device).repeat(B)  # this step's slot of each beam
        visible = torch.cat([ancestors, own[:, None]], 1)  # [B*beams, depth + 1]
        tree_mask = torch.full((B * beams, fed + beams), blocked, dtype=dtype, device=device)
        tree_mask.scatter_(1, visible, 0.0)
        mask = torch.cat([prompt_mask[user_of], tree_mask], 1).reshape(B, 1, beams, width + fed + beams)
        out = backbone(input_ids=dec.column_token_ids[last_cols].reshape(B, beams), attention_mask=mask,
                       position_ids=(first_position + depth)[:, None].expand(B, beams), use_cache=True,
                       **{cache_arg: cache})
        cache = output_cache(out)
        fed += beams
        logp = next_log_probs(out.last_hidden_state.reshape(B * beams, -1), nodes, user_of)
        candidates = (scores[:, None] + logp).reshape(B, beams * C)
        scores, flat_idx = candidates.topk(beams, dim=1)
        parent = ((flat_idx // C) + torch.arange(B, device=device)[:, None] * beams).reshape(-1)
        last_cols = (flat_idx % C).reshape(-1)
        scores = scores.reshape(-1)
        ancestors = visible[parent]
        nodes = trie.step(nodes[parent], last_cols)
    results = []
    for f in finished:
        best = sorted(f, key=lambda s: (-s[0], s[1]))[:k]
        results.append([(item, score) for score, item in best])
    return results
