"""Each reader on small files written in its real format, and the errors bad files get."""

from __future__ import annotations

import gzip
import json

import pandas as pd
import pytest
from conftest import make_events

from sid4llm.data import (
    DataFormatError,
    load_raw,
    read_amazon,
    read_amazon2023,
    read_generic,
    read_movielens,
    read_recbole_atomic,
)


def _write(path, text, encoding="utf-8"):
    path.write_bytes(text.encode(encoding))
    return path


def test_movielens_100k_reads_ratings_titles_and_genre_flags(tmp_path):
    _write(tmp_path / "u.data", "196\t242\t3\t881250949\n186\t302\t3\t891717742\n")
    flags_242 = "|".join(["0"] * 3 + ["1"] + ["0"] * 15)  # Animation
    flags_302 = "|".join(["0"] * 6 + ["1"] + ["0"] * 9 + ["1"] + ["0"] * 2)  # Crime, Thriller
    _write(tmp_path / "u.item",
           f"242|Kolya (1996)|24-Jan-1997||http://x|{flags_242}\n"
           f"302|Usual Suspects, The (1995)|14-Aug-1995||http://x|{flags_302}\n", "latin-1")
    raw = read_movielens(tmp_path)
    assert raw.interactions[["user_id", "item_id", "timestamp"]].values.tolist() == [
        ["196", "242", 881250949], ["186", "302", 891717742]]
    items = raw.items.set_index("item_id")
    assert items.loc["302", "title"] == "The Usual Suspects (1995)"
    assert items.loc["302", "categories"] == ["Crime", "Thriller"]
    assert items.loc["242", "categories"] == ["Animation"]


def test_movielens_1m_dat_files_use_double_colons_and_latin1(tmp_path):
    _write(tmp_path / "ratings.dat", "1::1193::5::978300760\n1::661::3::978302109\n")
    _write(tmp_path / "movies.dat", "1193::One Flew Over the Cuckoo's Nest (1975)::Drama\n"
           "661::James and the Giant Peach (1996)::Animation|Children's|Musical\n", "latin-1")
    raw = read_movielens(tmp_path)
    assert raw.source == "movielens-1m"
    assert raw.interactions["item_id"].tolist() == ["1193", "661"]
    assert raw.items.set_index("item_id").loc["661", "categories"] == ["Animation", "Children's", "Musical"]


def test_movielens_latest_csv(tmp_path):
    _write(tmp_path / "ratings.csv", "userId,movieId,rating,timestamp\n1,1,4.0,964982703\n1,3,4.0,964981247\n")
    _write(tmp_path / "movies.csv", 'movieId,title,genres\n1,Toy Story (1995),Adventure|Animation\n'
           '3,"Grumpier Old Men, The (1995)",(no genres listed)\n')
    raw = read_movielens(tmp_path)
    items = raw.items.set_index("item_id")
    assert items.loc["3", "title"] == "The Grumpier Old Men (1995)"
    assert items.loc["3", "categories"] == []
    assert raw.interactions["rating"].tolist() == [4.0, 4.0]


def test_recbole_atomic_files_keep_quotes_verbatim(tmp_path):
    _write(tmp_path / "toy.inter", "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
           'u1\t"Great" Movie (1990)\t5\t978300760\n')
    _write(tmp_path / "toy.item", "item_id:token\tmovie_title:token\trelease_year:float\tgenre:token\n"
           '"Great" Movie (1990)\t"Great" Movie\t1990\tComedy Drama\n')
    raw = load_raw(str(tmp_path))
    assert raw.interactions["item_id"].tolist() == ['"Great" Movie (1990)']
    assert raw.items.iloc[0]["title"] == '"Great" Movie (1990)'
    assert raw.items.iloc[0]["categories"] == ["Comedy", "Drama"]


