"""Load benchmark of ``sid4llm serve``: the real server on a loopback port, driven by concurrent clients.

    python scripts/bench_serve.py --model outputs/quickstart/model --data_dir outputs/quickstart/data \
        --json docs/bench_serve.json

Starts ``sid4llm serve`` twice — batched (``--max_batch_size 32``) and one request at a time
(``--max_batch_size 1``) — and sends each the same ``/v1/recommend`` requests (real test users' histories, as
item ids, k=10) from 1, 4, 16 and 64 concurrent clients, bounded by ``--requests`` and ``--seconds`` per level.
Reports requests/s, users/s, p50/p95/p99 latency, errors (must be 0) and the server's peak memory, as a table
and JSON. The clients run on the same cores as the server, as a front end on one box would.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field

import numpy as np

from sid4llm.cli import parse_config_and_args
from sid4llm.data import PreparedData
from sid4llm.reporting import machine_description, markdown_table, write_json


@dataclass
class ServeBenchArguments:
    model: str = field(default="outputs/quickstart/model", metadata={"help": "A trained recommender folder."})
    data_dir: str = field(default="outputs/quickstart/data", metadata={"help": "Its prepared dataset (test histories)."})
    clients: list[int] = field(default_factory=lambda: [1, 4, 16, 64], metadata={"help": "Concurrent clients per level."})
    requests: int = field(default=400, metadata={"help": "Most requests per level."})
    seconds: float = field(default=20.0, metadata={"help": "Most seconds per level (after a short warm-up)."})
    k: int = field(default=10, metadata={"help": "Items per list."})
    max_batch_size: int = field(default=32, metadata={"help": "The batched server's --max_batch_size."})
    max_wait_ms: float = field(default=2.0, metadata={"help": "The batched server's --max_wait_ms."})
    batch_form_users: int = field(default=8, metadata={
        "help": "Also send batch-form requests of this many users each (one level, 4 clients); 0 skips it."})
    json: str | None = field(default=None, metadata={"help": "Write the results here as JSON."})


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """``sid4llm serve`` in a subprocess on a loopback port, stopped with SIGTERM."""

    def __init__(self, model: str, max_batch_size: int = 32, max_wait_ms: float = 2.0, flags: list[str] = ()):
        """``flags``: more of ``sid4llm serve``'s flags (e.g. ``["--api_key", KEY]``)."""
        import httpx

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "sid4llm", "serve", "--model", model, "--port", str(self.port), "--log_level",
             "warning", "--max_batch_size", str(max_batch_size), "--max_wait_ms", str(max_wait_ms), *flags],
            env={**os.environ, "HF_HUB_OFFLINE": "1"})
        deadline = time.time() + 300
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"sid4llm serve exited with status {self.process.returncode}")
            try:
                if httpx.get(f"{self.url}/health", timeout=5).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.5)
        raise RuntimeError("sid4llm serve did not answer /health within 300 s")

    def peak_memory_mb(self) -> float:
        """The server's peak resident memory (VmHWM), in MB."""
        return self._memory_mb("VmHWM:")

    def memory_mb(self) -> float:
        """The server's resident memory now (VmRSS), in MB."""
        return self._memory_mb("VmRSS:")

    def _memory_mb(self, field: str) -> float:
        for line in open(f"/proc/{self.process.pid}/status"):
            if line.startswith(field):
                return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=120)


