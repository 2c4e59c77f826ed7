"""Evaluation as the field does it: leave-one-out on the full catalogue, seen items left out, against the
most-popular floor; the metrics also ship as a local ``evaluate`` module (``recommendation_metrics/``)."""

from ..metrics import head_items, ranking_metrics, sample_users
from .leave_one_out import evaluate_recommender, format_table, load_metric, most_popular_rankings

__all__ = ["evaluate_recommender", "format_table", "head_items", "load_metric", "most_popular_rankings",
           "ranking_metrics", "sample_users"]
