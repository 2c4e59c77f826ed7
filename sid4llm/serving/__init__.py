"""``sid4llm serve``: a saved recommender behind HTTP (FastAPI + uvicorn), with dynamic batching of the trie
search and OpenAI-compatible chat completions. :func:`create_app` builds the app; :func:`serve` runs it."""

from .app import create_app
from .settings import ServeArguments

__all__ = ["ServeArguments", "create_app", "serve"]


def serve(args: ServeArguments) -> None:
    """Load the recommender once and serve it until SIGTERM/SIGINT: in-flight requests finish, then the process
    exits with status 0."""
    import signal
    import sys

    import uvicorn

    from ..pipeline import RecommendationPipeline

    # no name of ours holds the pipeline: once a new version replaces it, its memory can be given back
    app = create_app(RecommendationPipeline.from_pretrained(args.model, device=args.device), args)
    server = uvicorn.Server(uvicorn.Config(app, host=args.host, port=args.port, log_level=args.log_level,
                                           timeout_graceful_shutdown=args.timeout_graceful_shutdown_s))
    # uvicorn handles the signal (a graceful shutdown), then raises it again for the handler it found: make that
    # one an ordinary exit, so a stop asked for is not reported as a crash (status -15).
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: sys.exit(0))
    server.run()