def test_amazon_2014_gzipped_reviews_and_python_literal_metadata(tmp_path):
    reviews = tmp_path / "reviews_Beauty_5.json.gz"
    with gzip.open(reviews, "wt") as f:
        f.write(json.dumps({"reviewerID": "A1", "asin": "B01", "overall": 5.0, "unixReviewTime": 1400000000,
                            "reviewTime": "05 13, 2014", "reviewText": "great"}) + "\n")
        f.write(json.dumps({"reviewerID": "A2", "asin": "B02", "overall": 3.0, "unixReviewTime": 1400000100}) + "\n")
    meta = tmp_path / "meta_Beauty.json.gz"
    with gzip.open(meta, "wt") as f:
        f.write(str({"asin": "B01", "title": "Lip Balm", "categories": [["Beauty", "Skin Care"], ["Beauty"]],
                     "brand": "Acme", "description": "Soft lips."}) + "\n")
        f.write(str({"asin": "B99", "title": "Never reviewed"}) + "\n")
    raw = load_raw(str(tmp_path))  # detects the format from the file names
    assert raw.interactions["user_id"].tolist() == ["A1", "A2"]
    items = raw.items.set_index("item_id")
    assert list(items.index) == ["B01"]  # metadata of unreviewed products is skipped
    assert items.loc["B01", "categories"] == ["Beauty", "Skin Care"]
    assert items.loc["B01", "brand"] == "Acme"


def test_amazon_2018_json_metadata_with_list_description(tmp_path):
    reviews = _write(tmp_path / "Toys_5.json", json.dumps(
        {"reviewerID": "A1", "asin": "T1", "overall": 4.0, "unixReviewTime": 1500000000, "verified": True}) + "\n")
    meta = _write(tmp_path / "meta_Toys.json", json.dumps(
        {"asin": "T1", "title": "Robot", "category": ["Toys & Games", "Robots"], "brand": "Bots",
         "description": ["Walks.", "Talks."], "main_cat": "Toys"}) + "\n")
    raw = read_amazon(reviews, meta)
    item = raw.items.iloc[0]
    assert (item["title"], item["categories"], item["description"]) == ("Robot", ["Toys & Games", "Robots"], "Walks. Talks.")


def test_amazon_2023_uses_parent_asin_and_millisecond_timestamps(tmp_path):
    _write(tmp_path / "All_Beauty.jsonl",
           json.dumps({"rating": 5.0, "asin": "V1", "parent_asin": "P1", "user_id": "U1", "timestamp": 1588687728923}) + "\n"
           + json.dumps({"rating": 4.0, "asin": "V2", "parent_asin": "P1", "user_id": "U2", "timestamp": 1588687729000}) + "\n")
    _write(tmp_path / "meta_All_Beauty.jsonl", json.dumps(
        {"parent_asin": "P1", "title": "Shampoo", "main_category": "All Beauty", "categories": [], "store": "Soapy",
         "features": ["Gentle"], "description": ["Cleans hair."]}) + "\n")
    raw = load_raw(str(tmp_path))
    assert raw.source == "amazon2023"
    assert raw.interactions["item_id"].tolist() == ["P1", "P1"]
    assert raw.interactions["timestamp"].tolist() == [1588687728, 1588687729]
    item = raw.items.iloc[0]
    assert (item["categories"], item["brand"], item["description"]) == (["All Beauty"], "Soapy", "Gentle Cleans hair.")


@pytest.mark.parametrize("suffix", ["csv", "parquet", "jsonl"])
def test_generic_table_with_item_text_file(tmp_path, suffix):
    events = pd.DataFrame(make_events(), columns=["user", "item", "timestamp"])
    items = pd.DataFrame({"item_id": [f"i{i}" for i in range(10)], "title": [f"Item {i}" for i in range(10)],
                          "categories": ["a|b"] * 10, "colour": ["red"] * 10})
    path = tmp_path / f"events.{suffix}"
    if suffix == "csv":
        events.to_csv(path, index=False)
    elif suffix == "parquet":
        events.to_parquet(path)
    else:
        events.to_json(path, orient="records", lines=True)
    items.to_csv(tmp_path / "items.csv", index=False)
    raw = load_raw(str(path), item_file=str(tmp_path / "items.csv"))
    assert len(raw.interactions) == len(events)
    assert raw.interactions["user_id"].iloc[0] == "u0"
    first = raw.items.set_index("item_id").loc["i3"]
    assert first["title"] == "Item 3" and first["categories"] == ["a", "b"] and "red" in first["description"]