async def drive(url: str, bodies: list[dict], clients: int, max_requests: int, seconds: float) -> dict:
    """``clients`` concurrent loops sending ``bodies`` in turn until ``max_requests`` or ``seconds``."""
    import httpx

    latencies: list[float] = []
    errors = 0
    users = 0
    sent = 0
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
        for body in bodies[: min(clients, 4)]:  # warm-up: connections open, first batch decoded
            await client.post("/v1/recommend", json=body)
        start = time.perf_counter()
        stop_at = start + seconds

        async def loop():
            nonlocal errors, users, sent
            while sent < max_requests and time.perf_counter() < stop_at:
                body = bodies[sent % len(bodies)]
                sent += 1
                t0 = time.perf_counter()
                try:
                    answer = await client.post("/v1/recommend", json=body)
                    ok = answer.status_code == 200
                except httpx.HTTPError:
                    ok = False
                latencies.append(time.perf_counter() - t0)
                if ok:
                    users += len(body["histories"]) if "histories" in body else 1
                else:
                    errors += 1

        await asyncio.gather(*(loop() for _ in range(clients)))
        elapsed = time.perf_counter() - start
    ms = np.asarray(latencies) * 1000
    return {"clients": clients, "requests": len(latencies), "errors": errors, "seconds": round(elapsed, 2),
            "requests_per_s": round(len(latencies) / elapsed, 2), "users_per_s": round(users / elapsed, 2),
            "p50_ms": round(float(np.percentile(ms, 50)), 1), "p95_ms": round(float(np.percentile(ms, 95)), 1),
            "p99_ms": round(float(np.percentile(ms, 99)), 1)}


def request_bodies(args: ServeBenchArguments) -> tuple[list[dict], list[dict]]:
    """One body per test user (its history as item ids), and batch-form bodies of ``batch_form_users`` users."""
    data = PreparedData.load(args.data_dir)
    item_ids = list(data.items["item_id"])
    histories = [[item_ids[i] for i in h] for h in data.sequences["test"]["history"]]
    order = np.random.default_rng(0).permutation(len(histories))
    singles = [{"history": histories[u], "k": args.k} for u in order]
    n = max(args.batch_form_users, 1)
    batches = [{"histories": [histories[u] for u in order[s : s + n]], "k": args.k} for s in range(0, len(order) - n + 1, n)]
    return singles, batches


def main(args: ServeBenchArguments) -> dict:
    singles, batches = request_bodies(args)
    rows = []
    for mode, batch_size in (("one at a time", 1), ("batched", args.max_batch_size)):
        server = Server(args.model, batch_size, args.max_wait_ms)
        try:
            for clients in args.clients:
                row = asyncio.run(drive(server.url, singles, clients, args.requests, args.seconds))
                rows.append({"mode": mode, "users_per_request": 1, **row})
                print(rows[-1], flush=True)
            if args.batch_form_users:
                row = asyncio.run(drive(server.url, batches, 4, max(args.requests // args.batch_form_users, 8), args.seconds))
                rows.append({"mode": mode, "users_per_request": args.batch_form_users, **row})
                print(rows[-1], flush=True)
            memory = server.peak_memory_mb()
        finally:
            status = server.stop()
        for row in rows:
            if row["mode"] == mode:
                row["server_peak_memory_mb"] = round(memory, 1)
                row["server_exit_status"] = status

    header = ["mode", "clients", "users/request", "requests", "errors", "requests/s", "users/s", "p50 ms", "p95 ms",
              "p99 ms", "peak MB"]
    keys = ["mode", "clients", "users_per_request", "requests", "errors", "requests_per_s", "users_per_s", "p50_ms",
            "p95_ms", "p99_ms", "server_peak_memory_mb"]
    table = markdown_table(header, [[row[key] for key in keys] for row in rows])
    speedups = {}
    for clients in args.clients:
        one = next(r for r in rows if r["mode"] == "one at a time" and r["clients"] == clients and r["users_per_request"] == 1)
        batched = next(r for r in rows if r["mode"] == "batched" and r["clients"] == clients and r["users_per_request"] == 1)
        speedups[clients] = round(batched["requests_per_s"] / one["requests_per_s"], 2)
    print(table)
    print("batched / one at a time, requests/s: " + ", ".join(f"{c} clients {s}x" for c, s in speedups.items()))
    result = {"model": args.model, "k": args.k, "max_batch_size": args.max_batch_size, "max_wait_ms": args.max_wait_ms,
              "machine": machine_description(), "rows": rows, "speedup_requests_per_s": speedups,
              "table": table}
    if args.json:
        write_json(args.json, result)
    return result


if __name__ == "__main__":
    main(*parse_config_and_args([ServeBenchArguments]))
