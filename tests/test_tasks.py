"""Training examples (sid4llm.lm.tasks): whole-history ID streams cut to the token budget, every history item a target,
no valid/test event in training, text tasks, and packing without cross-user attention."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM

from sid4llm.data import PreparedData
from sid4llm.lm.embedding_init import init_id_embeddings
from sid4llm.lm.tasks import (
    IGNORE_INDEX,
    ExampleBuilder,
    TaskArguments,
    budget_history,
    build_segments,
    stream_tie_groups,
    stream_windows,
)
from sid4llm.training import SidTrainingConfig
from sid4llm.training.packing import PackedCollator, pack_segments

REPO = Path(__file__).resolve().parents[1]


def _stream_items(vocab, ids) -> list[int]:
    items, span = [], []
    for t in ids[1:]:  # after the user-start token
        span.append(t)
        if t == vocab.end_id:
            items.append(vocab.parse_stream_item(span))
            span = []
    return items



def test_history_is_cut_to_the_token_budget_counting_what_the_model_reads(vocab):
    history = list(range(12))
    cost = {i: len(vocab.codebook.sequences[i]) + 1 for i in history}  # codes + end marker
    kept = budget_history(history, vocab, token_budget=12, max_items=100)
    assert kept == history[-len(kept):] and 1 + sum(cost[i] for i in kept) <= 12  # + the user-start token
    assert 1 + sum(cost[i] for i in history[-len(kept) - 1:]) > 12  # one more item would not fit
    assert len(vocab.stream_token_ids(kept)) == 1 + sum(cost[i] for i in kept)
    assert budget_history(history, vocab, None, max_items=3) == [9, 10, 11]


@pytest.mark.parametrize("costs,limit", [([2] * 5, 40), ([3, 2, 4, 2, 3, 3, 2, 4, 2, 2, 3], 9), ([1] * 30, 7)])
def test_stream_windows_make_every_item_a_target_exactly_once(costs, limit):
    windows = stream_windows(costs, limit, context_fraction=0.5)
    targets = [i for _, first, end in windows for i in range(first, end)]
    assert targets == list(range(len(costs)))
    for start, first, end in windows:
        assert 1 + sum(costs[start:end]) <= limit
        assert start <= first < end
        if start > 0:
            assert first > start  # a window that cuts into the history keeps context before its targets


def test_whole_history_training_targets_every_train_item(vocab, tiny_prepared):
    data = PreparedData.load(tiny_prepared["data_dir"])
    args = TaskArguments(tasks=["sequential"], history_token_budget=14)  # short windows: several per user
    segments = build_segments(data, vocab, args, "train")
    train = data.sequences["train"]
    by_user: dict[int, list[int]] = {}
    for user, targets, labels in zip(segments["user_idx"], segments["targets"], segments["labels"]):
        by_user.setdefault(user, []).extend(targets)
        scored = [t for t in labels if t != IGNORE_INDEX]
        assert scored == [t for i in targets for t in vocab.stream_item_token_ids(i)]  # loss on every target's tokens
    for user, (history, target) in enumerate(zip(train["history"], train["target"])):
        assert by_user[user] == history + [target]  # every train event, in order, once
    assert max(len(x) for x in segments["input_ids"]) <= 14 + max(vocab.id_token_count(i) for i in range(len(vocab.codebook)))


def test_last_item_targets_stay_available(vocab, tiny_prepared):
    data = PreparedData.load(tiny_prepared["data_dir"])
    args = TaskArguments(tasks=["sequential"], sequential_targets="last", windows_per_user=1)
    segments = build_segments(data, vocab, args, "train")
    train = data.sequences["train"]
    assert list(segments["targets"]) == [[t] for t in train["target"]]
    for ex in segments:
        answer = [t for t in ex["labels"] if t != IGNORE_INDEX]
        assert answer == vocab.stream_item_token_ids(ex["targets"][0])
        assert ex["labels"][-len(answer):] == answer


def test_training_examples_never_contain_valid_or_test_events(vocab, tiny_prepared):
    data = PreparedData.load(tiny_prepared["data_dir"])
    train = data.sequences["train"]
    for args in (TaskArguments(tasks=["sequential"], history_token_budget=14),
                 TaskArguments(tasks=["sequential", "natural_language"], sequential_targets="last", windows_per_user=100)):
        segments = build_segments(data, vocab, args, "train")
        for task, user, ids in zip(segments["task"], segments["user_idx"], segments["input_ids"]):
            sequence = train[user]["history"] + [train[user]["target"]]
            if task == "sequential":  # the stream's items are a contiguous run of the train sequence
                items = _stream_items(vocab, ids)
                assert any(sequence[s:s + len(items)] == items for s in range(len(sequence)))
    held_out = {(u, t) for split in ("valid", "test") for u, t in
                zip(data.sequences[split]["user_idx"], data.sequences[split]["target_timestamp"])}
    train_events = {(u, ts) for u, h, t in zip(train["user_idx"], train["history_timestamps"], train["target_timestamp"])
                    for ts in [*h, t]}
    assert not held_out & train_events


def test_text_tasks_use_the_chat_template_and_the_answer_only_loss(vocab, tiny_prepared):
    data = PreparedData.load(tiny_prepared["data_dir"])
    args = TaskArguments(tasks=["natural_language"], windows_per_user=1)
    ex = build_segments(data, vocab, args, "train")[0]
    answer = [t for t in ex["labels"] if t != IGNORE_INDEX]
    assert vocab.parse_token_ids(answer) == ex["targets"]
    assert ex["labels"][: len(ex["labels"]) - len(answer)] == [IGNORE_INDEX] * (len(ex["labels"]) - len(answer))
    assert vocab.tokenizer.decode(ex["input_ids"]).count("<|im_start|>assistant") == 1


def test_natural_language_prompts_name_the_most_recent_items_only(vocab, tiny_prepared):
    data = PreparedData.load(tiny_prepared["data_dir"])
    titles = list(data.items["title"])
    for limit in (None, 2):
        ex = build_segments(data, vocab, TaskArguments(tasks=["natural_language"], windows_per_user=1,
                                                       text_history_items=limit), "train")[0]
        text = vocab.tokenizer.decode(ex["input_ids"])
        history = data.sequences["train"]["history"][ex["user_idx"]]
        user_train = history + [data.sequences["train"]["target"][ex["user_idx"]]]
        before = user_train[: user_train.index(ex["targets"][0])]
        named = [i for i in before if titles[i] in text]
        assert named == (before[-limit:] if limit else before)


def test_packing_never_lets_one_user_attend_to_another(tiny_lm_dir, vocab, tiny_prepared):

    data = PreparedData.load(tiny_prepared["data_dir"])
    segments = build_segments(data, vocab, TaskArguments(tasks=["sequential"]), "train")
    packed = pack_segments(segments, max_seq_length=64)
    assert sum(len(r) for r in packed["input_ids"]) == sum(len(s) for s in segments["input_ids"])
    row = max(range(len(packed)), key=lambda r: sum(p == 0 for p in packed[r]["position_ids"]))
    starts = [i for i, p in enumerate(packed[row]["position_ids"]) if p == 0] + [len(packed[row]["input_ids"])]
    assert len(starts) >= 3  # several users share this row
    model = AutoModelForCausalLM.from_pretrained(tiny_lm_dir)
    init_id_embeddings(model, vocab, "random")
    batch = PackedCollator(vocab.tokenizer.pad_token_id)([packed[row]])
    with torch.no_grad():
        together = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits[0]
        for a, b in zip(starts[:-1], starts[1:]):
            alone = model(input_ids=batch["input_ids"][:, a:b], use_cache=False).logits[0]
            torch.testing.assert_close(together[a:b], alone, rtol=1e-4, atol=1e-4)


def _item_spans(vocab, ids: list[int], labels: list[int]) -> list[tuple[int, list[int]]]:
    """(item, its labels) for each item of an ID stream (after the user-start token)."""
    spans, at = [], 1
    for item in _stream_items(vocab, ids):
        width = vocab.id_token_count(item)
        spans.append((item, labels[at:at + width]))
        at += width
    return spans


def test_item_dropout_skips_whole_items_of_id_streams_afresh_every_batch(vocab, tiny_prepared):
    """``stream_item_dropout`` p: each item of a whole-history stream leaves the batch with probability p — codes,
    end marker and labels together, positions closed up — so the rest reads as a history with that item skipped;
    text segments stay whole, and evaluation (``without_augmentation``) reads rows as they are."""
    data = PreparedData.load(tiny_prepared["data_dir"])
    stream = build_segments(data, vocab, TaskArguments(tasks=["sequential"], history_token_budget=40), "train")[0]
    text = {"input_ids": [5, 6, 7, 8], "labels": [IGNORE_INDEX, IGNORE_INDEX, 7, 8], "position_ids": [0, 1, 2, 3]}
    row = {"input_ids": stream["input_ids"] + text["input_ids"], "labels": stream["labels"] + text["labels"],
           "position_ids": list(range(len(stream["input_ids"]))) + text["position_ids"]}
    original = _item_spans(vocab, stream["input_ids"], stream["labels"])
    assert len(original) >= 4

    collate = PackedCollator(vocab.tokenizer.pad_token_id, end_id=vocab.end_id, item_dropout=0.5, user_id=vocab.user_id)
    kept_total, draws = 0, set()
    for _ in range(40):
        batch = collate([row])
        ids, labels, positions = (batch[k][0].tolist() for k in ("input_ids", "labels", "position_ids"))
        n = len(ids) - 4
        assert ids[n:] == text["input_ids"] and labels[n:] == text["labels"] and positions[n:] == [0, 1, 2, 3]
        assert ids[0] == vocab.user_id and positions[:n] == list(range(n))  # one segment, positions closed up
        kept = _item_spans(vocab, ids[:n], labels[:n])
        assert kept == [span for span in original if span in kept]  # whole items with their own labels, in order
        kept_total += len(kept)
        draws.add(tuple(item for item, _ in kept))
    assert 0.3 < kept_total / (40 * len(original)) < 0.7 and len(draws) > 10  # about half, a new draw every batch

    plain = collate.without_augmentation()([row])
    assert plain["input_ids"][0].tolist() == row["input_ids"] and plain["labels"][0].tolist() == row["labels"]
    with pytest.raises(ValueError, match="stream_item_dropout must be in"):
        SidTrainingConfig(output_dir="unused", stream_item_dropout=1.0)


def test_tie_shuffle_reorders_only_items_that_share_a_timestamp_afresh_every_batch(vocab, tiny_prepared):
    """``stream_tie_shuffle``: a user's items with the same timestamp (ratings saved in one go) are read in a new
    random order every batch, each with its own codes and labels; an item with a timestamp of its own keeps its
    place, items never cross into the next user's segment, and evaluation reads rows as they are."""
    items = [3, 7, 1, 4, 9, 2, 5, 8]
    times = [10, 20, 20, 20, 30, 40, 40, 50]  # ties: items 7, 1, 4 and items 2, 5
    builder = ExampleBuilder(vocab, [str(i) for i in range(len(vocab.codebook))], TaskArguments())
    first = builder.stream_segment(items, first_target=3)
    first["tie_groups"] = stream_tie_groups(vocab, items, times)
    second = builder.stream_segment([6, 0], first_target=0)
    second["tie_groups"] = stream_tie_groups(vocab, [6, 0], [60, 60])  # the next user: a tie of its own
    segments = Dataset.from_list([first, second])
    row = pack_segments(segments, max_seq_length=200)[0]
    n = len(first["input_ids"])
    original = _item_spans(vocab, first["input_ids"], first["labels"])

    collate = PackedCollator(vocab.tokenizer.pad_token_id, end_id=vocab.end_id, tie_shuffle=True)
    orders = set()
    for _ in range(30):
        batch = collate([row])
        ids, labels, positions = (batch[k][0].tolist() for k in ("input_ids", "labels", "position_ids"))
        assert set(batch) == {"input_ids", "labels", "position_ids"} and positions == row["position_ids"]
        spans = _item_spans(vocab, ids[:n], labels[:n])
        assert sorted(spans) == sorted(original)  # the same items, each with its own labels
        read = [item for item, _ in spans]
        assert (read[0], read[4], read[7]) == (3, 9, 8)  # timestamps of their own: in place
        assert set(read[1:4]) == {7, 1, 4} and set(read[5:7]) == {2, 5}
        assert sorted(_stream_items(vocab, ids[n:])) == [0, 6] and ids[n] == vocab.user_id
        orders.add(tuple(read))
    assert len(orders) > 6  # 3! x 2! x 2! = 24 orders possible; a new draw every batch

    plain = collate.without_augmentation()([row])
    assert plain["input_ids"][0].tolist() == row["input_ids"]


def test_tie_groups_follow_the_timestamps_of_each_training_stream(vocab, tiny_prepared):
    """Training streams carry their tie groups, one per token, only when asked; packing keeps them."""
    data = PreparedData.load(tiny_prepared["data_dir"])
    assert "tie_groups" not in build_segments(data, vocab, TaskArguments(tasks=["sequential"]), "train").column_names
    segments = build_segments(data, vocab, TaskArguments(tasks=["sequential"]), "train", tie_groups=True)
    assert all(len(g) == len(i) for g, i in zip(segments["tie_groups"], segments["input_ids"]))
    assert "tie_groups" in pack_segments(segments, 512).column_names
    assert stream_tie_groups(vocab, [1, 2, 3], [5, 5, 6])[0] == -1  # the user-start token
    with pytest.raises(ValueError, match="3 items but 2 timestamps"):
        stream_tie_groups(vocab, [1, 2, 3], [5, 6])