def test_generic_date_strings_are_parsed(tmp_path):
    path = _write(tmp_path / "e.csv", "user_id,item_id,time\nu,a,2020-01-01T00:00:10Z\nu,b,2020-01-02\n")
    raw = read_generic(path)
    assert raw.interactions["timestamp"].tolist() == [1577836810, 1577923200]


def test_missing_column_error_names_file_and_columns(tmp_path):
    path = _write(tmp_path / "e.csv", "user_id,product,timestamp\nu,a,1\n")
    with pytest.raises(DataFormatError, match=r"e\.csv: no item column .*'product'"):
        read_generic(path)


def test_unparsable_timestamp_error_names_the_line(tmp_path):
    path = _write(tmp_path / "e.csv", "user_id,item_id,timestamp\nu,a,100\nu,b,200\nu,c,yesterday\n")
    with pytest.raises(DataFormatError, match=r"e\.csv, line 4: unparsable timestamp 'yesterday'"):
        read_generic(path)


def test_amazon_review_missing_field_names_the_line(tmp_path):
    path = _write(tmp_path / "x_5.json", json.dumps({"reviewerID": "A", "asin": "B", "unixReviewTime": 1}) + "\n"
                  + json.dumps({"reviewerID": "A", "unixReviewTime": 2}) + "\n")
    with pytest.raises(DataFormatError, match=r"x_5\.json, line 2: missing field 'asin'"):
        read_amazon(path)


def test_bad_json_line_is_reported(tmp_path):
    path = _write(tmp_path / "r.jsonl", '{"user_id": "U", "parent_asin": "P", "timestamp": 1}\n{oops\n')
    with pytest.raises(DataFormatError, match=r"r\.jsonl, line 2: not valid JSON"):
        read_amazon2023(path)


def test_unknown_dataset_name(tmp_path):
    with pytest.raises(DataFormatError, match="neither a bundled dataset"):
        load_raw("no-such-dataset")


def test_events_without_time_keep_each_users_order_in_the_file(tmp_path):
    """``--timestamp_column none``: a purchase log or playlist export with no time column is read in file order,
    and the leave-one-out split follows that order (the last event of a user in the file is the test item)."""
    from sid4llm.data import process_interactions

    rows = [("u1", "b3"), ("u2", "b1"), ("u1", "b1"), ("u2", "b2"), ("u1", "b2"), ("u2", "b3"), ("u1", "b4"),
            ("u2", "b4"), ("u1", "b5"), ("u2", "b5")]
    path = _write(tmp_path / "baskets.csv", "customer,book\n" + "".join(f"{u},{i}\n" for u, i in rows))
    with pytest.raises(DataFormatError, match=r"no timestamp column .*--timestamp_column none"):
        read_generic(path, user_column="customer", item_column="book")
    raw = read_generic(path, user_column="customer", item_column="book", timestamp_column="none")
    assert raw.event_order == "file"
    processed = process_interactions(raw, user_core=1, item_core=1)
    assert processed.stats["event_order"] == "file"
    items = list(processed.items["item_id"])
    test = processed.sequences["test"]
    u1 = list(test["user_id"]).index("u1")
    assert [items[i] for i in test[u1]["history"]] + [items[test[u1]["target"]]] == ["b3", "b1", "b2", "b4", "b5"]


def test_recbole_files_without_time_read_in_file_order(tmp_path):
    (tmp_path / "shop.inter").write_text("user_id:token\titem_id:token\n" + "".join(
        f"u{u}\tp{i}\n" for u in range(2) for i in (3, 1, 2)))
    raw = read_recbole_atomic(tmp_path, timestamp_column="none")
    assert raw.event_order == "file" and raw.interactions["timestamp"].is_monotonic_increasing
    with pytest.raises(DataFormatError, match=r"shop\.inter.*timestamp"):
        read_recbole_atomic(tmp_path)
