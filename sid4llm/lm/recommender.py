"""``SidRecommender``: a causal LM that writes semantic IDs, with its tokenizer and codebook, saved and
loaded as one folder (flat, as on the Hub)::

    adapter_model.safetensors + adapter_config.json   (LoRA)   or   model.safetensors + config.json (full)
    tokenizer files + sid_vocabulary.json             the extended tokenizer, pinned to the codebook
    codebook/                                         the SemanticIdCodebook
    generation_config.json                            complete: greedy beams, do_sample=False
    transition_prior/                                 optional: item transition counts that re-rank the beam
    sid4llm_config.json                               what inference reads (model, prompt, decoding, profile)
                                                      and how it was trained
    README.md                                         model card

Loading resizes the base model to the extended tokenizer *before* attaching the adapter.
"""

from __future__ import annotations

import json
import logging
import numbers
from contextlib import contextmanager, nullcontext
from functools import cached_property
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig, PreTrainedModel

from ..artifacts import ArtifactError, read_json
from ..decoding.transition_prior import PRIOR_DIR, ItemTransitionPrior
from ..ids import SemanticIdCodebook
from ..vocabulary import VOCAB_FILE, IdVocabulary
from . import generation
from .compact_adapter import cache_token_rows, save_compact_adapter
from .models import first_layers_view, load_causal_lm, peft_without_its_deprecation
from .recommender_config import CONFIG_FILE, DEFAULT_NUM_BEAMS, RESULTS_FILE, SidRecommenderConfig

logger = logging.getLogger(__name__)
CATALOGUE_FILE = "catalogue.json"  # item categories: what the chat's words and the request benchmark read


@contextmanager
def _adapter_off(model):
    """``with _adapter_off(peft_model) as base:`` the whole base model, adapter disabled."""
    with model.disable_adapter():
        yield model


