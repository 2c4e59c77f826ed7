"""The fast path for top-K items: one prompt pass, then a beam search over the trie that reuses the prompt's KV
cache (tree attention: one new token per beam per step, all beams of a user in one sequence) and scores only
the ID tokens' rows of the LM head (normalised over them, or over each node's continuations for a model trained
with ``trie_softmax``), in batches of users with left padding. Summed
log-probabilities rank candidates (no length normalisation); the search stops as soon as no open beam can beat
the K-th finished item. Items a user must not get (the history, as evaluations in the field leave it out) are
never finished: their end marker is masked.

``candidates`` are items from elsewhere (a count-based prior's best guesses) that the beam may have missed: each is
scored exactly — its summed log-probability, teacher-forced through the same cache and normalisation — and
joins the beam's items, so a re-ranker can weigh every candidate by the model's own probability."""

from __future__ import annotations

from collections.abc import Collection

import torch

from .columns import IdDecoder, cache_keyword, id_head_rows, left_pad, output_cache, transformer_of


@torch.no_grad()
def recommend_top_k(model, decoder: IdDecoder, prompts: list[list[int]], k: int = 10, num_beams: int | None = None,
                    pad_token_id: int = 0, exclude: list[Collection[int]] | None = None,
                    candidates: list[Collection[int]] | None = None) -> list[list[tuple[int, float]]]:
    """Top-``k`` (codebook index, summed log-prob) per prompt; the next token after each prompt starts an ID.
    ``exclude``: per prompt, codebook indices never to return. ``candidates``: per prompt, codebook indices scored
    exactly and returned beside the beam's ``k`` best (those the beam did not finish, best first with them), so a
    list holds up to ``k + len(candidates[i])`` items."""
    num_beams = max(num_beams or k, k)
    device = next(model.parameters()).device
    dec = decoder if decoder.column_token_ids.device == device else decoder.to(device)
    trie, C = dec.trie, dec.num_columns
    B = len(prompts)
    backbone, out, cache, cache_arg, head, prompt_mask, first_position = encode_prompts(model, dec, prompts,
                                                                                         pad_token_id)
    width = prompt_mask.shape[1]
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
    prompt_hidden = out.last_hidden_state[:, -1]
    logp = next_log_probs(prompt_hidden, root, torch.arange(B, device=device))
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
    dtype = out.last_hidden_state.dtype
    blocked = torch.finfo(dtype).min
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
        expanded = (scores[:, None] + logp).reshape(B, beams * C)
        scores, flat_idx = expanded.topk(beams, dim=1)
        parent = ((flat_idx // C) + torch.arange(B, device=device)[:, None] * beams).reshape(-1)
        last_cols = (flat_idx % C).reshape(-1)
        scores = scores.reshape(-1)
        ancestors = visible[parent]
        nodes = trie.step(nodes[parent], last_cols)
    results = []
    for f in finished:
        best = sorted(f, key=lambda s: (-s[0], s[1]))[:k]
        results.append([(item, score) for score, item in best])
    if candidates is not None:
        if len(candidates) != B:
            raise ValueError(f"candidates needs one collection per prompt: {len(candidates)} for {B} prompts")
        finished_items = [{i for i, _ in found} for found in results]
        extra = [[i for i in dict.fromkeys(map(int, items)) if i not in finished_items[u] and not banned[u, i]]
                 for u, items in enumerate(candidates)]
        scored = score_items(backbone, cache, cache_arg, dec, head, extra, prompt_hidden, prompt_mask, fed,
                             first_position)
        results = [sorted(found + list(zip(items, scores)), key=lambda r: (-r[1], r[0]))
                   for found, items, scores in zip(results, extra, scored)]
    return results


def encode_prompts(model, dec: IdDecoder, prompts: list[list[int]], pad_token_id: int):
    """The prompt pass every search starts from: (backbone, its output, the KV cache, the cache's keyword, the ID
    head's rows [C, H], the prompts' additive mask [B, W] (left padding blocked), each prompt's next position [B])."""
    device = next(model.parameters()).device
    input_ids, attention = left_pad(prompts, pad_token_id, device)
    positions = (attention.cumsum(1) - 1).clamp(min=0)
    backbone = transformer_of(model)
    out = backbone(input_ids=input_ids, attention_mask=attention, position_ids=positions, use_cache=True)
    head = id_head_rows(model, dec.column_token_ids)  # [C, H]
    dtype = out.last_hidden_state.dtype
    prompt_mask = torch.where(attention.bool(), 0.0, torch.finfo(dtype).min).to(dtype)
    return (backbone, out, output_cache(out), cache_keyword(backbone), head, prompt_mask, positions[:, -1] + 1)


@torch.no_grad()
def item_log_probs(model, decoder: IdDecoder, prompts: list[list[int]], items: list[list[int]],
                   pad_token_id: int = 0) -> list[list[float]]:
    """The summed log-probability of each of ``items[i]`` (codebook indices) as the ID written after
    ``prompts[i]``, normalised as in decoding: what the beam would score the item, whether it finds it or not."""
    device = next(model.parameters()).device
    dec = decoder if decoder.column_token_ids.device == device else decoder.to(device)
    backbone, out, cache, cache_arg, head, prompt_mask, first_position = encode_prompts(model, dec, prompts,
                                                                                         pad_token_id)
    return score_items(backbone, cache, cache_arg, dec, head, items, out.last_hidden_state[:, -1], prompt_mask, 0,
                       first_position)


def score_items(backbone, cache, cache_arg: str, dec: IdDecoder, head: torch.Tensor, items: list[list[int]],
                prompt_hidden: torch.Tensor, prompt_mask: torch.Tensor, fed: int,
                first_position: torch.Tensor) -> list[list[float]]:
    """Each user's ``items`` (codebook indices) scored by summed log-probability, teacher-forced: every item's
    tokens but its last are fed at once after the user's cache (the prompt, then the ``fed`` tokens of the search,
    hidden), each seeing the prompt and its own item's earlier tokens only; ``prompt_hidden`` ([B, H], the
    prompt's last state) scores the first token."""
    B, C, device = len(items), dec.num_columns, prompt_hidden.device
    depth = dec.trie.max_depth  # the longest ID with its end marker
    per_user = max((len(x) for x in items), default=0)
    if not per_user:
        return [[] for _ in items]
    sequences = dec.vocab.codebook.sequences
    paths = torch.full((B, per_user, depth), -1, dtype=torch.long, device=device)  # columns, end marker included
    for u, user_items in enumerate(items):
        for e, item in enumerate(user_items):
            path = [*sequences[item], C - 1]
            paths[u, e, :len(path)] = torch.tensor(path, device=device)
    present = paths >= 0
    fed_paths = paths[:, :, :-1]  # the tokens fed: all but each path's last (and no padding past it)
    n = per_user * (depth - 1)
    dtype, blocked = prompt_mask.dtype, torch.finfo(prompt_mask.dtype).min
    slot = torch.arange(n, device=device)
    same_item = (slot[:, None] // (depth - 1)) == (slot[None, :] // (depth - 1))
    own_mask = torch.where(same_item & (slot[None, :] <= slot[:, None]), 0.0, blocked).to(dtype)  # [n, n]
    mask = torch.cat([prompt_mask[:, None, :].expand(B, n, -1),
                      torch.full((B, n, fed), blocked, dtype=dtype, device=device),
                      own_mask.expand(B, n, n)], 2)[:, None]
    positions = first_position[:, None] + (slot % (depth - 1))[None, :]
    tokens = dec.column_token_ids[fed_paths.clamp(min=0)].reshape(B, n)
    out = backbone(input_ids=tokens, attention_mask=mask, position_ids=positions, use_cache=True, **{cache_arg: cache})
    hidden = out.last_hidden_state.reshape(B * n, -1)
    nodes = dec.prefix_nodes(tokens.reshape(B * per_user, depth - 1))  # the node each fed token leads to
    logp = dec.log_probs(hidden @ head.T, dec.trie.allowed_mask(nodes.reshape(-1), C))  # [B*n, C]
    following = paths[:, :, 1:].reshape(B * n)  # the column each fed token's hidden state predicts
    gained = logp.gather(1, following.clamp(min=0)[:, None]).squeeze(1)
    gained = torch.where(following >= 0, gained, torch.zeros_like(gained)).reshape(B, per_user, depth - 1).sum(2)
    root = torch.zeros(B, dtype=torch.long, device=device)
    first = dec.log_probs(prompt_hidden @ head.T, dec.trie.allowed_mask(root, C)).gather(1, paths[:, :, 0].clamp(min=0))
    total = (first + gained).masked_fill(~present[:, :, 0], float("-inf"))
    return [total[u, :len(user_items)].tolist() for u, user_items in enumerate(items)]
