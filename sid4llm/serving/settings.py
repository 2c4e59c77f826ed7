"""What ``sid4llm serve`` takes: the model, where to listen, and the limits that keep it up under load."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

API_KEYS_ENV = "SID4LLM_API_KEYS"


@dataclass
class ServeArguments:
    model: str = field(metadata={"help": "A trained recommender folder (sid4llm finetune / quickstart) or Hub id."})
    host: str = field(default="127.0.0.1", metadata={"help": "Address to listen on (loopback by default; 0.0.0.0 "
                                                             "exposes the server to the network)."})
    port: int = field(default=8000, metadata={"help": "Port to listen on."})
    served_model_name: str | None = field(default=None, metadata={
        "help": "The model id clients send and /v1/models lists (default: the model folder's name, or the Hub id)."})
    device: str | None = field(default=None, metadata={"help": "torch device (default: cuda if available, else cpu)."})
    max_batch_size: int = field(default=32, metadata={
        "help": "Most users decoded in one batch of the trie search; 1 serves requests one at a time."})
    max_wait_ms: float = field(default=2.0, metadata={
        "help": "How long a batch waits for more requests once its first has arrived (added latency when idle)."})
    request_timeout_s: float = field(default=60.0, metadata={"help": "A request still unanswered after this gets 504."})
    max_queue: int = field(default=1024, metadata={"help": "Requests allowed to wait; more get 503."})
    max_body_bytes: int = field(default=1_000_000, metadata={"help": "Largest request body; larger ones get 413."})
    max_history_items: int = field(default=5000, metadata={"help": "Most items in one history; longer ones get 422."})
    max_new_tokens: int = field(default=40, metadata={
        "help": "Most tokens of words per chat answer (a request's max_tokens can only lower it)."})
    timeout_graceful_shutdown_s: float = field(default=30.0, metadata={
        "help": "On SIGTERM/SIGINT, how long in-flight requests get to finish."})
    log_level: Literal["critical", "error", "warning", "info", "debug"] = field(default="info", metadata={
        "help": "uvicorn's log level."})
    api_key: list[str] | None = field(default=None, metadata={
        "help": f"Keys a client must send as 'Authorization: Bearer KEY' on every /v1/* call (several allowed; also "
                f"from the environment variable {API_KEYS_ENV}, comma-separated). /health and /metrics stay open. "
                "Without a key the server is open to whoever reaches its port, and the admin endpoints are off."})

    def keys(self) -> list[str]:
        """The API keys from ``--api_key`` and the environment, empty ones dropped."""
        import os

        from_env = [k.strip() for k in os.environ.get(API_KEYS_ENV, "").split(",")]
        return [k for k in [*(self.api_key or []), *from_env] if k]

    @property
    def exposed(self) -> bool:
        """Whether the server listens beyond the loopback interface."""
        return self.host not in ("127.0.0.1", "localhost", "::1") and not self.host.startswith("127.")