class SidRecommender:
    def __init__(self, model: PreTrainedModel, vocab: IdVocabulary, generation_config: GenerationConfig,
                 config: SidRecommenderConfig | None = None, item_categories: list[list[str]] | None = None,
                 results: dict | None = None, transition_prior=None):
        """``config``: the settings it was built with (default: the argument defaults, for a model built in code);
        ``results``: what its runs measured (``metrics``, ``example_stats``, ``evaluation``), saved as results.json;
        ``transition_prior``: an :class:`~sid4llm.decoding.transition_prior.ItemTransitionPrior` whose weight
        re-ranks the beam's candidates for ID-stream histories (None: the model alone)."""
        self.model = model
        self.vocab = vocab
        self.tokenizer = vocab.tokenizer
        self.codebook = vocab.codebook
        self.generation_config = generation_config
        self.config = config if config is not None else SidRecommenderConfig(
            base_model=str(getattr(model.config, "_name_or_path", "") or "unknown"))
        self.results = dict(results or {})
        self.item_categories = [list(c or []) for c in item_categories] if item_categories is not None else None
        self.transition_prior = transition_prior

    # ------------------------------------------------------------------ the two paths of one artefact
    @cached_property
    def id_model(self):
        """The model that writes IDs. For an adapter trained on the first ``pretrained_layers`` layers of a base
        (the CPU recipe) that is those layers of the whole loaded base, adapter on, sharing its weights; else the
        model itself."""
        cfg = self.config
        return first_layers_view(self.model, cfg.pretrained_layers) if cfg.layer_cut_adapter else self.model

    @property
    def two_paths(self) -> bool:
        """Whether the ID path is a first-layers view of a whole loaded base (a layer-cut adapter)."""
        return self.id_model is not self.model

    @property
    def has_words_path(self) -> bool:
        """Whether a whole pretrained instruct LM can write words around a list: the base under a layer-cut
        adapter (adapter off), or a whole pretrained LM trained on a text task (adapter on)."""
        cfg = self.config
        if self.two_paths:
            return True
        return not cfg.from_scratch and not cfg.pretrained_layers and cfg.text_tasks

    def words_model(self):
        """A context manager giving the model that writes words: the whole base with the adapter off for a
        layer-cut adapter, else the model itself (one path does both)."""
        return _adapter_off(self.model) if self.two_paths else nullcontext(self.model)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    # ------------------------------------------------------------------ recommending
    @property
    def decoder(self):
        from ..decoding.columns import IdDecoder

        # The codebook grows in place (add_items), so remember how many items the trie was built for.
        if getattr(self, "_decoder", None) is None or self._decoder_items != len(self.codebook):
            self._decoder = IdDecoder.build(self.vocab, self.device, self.config.trie_softmax)
            self._decoder_items = len(self.codebook)
        return self._decoder

    @cached_property
    def prompt_builder(self):
        """Writes prompts exactly as in training, from the saved prompt settings and profile; built once."""
        from dataclasses import asdict

        from .tasks import ExampleBuilder, TaskArguments

        return ExampleBuilder(self.vocab, self.codebook.titles or self.codebook.item_ids,
                              TaskArguments(**asdict(self.config.prompt)), self.config.profile)

    def _index(self, item) -> int:
        """A codebook index from an index (int, checked) or an item id (str). ``RecommendationPipeline`` is the
        API for item ids given as ints, and for titles."""
        if isinstance(item, numbers.Integral) and not isinstance(item, bool):
            if not 0 <= item < len(self.codebook):
                raise ValueError(f"codebook index {item} is out of range [0, {len(self.codebook)})")
            return int(item)
        return self.codebook.index_of(str(item))

    def history_prompt_ids(self, history, style: str = "ids", text: str | None = None) -> list[int]:
        """The prompt the model was trained with, after which the next token starts an item's ID.
        ``style``: ``ids`` (the history as an ID stream cut to its token budget, the sequential task),
        ``titles`` (the natural-language task: titles in the chat template, then the begin-of-ID marker) or
        ``request`` (the requests task: the words of ``text``, then the history as an ID stream)."""
        builder = self.prompt_builder
        items = [self._index(i) for i in history]
        if style == "ids":
            return builder.stream_prompt_ids(items)
        if style == "request":
            return builder.request_prompt_ids(text or "", items)
        if style != "titles":
            raise ValueError(f"style must be 'ids', 'titles' or 'request', got {style!r}")
        return builder.text_prompt_ids(builder.natural_language_prompt(builder.budget(items))) + [self.vocab.begin_id]

    def transition_prior_weight(self, prior_weight: float | None = None) -> float | None:
        """The weight the transition prior re-ranks decodes with: ``prior_weight`` if given, else the
        decoding config's, else the prior's own; None without a prior."""
        if self.transition_prior is None:
            return None
        if prior_weight is not None:
            return prior_weight
        saved = self.config.decoding.transition_prior_weight
        return self.transition_prior.weight if saved is None else saved

    def recommend(self, histories, k: int = 10, num_beams: int | None = None, batch_size: int = 16,
                  style: str = "ids", exclude_seen: bool = True, exclude=None,
                  show_progress: bool = False, texts: list[str] | None = None,
                  cold_share: float | None = None, prior_weight: float | None = None) -> list[list[dict]]:
        """Top-``k`` distinct items per history (lists of item ids or codebook indices), best first, each
        ``{"item_id", "title", "index", "score"}``; the score is the summed log-probability of the ID.
        ``cold_share`` (default: the decoding config's) > 0 gives up to that share of each list to items added after training
        (:attr:`cold_items`), placed after the recommended items whose ID prefix they share
        (:mod:`sid4llm.decoding.cold_items`): the model alone almost never writes an ID it never trained on.

        With ``exclude_seen`` (default, as evaluations in the field do) no history item is recommended;
        ``exclude`` adds items to leave out (one collection per history). Beam search never finishes on a
        left-out item, and widens for a user whose list would come out short, so the list holds ``k`` items. ``num_beams`` defaults to the
        decoding config's (at least ``k``). ``texts`` (one per history) are requests in words, read with
        ``style="request"``.

        With a :attr:`transition_prior` of non-zero weight (``prior_weight``, default the saved one; 0: the model
        alone), the search finishes ``num_beams`` items, the prior's own ``candidates`` best items join them (each
        scored by the model exactly, found by the beam or not; not for a request in words), and the ``k`` best by
        log p_model + weight · log p_prior are returned, ``score`` being that sum; in every style (a request's
        history: the items it names)."""
        from tqdm.auto import tqdm

        from ..decoding.top_k import recommend_top_k

        self.model.eval()
        indexed = [[self._index(i) for i in h] for h in histories]
        exclude = exclude if exclude is not None else [()] * len(indexed)
        if len(exclude) != len(indexed):
            raise ValueError(f"exclude needs one collection per history: {len(exclude)} for {len(indexed)} histories")
        banned = [set(map(self._index, extra)) | (set(h) if exclude_seen else set()) for h, extra in zip(indexed, exclude)]
        if texts is not None and len(texts) != len(indexed):
            raise ValueError(f"texts needs one request per history: {len(texts)} for {len(indexed)} histories")
        prompts = [self.history_prompt_ids(h, style, texts[n] if texts is not None else None) for n, h in enumerate(indexed)]
        beams = max(num_beams or self.config.decoding.num_beams or k, k)
        cold_share = self.config.decoding.cold_share if cold_share is None else cold_share
        n_items = len(self.codebook)
        weight = self.transition_prior_weight(prior_weight)
        pool = beams if weight else k  # candidates the prior re-ranks: all the beam finishes
        # and the prior's own best, scored; not for a request in words, whose words, not what followed the items it
        # names, choose the kind of item (held-out category precision 0.967 -> 0.919 with them, docs/experiments/llm.md)
        extra = self.transition_prior.config.candidates if weight and style != "request" else 0

        def search(users: list[int], width: int) -> dict[int, list[tuple[int, float]]]:
            candidates = self.transition_prior.top_items([indexed[u] for u in users], extra, n_items,
                                                         [banned[u] for u in users]) if extra else None
            found = recommend_top_k(self.id_model, self.decoder, [prompts[u] for u in users], pool, width,
                                    self.tokenizer.pad_token_id, exclude=[banned[u] for u in users],
                                    candidates=candidates)
            if weight:
                found = [self.transition_prior.rerank(ranked, indexed[u], k, weight)
                         for u, ranked in zip(users, found)]
            return dict(zip(users, found))

        def short_of(results: dict) -> list[int]:
            return [u for u, ranked in results.items() if len(ranked) < min(k, n_items - len(banned[u]))]

        placer = self.cold_item_placer() if cold_share > 0 else None
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))  # similar lengths batch together
        ranked_by_user: list[list[dict]] = [[] for _ in prompts]
        starts = range(0, len(order), batch_size)
        for start in tqdm(starts, desc="recommending", disable=not show_progress):
            results = search(order[start : start + batch_size], beams)
            # Beams spent on left-out items can leave a list short: widen the search for those users only.
            wider, short = beams, short_of(results)
            while short and wider < n_items:
                wider = min(2 * wider, n_items)
                results.update(search(short, wider))
                short = short_of({u: results[u] for u in short})
            for user, ranked in results.items():
                if placer is not None:
                    ranked = placer.place(ranked, k, cold_share, banned[user])
                ranked_by_user[user] = [{"item_id": self.codebook.item_ids[i],
                                         "title": self.codebook.titles[i] if self.codebook.titles else None,
                                         "index": i, "score": s} for i, s in ranked]
        return ranked_by_user

    @torch.no_grad()
    def item_log_probs(self, histories, items: list[list[int]], batch_size: int = 16,
                       style: str = "ids") -> list[list[float]]:
        """The model's summed log-probability of each of ``items[i]`` (codebook indices) following
        ``histories[i]``: the score the beam gives an item, for items it may not have found."""
        from ..decoding.top_k import item_log_probs

        self.model.eval()
        prompts = [self.history_prompt_ids([self._index(i) for i in h], style) for h in histories]
        scores: list[list[float]] = []
        for start in range(0, len(prompts), batch_size):
            scores += item_log_probs(self.id_model, self.decoder, prompts[start:start + batch_size],
                                     [list(x) for x in items[start:start + batch_size]], self.tokenizer.pad_token_id)
        return scores

    @property
    def cold_items(self) -> range:
        """Codebook indices of the items added after training (``add_items``): the model never saw their IDs.
        Recommenders saved before ``trained_items`` existed count their dataset's items as trained."""
        trained = self.config.trained_items or self.config.dataset_stats.get("n_items") or len(self.codebook)
        return range(min(trained, len(self.codebook)), len(self.codebook))

    def cold_item_placer(self, shared_codes: int = 1):
        from ..decoding.cold_items import ColdItemPlacer

        return ColdItemPlacer(self.codebook.codes, self.cold_items, shared_codes)

    def decoding_config(self, num_beams: int | None = None) -> GenerationConfig:
        """The decoding settings in transformers' form: a copy of the saved ``generation_config.json`` (length, end
        tokens, greedy beams) with the decoding config's beam width, or ``num_beams`` when given."""
        import copy

        config = copy.deepcopy(self.generation_config)
        config.num_beams = config.num_return_sequences = num_beams or self.config.decoding.num_beams
        if config.num_beams == 1:  # beam-search-only settings mean nothing greedy (transformers warns of them)
            config.early_stopping, config.length_penalty = False, 1.0
        return config

    def generate_text(self, messages: list[dict], max_new_tokens: int = 64, num_beams: int = 1,
                      logits_processors: list | None = None) -> dict:
        """Free text with trie-constrained ID spans: :func:`~sid4llm.lm.generation.generate_text`."""
        return generation.generate_text(self, messages, max_new_tokens, num_beams, logits_processors)

    def generate_ids(self, histories, num_beams: int | None = None, constrained: bool = True,
                     style: str = "ids") -> list[list[int | None]]:
        """One ID per beam through ``model.generate``: :func:`~sid4llm.lm.generation.generate_ids`."""
        return generation.generate_ids(self, histories, num_beams, constrained, style)

    # ------------------------------------------------------------------ cold start
    def add_items(self, item_ids, embeddings, titles=None, categories=None) -> list[tuple[int, ...]]:
        """Give new items IDs with the codebook's saved encoder (existing IDs unchanged) and make them
        recommendable at once: their IDs are made of tokens the model already has, and the decoding trie is
        rebuilt on next use. A new item that collides with an existing ID needs a disambiguation token; the
        tokenizer reserves a few (``reserve_disambiguation_tokens``) and running out is an error that changes
        nothing."""
        available = len(self.vocab.id_token_ids) - self.codebook.vocab_size
        added = self.codebook.add_items(item_ids, embeddings, titles, max_disambiguation_tokens=available)
        if self.item_categories is not None:
            self.item_categories.extend(list(c) for c in (categories if categories is not None else [[]] * len(added)))
        return added

    # ------------------------------------------------------------------ persistence
    def save_pretrained(self, save_directory: str | Path, model_card: str | None = None) -> Path:
        out = Path(save_directory)
        out.mkdir(parents=True, exist_ok=True)
        if self.config.peft:
            # Only the embedding rows that trained (trainable tokens), never the resized base matrix.
            if save_compact_adapter(self.model, out, always_rows=self.vocab.new_token_ids) is None:
                self.model.save_pretrained(out, safe_serialization=True, save_embedding_layers=False)
        else:
            self.model.save_pretrained(out, safe_serialization=True)
        self.vocab.save(out)
        if self.item_categories is not None:
            (out / CATALOGUE_FILE).write_text(json.dumps({"categories": self.item_categories}))
        self.codebook.save_pretrained(out / "codebook")
        self.generation_config.save_pretrained(out)
        if self.transition_prior is not None:
            self.transition_prior.save_pretrained(out / PRIOR_DIR)
        self.save_description(out, model_card)
        return out

    def save_description(self, save_directory: str | Path, model_card: str | None = None) -> Path:
        """Rewrite only ``sid4llm_config.json``, ``results.json`` and the model card of a saved folder: after the
        results gain something measured later (e.g. ``results["evaluation"]``), without saving the weights again."""
        out = Path(save_directory)
        (out / CONFIG_FILE).write_text(json.dumps(self.config.to_dict(), indent=2, default=str))
        (out / RESULTS_FILE).write_text(json.dumps(self.results, indent=2, default=str))
        (out / "README.md").write_text(model_card if model_card is not None else self.model_card())
        return out

    def model_card(self) -> str:
        """README.md for the saved folder / Hub repo (:mod:`sid4llm.lm.model_card`)."""
        from .model_card import recommender_card

        return recommender_card(self.config, self.results, self.codebook)

    @classmethod
    def from_pretrained(cls, path_or_repo_id: str | Path, dtype: torch.dtype = torch.float32,
                        device: str | torch.device | None = None, revision: str | None = None) -> SidRecommender:
        path = Path(path_or_repo_id)
        if not path.is_dir():
            from huggingface_hub import snapshot_download

            path = Path(snapshot_download(str(path_or_repo_id), revision=revision))
        if not (path / CONFIG_FILE).is_file():
            raise FileNotFoundError(f"{path}: not a saved SidRecommender ({CONFIG_FILE} missing)")
        saved = read_json(path / CONFIG_FILE)
        config, results = SidRecommenderConfig.from_saved(saved, path / CONFIG_FILE)
        if (path / RESULTS_FILE).is_file():
            results = {**results, **read_json(path / RESULTS_FILE)}
        if not (path / VOCAB_FILE).is_file():
            raise ArtifactError(
                f"{path / VOCAB_FILE}: file missing. It pins the tokenizer's ID tokens to the codebook the model was "
                "trained with; without it a different codebook would load silently. Restore it from the saved "
                "folder or its Hub repository")
        codebook = SemanticIdCodebook.from_pretrained(path / "codebook")
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
        vocab = IdVocabulary.from_tokenizer(tokenizer, codebook)
        vocab.check_matches(path)
        if config.peft:
            from peft import PeftModel

            # The whole base: a layer-cut adapter's ID path reads its first layers (``id_model``), and its words path
            # all of them with the adapter off.
            base = load_causal_lm(config.base_model, dtype=dtype)
            base.resize_token_embeddings(len(tokenizer), mean_resizing=False)  # before the adapter
            with peft_without_its_deprecation():
                model = PeftModel.from_pretrained(base, path)
            cache_token_rows(model)  # for inference: peft would rebuild the embedding matrix at every forward
        else:
            model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, trust_remote_code=False)
        model.eval()
        if device is not None:
            model.to(device)
        try:
            generation_config = GenerationConfig.from_pretrained(path)
        except (OSError, ValueError) as err:
            raise ArtifactError(f"{path / 'generation_config.json'}: cannot be loaded ({str(err).splitlines()[0]})") from None
        if "decoding" not in saved:  # saved before the decoding config: its beam width was the generation config's
            config.decoding.num_beams = generation_config.num_beams or DEFAULT_NUM_BEAMS
        categories = None
        if (path / CATALOGUE_FILE).is_file():
            categories = read_json(path / CATALOGUE_FILE).get("categories")
            if not isinstance(categories, list) or len(categories) != len(codebook):
                raise ArtifactError(f"{path / CATALOGUE_FILE}: 'categories' must list one entry per item "
                                    f"({len(codebook)}), got {type(categories).__name__}")
        prior = ItemTransitionPrior.from_pretrained(path / PRIOR_DIR) if (path / PRIOR_DIR).is_dir() else None
        return cls(model, vocab, generation_config, config, categories, results, prior)

    def push_to_hub(self, repo_id: str, private: bool | None = None, token: str | None = None,
                    model_card: str | None = None, commit_message: str = "Upload sid4llm recommender") -> str:
        """Save everything to a temporary folder and upload it as a single commit."""
        from ..hub import push_folder

        return push_folder(lambda folder: self.save_pretrained(folder, model_card=model_card), repo_id, private,
                           token, commit_message)
