"""Every wrong input gets a clear error or a stated rule — one test per case users met.

Each test records the case and what the user gets; `SID4LLM_BAD_INPUT_TABLE=docs/bad_inputs.md pytest
tests/test_bad_input.py` writes them as the table in docs/ (temporary paths shown as `<dir>`).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sid4llm import RecommendationPipeline, SidRecommender
from sid4llm.artifacts import ArtifactError
from sid4llm.chat.mentions import TitleIndex
from sid4llm.data import DataFormatError, process_interactions, read_generic, read_movielens
from sid4llm.data.item_embeddings import EmbeddingError, read_user_embeddings
from sid4llm.ids import SemanticIdCodebook

REPO = Path(__file__).resolve().parents[1]
EVENTS = "user_id,item_id,timestamp\n" + "".join(f"u{u},i{i},{100 * u + i}\n" for u in range(3) for i in range(6))
CASES: list[tuple[str, str]] = []


@pytest.fixture(scope="module", autouse=True)
def table():
    """Write the recorded cases as a markdown table when asked to (see the module docstring)."""
    yield
    target = os.environ.get("SID4LLM_BAD_INPUT_TABLE")
    if target:
        rows = ["| input | what the user gets |", "|---|---|"]
        rows += [f"| {case} | {outcome.replace('|', '&#124;')} |" for case, outcome in CASES]
        Path(target).write_text("# Bad inputs and what they get\n\nWritten by `SID4LLM_BAD_INPUT_TABLE=docs/bad_inputs.md "
                                "python -m pytest tests/test_bad_input.py` (one test per row).\n\n" + "\n".join(rows) + "\n")


def record(case: str, outcome: str, tmp_path: Path | None = None) -> None:
    text = " ".join(str(outcome).split())
    if tmp_path is not None:
        text = text.replace(str(tmp_path), "<dir>")
    CASES.append((case, f"`{text}`" if not text.startswith("rule:") else text))


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# ------------------------------------------------------------------------------------------ data files
def test_empty_interactions_file(tmp_path):
    with pytest.raises(DataFormatError, match=r"events\.csv: the file is empty \(0 bytes\)") as err:
        read_generic(write(tmp_path / "events.csv", ""))
    record("0-byte interactions file", err.value, tmp_path)


def test_header_only_interactions_file(tmp_path):
    with pytest.raises(DataFormatError, match=r"no rows \(only the header \['user_id', 'item_id', 'timestamp'\]\)") as err:
        read_generic(write(tmp_path / "events.csv", "user_id,item_id,timestamp\n"))
    record("interactions file with a header and no rows", err.value, tmp_path)


def test_semicolon_delimited_interactions_are_read(tmp_path):
    raw = read_generic(write(tmp_path / "events.csv", EVENTS.replace(",", ";")))
    assert len(raw.interactions) == 18 and raw.interactions["item_id"].iloc[1] == "i1"
    record("semicolon-delimited interactions file", "rule: the delimiter (`,` tab `;` `|`) is detected from the file")


def test_semicolon_delimited_and_empty_item_files(tmp_path):
    events = write(tmp_path / "events.csv", EVENTS)
    raw = read_generic(events, write(tmp_path / "items.csv", "item_id;title\ni0;Alpha\ni1;Beta\n"))
    assert raw.items.set_index("item_id")["title"].to_dict() == {"i0": "Alpha", "i1": "Beta"}
    with pytest.raises(DataFormatError, match=r"items\.csv: the file is empty") as err:
        read_generic(events, write(tmp_path / "items.csv", ""))
    record("semicolon-delimited item file", "rule: read like the interactions file (delimiter detected)")
    record("empty item file", err.value, tmp_path)


def test_a_one_column_header_hints_at_the_delimiter(tmp_path):
    with pytest.raises(DataFormatError, match="the header is one column: is the file delimited by something other than") as err:
        read_generic(write(tmp_path / "events.csv", "userId:movieId:rating\n1:2:3\n"))
    record("interactions file with an unknown delimiter (`:`)", err.value, tmp_path)


def test_ambiguous_day_first_dates_need_a_format(tmp_path):
    path = write(tmp_path / "events.csv", "user,item,time\nu,a,14/12/2009 02:52\nu,b,03/12/2009 10:00\n")
    with pytest.raises(DataFormatError, match=r"line 3: ambiguous date '03/12/2009 10:00' \(month-first 2009-03-12, "
                                              r"day-first 2009-12-03\); pass --timestamp_format") as err:
        read_generic(path)
    raw = read_generic(path, timestamp_format="%d/%m/%Y %H:%M")
    assert pd.to_datetime(raw.interactions["timestamp"], unit="s").dt.strftime("%Y-%m-%d").tolist() == [
        "2009-12-14", "2009-12-03"]
    iso = read_generic(write(tmp_path / "iso.csv", "user,item,time\nu,a,2009-12-03\nu,b,2009-12-14\n"))
    assert iso.interactions["timestamp"].is_monotonic_increasing  # ISO dates have one reading
    record("day-first dates (`14/12/2009 02:52`, `03/12/2009 10:00`)", err.value, tmp_path)


def test_dates_that_read_one_way_only_need_no_format(tmp_path):
    raw = read_generic(write(tmp_path / "events.csv", "user,item,time\nu,a,13/12/2009\nu,b,31/12/2009\n"))
    assert pd.to_datetime(raw.interactions["timestamp"], unit="s").dt.day.tolist() == [13, 31]
    record("day-first dates that read one way only (`13/12/2009`)", "rule: accepted, parsed day-first")


def test_missing_and_blank_titles_are_counted_and_warned(tmp_path, caplog):
    events = write(tmp_path / "events.csv", EVENTS)
    items = tmp_path / "items.parquet"
    pd.DataFrame({"item_id": [f"i{i}" for i in range(6)], "title": ["A", None, "", "  ", "E", np.nan]}).to_parquet(items)
    raw = read_generic(events, items)
    assert "nan" not in raw.items["title"].tolist()
    with caplog.at_level("WARNING"):
        stats = process_interactions(raw, user_core=1, item_core=1).stats
    assert stats["items_without_title"] == 4
    assert "4 of 6 items have no title" in caplog.text
    record("item file with NaN / blank titles", "rule: counted as `items_without_title` in stats.json, with a warning; "
           "those items are embedded from their other fields")


def test_items_without_interactions_are_dropped_and_counted_in_every_format(tmp_path):
    events = write(tmp_path / "events.csv", EVENTS)
    generic = read_generic(events, write(tmp_path / "items.csv", "item_id,title\ni0,A\nzz,Unknown\nyy,Other\n"))
    stats = process_interactions(generic, user_core=1, item_core=1).stats
    assert stats["item_rows_without_interactions_dropped"] == 2 and stats["n_items"] == 6

    ml = tmp_path / "ml"
    ml.mkdir()
    write(ml / "ratings.dat", "".join(f"{u}::{i}::5::{100 * u + i}\n" for u in range(1, 4) for i in range(1, 7)))
    write(ml / "movies.dat", "".join(f"{i}::Movie {i} (1999)::Drama\n" for i in range(1, 9)))
    stats = process_interactions(read_movielens(ml), user_core=1, item_core=1).stats
    assert stats["item_rows_without_interactions_dropped"] == 2

    with pytest.raises(DataFormatError, match="none of its 2 items") as err:
        read_generic(events, write(tmp_path / "other.csv", "item_id,title\nzz,A\nyy,B\n"))
    record("item file listing items with no interactions (any format)",
           "rule: dropped and counted as `item_rows_without_interactions_dropped` in stats.json")
    record("item file whose items match no interaction at all", err.value, tmp_path)


def test_genres_and_category_columns_are_categories(tmp_path):
    events = write(tmp_path / "events.csv", EVENTS)
    raw = read_generic(events, write(tmp_path / "items.csv", "item_id,title,year,genres\ni0,Toy Story,1995,"
                                                            "Adventure|Animation\ni1,Heat,1995,Crime\n"))
    row = raw.items.set_index("item_id").loc["i0"]
    assert row["categories"] == ["Adventure", "Animation"] and "Adventure" not in row["description"]
    single = read_generic(events, write(tmp_path / "items2.csv", "item_id,title,category\ni0,A,Drama\n"))
    assert single.items["categories"].iloc[0] == ["Drama"]
    record("`genres` (or `genre`, `category`) column in a generic item file",
           "rule: taken as the categories (split on `|` `;` `,`), not as free text")


def test_the_item_file_has_its_own_id_column_flag(tmp_path):
    events = write(tmp_path / "events.csv", "userId,movieId,timestamp\n" + "".join(
        f"{u},{i},{100 * u + i}\n" for u in range(3) for i in range(4)))
    items = write(tmp_path / "items.csv", "code,title\n0,Alpha\n1,Beta\n")
    with pytest.raises(DataFormatError, match="name it with --item_id_column") as err:
        read_generic(events, items)
    raw = read_generic(events, items, item_id_column="code")  # the interactions' movieId is still detected
    assert raw.items["item_id"].tolist() == ["0", "1"]
    record("item file whose id column is not detected", err.value, tmp_path)


# ------------------------------------------------------------------------------------------ embeddings
def test_ragged_or_missing_parquet_embeddings_name_the_row(tmp_path):
    path = tmp_path / "emb.parquet"
    pd.DataFrame({"item_id": ["a", "b", "c"], "embedding": [[1.0, 0.0], [0.0, 1.0, 0.0], [1.0, 1.0]]}).to_parquet(path)
    with pytest.raises(EmbeddingError, match=r"row 1 \(item 'b'\): embedding of length 3, but the first row has 2") as err:
        read_user_embeddings(path, ["a", "b", "c"])
    record("parquet embeddings with a ragged row", err.value, tmp_path)
    pd.DataFrame({"item_id": ["a", "b"], "embedding": [[1.0, 0.0], None]}).to_parquet(path)
    with pytest.raises(EmbeddingError, match=r"row 1 \(item 'b'\): no embedding"):
        read_user_embeddings(path, ["a", "b"])


@pytest.mark.slow  # a subprocess end to end
def test_command_line_errors_are_one_line_and_debug_shows_the_traceback(tmp_path, tiny_encoder_dir):
    events = write(tmp_path / "events.csv", EVENTS)
    emb = tmp_path / "emb.parquet"
    pd.DataFrame({"item_id": [f"i{i}" for i in range(6)],
                  "embedding": [[1.0, 0.0]] * 5 + [[np.nan, 0.0]]}).to_parquet(emb)
    cmd = [sys.executable, str(REPO / "recipes" / "prepare_data.py"), "--dataset", str(events), "--output_dir",
           str(tmp_path / "out"), "--embeddings", str(emb), "--user_core", "1", "--item_core", "1"]
    result = subprocess.run(cmd, capture_output=True, text=True)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    message = result.stderr.strip().splitlines()[-1]
    assert message.startswith("error: ") and "emb.parquet" in message
    assert not (tmp_path / "out").exists()  # nothing half-written
    debug = subprocess.run(cmd + ["--debug"], capture_output=True, text=True)
    assert debug.returncode == 1 and "Traceback" in debug.stderr
    record("an expected error in a command, e.g. an `EmbeddingError` (NaN row) in `prepare_data.py`: one line on "
           "stderr, exit status 1, no traceback (`--debug` shows it)", message, tmp_path)


# ------------------------------------------------------------------------------------------ Python API
def test_a_bare_string_is_one_title(trained_dir):
    pipe = RecommendationPipeline.from_pretrained(trained_dir)
    title = pipe.codebook.titles[3]
    assert [r["index"] for r in pipe.recommend(title, k=3)] == [r["index"] for r in pipe.recommend([title], k=3)]
    record('`pipe.recommend("Seo")` (a string, not a list)', "rule: a bare string is one title (fuzzy-matched), "
           "never a list of letters")


def test_ints_in_a_history_are_item_ids_as_in_the_data():
    titles = ["Toy Story (1995)", "Jumanji (1995)", "Heat (1995)", "Sabrina (1995)"]
    index = TitleIndex(titles, [9, 5, 7, 3], item_ids=["1", "2", "6", "7"])
    assert index.resolve([1, 6]) == ([0, 2], [])  # Toy Story and Heat, not rows 1 and 6
    assert index.resolve(["1", 6]) == ([0, 2], [])
    assert index.resolve([3]) == ([], ["3"])  # no item "3": an error at the pipeline, never a row number
    record("`pipe.recommend([1, 6])` (item ids as Python ints)", "rule: ints and strings are both item ids as in the "
           "data; codebook indices only with `by_index=True`")


def test_k_and_indices_are_validated(trained_dir):
    pipe = RecommendationPipeline.from_pretrained(trained_dir)
    with pytest.raises(ValueError, match="k must be a positive number of items, got -1") as err_k:
        pipe.recommend([pipe.codebook.titles[0]], k=-1)
    n = len(pipe.codebook)
    with pytest.raises(ValueError, match=rf"codebook indices must be integers in \[0, {n}\), got \[{n + 5}\]") as err_i:
        pipe.recommend([0, n + 5], by_index=True)
    assert len(pipe.recommend([0, 1], k=2, by_index=True)) == 2
    with pytest.raises(ValueError, match="out of range"):
        pipe.recommender.recommend([[n + 5]], k=2)
    with pytest.raises(KeyError, match="no catalogue item matches"):
        pipe.recommend([123456])
    record("`k=-1`", err_k.value)
    record("an index out of range (`by_index=True`)", err_i.value)


# ------------------------------------------------------------------------------------------ saved artefacts
@pytest.fixture
def saved_copy(trained_dir, tmp_path) -> Path:
    target = tmp_path / "model"
    shutil.copytree(trained_dir, target)
    return target


def test_corrupted_json_files_are_named(trained_dir, saved_copy, tmp_path):
    (saved_copy / "codebook" / "codebook_config.json").write_text('{"id_method": ')
    with pytest.raises(ArtifactError, match=r"codebook_config\.json: not valid JSON") as err:
        SidRecommender.from_pretrained(saved_copy)
    record("corrupted codebook JSON", err.value, tmp_path)
    shutil.copytree(Path(trained_dir) / "codebook", saved_copy / "codebook", dirs_exist_ok=True)
    (saved_copy / "generation_config.json").write_text("[1, 2")
    with pytest.raises(ArtifactError, match=r"generation_config\.json: cannot be loaded"):
        SidRecommender.from_pretrained(saved_copy)
    (saved_copy / "sid4llm_config.json").write_text("{oops")
    with pytest.raises(ArtifactError, match=r"sid4llm_config\.json: not valid JSON") as err:
        SidRecommender.from_pretrained(saved_copy)
    record("corrupted `sid4llm_config.json`", err.value, tmp_path)


def test_a_broken_metrics_file_never_blocks_loading(trained_dir, tmp_path, caplog):
    folder = Path(shutil.copytree(Path(trained_dir) / "codebook", tmp_path / "codebook"))
    (folder / "metrics.json").write_text("{not json")
    with caplog.at_level("WARNING"):
        codebook = SemanticIdCodebook.from_pretrained(folder)
    assert codebook.metrics == {} and "metrics.json: not valid JSON" in caplog.text
    record("broken `metrics.json` (optional)", "rule: loads without it, with a warning naming the file")


def test_codebook_without_its_method_or_with_truncated_codes(trained_dir, tmp_path):
    folder = Path(shutil.copytree(Path(trained_dir) / "codebook", tmp_path / "codebook"))
    config = json.loads((folder / "codebook_config.json").read_text())
    (folder / "codebook_config.json").write_text(json.dumps({k: v for k, v in config.items() if k != "id_method"}))
    with pytest.raises(ArtifactError, match=r"codebook_config\.json: missing key\(s\) \['id_method'\]") as err:
        SemanticIdCodebook.from_pretrained(folder)
    record("codebook without `id_method`", err.value, tmp_path)
    (folder / "codebook_config.json").write_text(json.dumps(config))
    data = (folder / "codes.safetensors").read_bytes()
    (folder / "codes.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ArtifactError, match=r"codes\.safetensors: cannot be read as safetensors") as err:
        SemanticIdCodebook.from_pretrained(folder)
    record("truncated `codes.safetensors`", err.value, tmp_path)


def test_a_codebook_config_from_another_version_is_refused(trained_dir, tmp_path):
    folder = Path(shutil.copytree(Path(trained_dir) / "codebook", tmp_path / "codebook"))
    config = json.loads((folder / "codebook_config.json").read_text())
    method = dict(config["id_method"])
    method["code_dim"] = method.pop("hidden_dim")  # a field renamed by another version
    (folder / "codebook_config.json").write_text(json.dumps(dict(config, id_method=method)))
    with pytest.raises(ArtifactError, match=r"codebook_config\.json: 'id_method' \w+Config: unknown field\(s\) "
                                            r"\['code_dim'\]; missing field\(s\) \['hidden_dim'\]") as err:
        SemanticIdCodebook.from_pretrained(folder)
    record("codebook config with a renamed `id_method` field", err.value, tmp_path)


def test_a_recommender_without_its_id_token_pin_is_refused(saved_copy, tmp_path):
    (saved_copy / "sid_vocabulary.json").unlink()
    with pytest.raises(ArtifactError, match=r"sid_vocabulary\.json: file missing\. It pins the tokenizer's ID tokens") as err:
        SidRecommender.from_pretrained(saved_copy)
    record("saved recommender with `sid_vocabulary.json` deleted", err.value, tmp_path)


def test_saved_prompt_settings_must_match_this_version(saved_copy, tmp_path):
    config_file = saved_copy / "sid4llm_config.json"
    config = json.loads(config_file.read_text())
    renamed = dict(config, prompt={("history_budget" if k == "history_token_budget" else k): v
                                   for k, v in config["prompt"].items()})
    config_file.write_text(json.dumps(renamed))
    with pytest.raises(ArtifactError, match=r"prompt has unknown key\(s\) \['history_budget'\] and missing key\(s\) "
                                            r"\['history_token_budget'\]") as err:
        SidRecommender.from_pretrained(saved_copy)
    record("saved `prompt` with a renamed field", err.value, tmp_path)


def test_saved_decoding_settings_are_checked(saved_copy, tmp_path):
    config_file = saved_copy / "sid4llm_config.json"
    config = json.loads(config_file.read_text())
    config_file.write_text(json.dumps(dict(config, decoding={**config["decoding"], "num_beams": 0})))
    with pytest.raises(ArtifactError, match=r"decoding: num_beams must be >= 1, got 0") as err:
        SidRecommender.from_pretrained(saved_copy)
    record("saved `decoding` with zero beams", err.value, tmp_path)


def test_a_pin_that_disagrees_with_the_tokenizer_is_refused(saved_copy):
    record_file = saved_copy / "sid_vocabulary.json"
    pin = json.loads(record_file.read_text())
    pin["id_token_ids"] = pin["id_token_ids"][::-1]
    record_file.write_text(json.dumps(pin))
    with pytest.raises(ArtifactError, match="other token ids than when the model was saved"):
        SidRecommender.from_pretrained(saved_copy)


def test_an_unknown_setting_in_the_saved_config_is_named(saved_copy, tmp_path):
    config_file = saved_copy / "sid4llm_config.json"
    config_file.write_text(json.dumps({**json.loads(config_file.read_text()), "lerning_rate": 0.1}))
    with pytest.raises(ArtifactError, match=r"sid4llm_config\.json: unknown key\(s\) \['lerning_rate'\]") as err:
        SidRecommender.from_pretrained(saved_copy)
    record("saved config with an unknown key", err.value, tmp_path)


def _as_format_5(config: dict) -> dict:
    """The file a model saved by format 5 had: model and task arguments whole (training-only knobs among them),
    the training settings beside them, and no prompt, decoding or profile sections."""
    record = config["training"]
    model_args = {**record["model"], "id_softmax": True, "trie_softmax": config["trie_softmax"], "item_memory_dropout": 0.0}
    task_args = {**record["tasks"], "stream_item_dropout": 0.0, "stream_tie_shuffle": False,
                 "request_item_nouns": ["movie", "film"]}
    return {"format_version": 5, "base_model": config["base_model"], "model_args": model_args, "task_args": task_args,
            "peft": config["peft"], "from_scratch": config["from_scratch"], "training_settings": record["training"],
            "data_dir": config["data_dir"], "dataset": config["dataset"], "dataset_stats": config["dataset_stats"],
            "trained_items": config["trained_items"]}


def test_a_model_saved_in_format_5_loads_and_recommends_as_before(saved_copy):
    """Models saved before the inference config was split from the training settings still load: the same
    prompts, softmax, beams and recommendations; those versions spoke of movies, so they get MovieLens's words."""
    config_file = saved_copy / "sid4llm_config.json"
    current = SidRecommender.from_pretrained(saved_copy)
    config_file.write_text(json.dumps(_as_format_5(json.loads(config_file.read_text()))))
    old = SidRecommender.from_pretrained(saved_copy)
    assert old.config.prompt == current.config.prompt and old.config.trie_softmax == current.config.trie_softmax
    assert old.config.decoding.num_beams == current.generation_config.num_beams
    assert old.config.profile.item_noun == "movie" and old.config.training["training"]
    histories = [[0, 1, 2], [3, 4]]
    assert old.recommend(histories, k=3) == current.recommend(histories, k=3)


