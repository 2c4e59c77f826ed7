"""Add cold-start items to a trained recommender or a codebook, without changing any existing ID.

    sid4llm add-items --model outputs/quickstart/model --items new_movies.csv --output_dir outputs/model-plus
    sid4llm add-items --model me/movie-ids --items new.jsonl --output_dir outputs/ids-plus --push_to_hub me/movie-ids

The items file (CSV, TSV, JSON lines or Parquet) needs ``item_id`` and ``title``; other columns
(``categories``, ``brand``, ``description``) enter the item text as in sid4llm prepare-data. Texts are
embedded with ``--encoder`` (use the one the catalogue was embedded with; default: the bundled
all-MiniLM-L6-v2) and encoded into IDs by the codebook's saved ID encoder.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..cli import run_command
from ..data import DataFormatError, read_item_file
from ..data.item_embeddings import encode_texts, item_text
from ..ids import SemanticIdCodebook
from ..pipeline import RecommendationPipeline


@dataclass
class AddItemsArguments:
    model: str = field(metadata={"help": "A recommender or codebook folder, or a Hub id of either."})
    items: str = field(metadata={"help": "The new items: item_id, title and optional text columns."})
    output_dir: str = field(metadata={"help": "Where to save the extended recommender or codebook."})
    encoder: str = field(default="default", metadata={"help": "Sentence encoder for the item text."})
    text_template: str | None = field(default=None, metadata={"help": "str.format template over the item's columns."})
    push_to_hub: str | None = field(default=None, metadata={"help": "Also push the result to this Hub repo id."})


def read_items(path: str):
    """The new items, read and turned into text columns exactly as sid4llm prepare-data reads an item file."""
    try:
        frame = read_item_file(path, "item_id", require=("item_id", "title"))
    except DataFormatError as err:
        raise SystemExit(f"error: --items: {err}") from None
    blank = [i + 2 for i, v in enumerate(frame["item_id"]) if not v.strip()]
    if blank:
        raise SystemExit(f"error: {path}: empty item_id on line(s) {blank[:5]}")
    return frame


def add_to_codebook(codebook: SemanticIdCodebook, item_ids, titles, texts, args: AddItemsArguments):
    ids = codebook.add_items(item_ids, encode_texts(texts, args.encoder, show_progress=False), titles)
    return codebook, [{"item_id": i, "title": t, "id": s} for i, t, s in zip(item_ids, titles, ids)]


def main(args: AddItemsArguments) -> None:
    frame = read_items(args.items)
    item_ids = frame["item_id"].tolist()
    titles = frame["title"].tolist()
    texts = [item_text(row, args.text_template) for row in frame.to_dict("records")]
    try:
        if (Path(args.model) / "codebook_config.json").is_file():
            artefact, added = add_to_codebook(SemanticIdCodebook.from_pretrained(args.model), item_ids, titles, texts, args)
        else:
            try:
                artefact = RecommendationPipeline.from_pretrained(args.model)
            except FileNotFoundError:  # a Hub id holding a codebook rather than a recommender
                artefact, added = add_to_codebook(SemanticIdCodebook.from_pretrained(args.model), item_ids, titles,
                                                  texts, args)
            else:
                categories = frame["categories"].tolist() if "categories" in frame.columns else None
                added = artefact.add_items(item_ids, titles, encoder=args.encoder, texts=texts, categories=categories)
    except (KeyError, ValueError) as err:
        raise SystemExit(f"error: {args.items}: {err}") from None
    artefact.save_pretrained(args.output_dir)
    for item in added:
        print(f"{item['item_id']}\t{item['title']}")
    print(f"added {len(added)} item(s); saved to {args.output_dir}")
    if args.push_to_hub:
        print("pushed:", artefact.push_to_hub(args.push_to_hub))


ARGUMENTS = (AddItemsArguments,)


def run(argv: list[str] | None = None) -> None:
    run_command(main, ARGUMENTS, argv, log_level=30)
