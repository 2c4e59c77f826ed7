"""Serve a trained recommender over HTTP: recommendations, OpenAI-compatible chat, health.

    sid4llm serve --model outputs/quickstart/model                  # http://127.0.0.1:8000
    curl -s localhost:8000/v1/recommend -d '{"history": ["Toy Story (1995)", "Aladdin (1992)"], "k": 5}'

Concurrent requests are decoded together (``--max_batch_size``, ``--max_wait_ms``); see the README's
"Serving" section for every endpoint and the load benchmark.
"""

from __future__ import annotations

from ..cli import run_command
from ..serving import ServeArguments, serve


def main(args: ServeArguments) -> None:
    serve(args)


ARGUMENTS = (ServeArguments,)


def run(argv: list[str] | None = None) -> None:
    run_command(main, ARGUMENTS, argv)