def test_a_format_5_model_named_other_items_keeps_its_nouns(saved_copy):
    config_file = saved_copy / "sid4llm_config.json"
    config = _as_format_5(json.loads(config_file.read_text()))
    config["task_args"]["request_item_nouns"] = ["book", "novel"]
    config_file.write_text(json.dumps(config))
    profile = SidRecommender.from_pretrained(saved_copy).config.profile
    assert profile.item_noun == "book" and profile.nouns == ["book", "novel"]


def test_a_config_saved_before_results_moved_out_still_loads(saved_copy):
    """Format 0: results mixed into sid4llm_config.json and tasks as one comma-separated string."""
    config_file, results_file = saved_copy / "sid4llm_config.json", saved_copy / "results.json"
    config, results = _as_format_5(json.loads(config_file.read_text())), json.loads(results_file.read_text())
    del config["format_version"]
    config["task_args"]["tasks"] = ",".join(config["task_args"]["tasks"])
    legacy = {k: results[k] for k in ("metrics", "example_stats")}  # what configs held before format 1
    config_file.write_text(json.dumps({**config, **legacy}))
    results_file.unlink()
    rec = SidRecommender.from_pretrained(saved_copy)
    assert rec.config.prompt.tasks == config["task_args"]["tasks"].split(",")
    assert rec.results["metrics"] == results["metrics"]


def test_a_config_saved_before_trie_softmax_decodes_as_it_was_trained(saved_copy):
    """Format 2 had no trie_softmax nor item memory tokens: such a model was trained over all ID tokens, without
    memory tokens, and decodes that way."""
    config_file = saved_copy / "sid4llm_config.json"
    config = _as_format_5(json.loads(config_file.read_text()))
    for key in ("trie_softmax", "item_memory_tokens", "item_memory_dropout"):
        del config["model_args"][key]
    config_file.write_text(json.dumps({**config, "format_version": 2}))
    rec = SidRecommender.from_pretrained(saved_copy)
    assert rec.config.trie_softmax is False and rec.decoder.trie_softmax is False
    assert rec.config.item_memory_tokens is False


