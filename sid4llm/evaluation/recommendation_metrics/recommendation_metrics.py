"""Leave-one-out recommendation metrics as an `evaluate` module, loadable offline by path:

    import evaluate
    metric = evaluate.load("path/to/sid4llm/evaluation/recommendation_metrics")
    metric.compute(predictions=[[3, 1, 4], [5, 9, 2]], references=[1, 7], num_items=10, k_values=[1, 3])
"""

import datasets
import evaluate
import numpy as np

_DESCRIPTION = """Recall@K (= hit rate with one held-out item), NDCG@K and coverage@K for ranked lists of item
indices against one target per user, on the full catalogue."""

_KWARGS_DESCRIPTION = """
Args:
    predictions: ranked item indices per user (best first).
    references: the held-out item index per user.
    num_items: catalogue size (for coverage).
    k_values: cut-offs (default 1, 5, 10, 20).
    item_popularity: optional train counts per item, for head/tail recall.
    head_fraction: share of items counted as head (default 0.2).
Returns:
    recall@K, ndcg@K, coverage@K, distinct_items@K (and head_recall@K / tail_recall@K).
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class RecommendationMetrics(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Sequence(datasets.Value("int64")),
                                        "references": datasets.Value("int64")}),
        )

    def _compute(self, predictions, references, num_items, k_values=(1, 5, 10, 20), item_popularity=None,
                 head_fraction=0.2):
        from sid4llm.evaluation import ranking_metrics

        popularity = np.asarray(item_popularity) if item_popularity is not None else None
        return ranking_metrics(predictions, references, num_items, k_values, popularity, head_fraction)
