"""A soak of ``sid4llm serve`` with faults, on a loopback port, bounded in requests and seconds.

    python scripts/soak_serve.py --model outputs/quickstart/model --data_dir outputs/quickstart/data \
        --requests 5000 --json docs/experiments/soak_serve.json

The real server runs as a subprocess with an API key. Clients send a seeded mix: recommendations (each checked
against the server's own answer to the same history, asked alone before the soak), chat turns, bad requests (each
expecting its 4xx), requests without the key (401) and clients that hang up while they wait. Half-way, a new model
version (``--swap_model``, default the same folder) is loaded under the served name while traffic goes on; at the end
SIGTERM arrives with requests in flight, which must still be answered. Prints a table and writes JSON: requests
lost, wrong answers, 5xx, latency percentiles per endpoint, the server's memory at start / middle / end, and how many
abandoned requests the server dropped instead of computing.
"""

from __future__ import annotations

import random
import signal
import threading
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field

import httpx
import numpy as np
from bench_serve import Server  # this folder's load benchmark: the server in a subprocess on a loopback port
from transformers import HfArgumentParser

from sid4llm.data import PreparedData
from sid4llm.reporting import markdown_table, write_json

KEY = "sk-soak"
BAD_REQUESTS = [  # (body, expected status)
    ({"history": ["x"], "k": 0}, 422),
    ({"history": ["no such title in any catalogue, surely"], "k": 3}, 422),
    ({"history": [], "k": 3, "colour": "blue"}, 422),
    ("{not json", 400),
    ({"histories": [], "k": 3}, 422),
]


@dataclass
class SoakArguments:
    model: str = field(metadata={"help": "The recommender folder to serve."})
    data_dir: str = field(metadata={"help": "Its prepared data (test histories are the traffic)."})
    swap_model: str | None = field(default=None, metadata={"help": "Loaded half-way under the served name "
                                                                   "(default: --model again)."})
    requests: int = field(default=5000, metadata={"help": "Requests in all (the SIGTERM's in-flight ones added)."})
    concurrency: int = field(default=32, metadata={"help": "Clients sending at once."})
    chat_share: float = field(default=0.02, metadata={"help": "Share of chat turns (each 2-4 s of words on 2 cores)."})
    bad_share: float = field(default=0.08, metadata={"help": "Share of malformed requests."})
    unauthorised_share: float = field(default=0.02, metadata={"help": "Share of requests without the key."})
    hangup_share: float = field(default=0.05, metadata={"help": "Share of clients that leave before the answer."})
    histories: int = field(default=200, metadata={"help": "Distinct test histories in the traffic."})
    max_seconds: float = field(default=1200, metadata={"help": "Stop sending after this long, whatever is left."})
    seed: int = field(default=0, metadata={"help": "Seed of the traffic mix."})
    json: str | None = field(default=None, metadata={"help": "Write the results here."})


def metric_value(text: str, name: str, **labels) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
               if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


def main(args: SoakArguments) -> dict:
    rng = random.Random(args.seed)
    data = PreparedData.load(args.data_dir)
    test, ids = data.sequences["test"], list(data.items["item_id"])
    pool = [[ids[i] for i in test[u]["history"][-20:]] for u in rng.sample(range(len(test)), args.histories)]
    titles = [t for t in data.items["title"] if t][:500]
    server = Server(args.model, flags=["--api_key", KEY, "--request_timeout_s", "120"])
    url, process = server.url, server.process
    auth = {"Authorization": f"Bearer {KEY}"}
    results = {"args": asdict(args)}
    try:
        name = httpx.get(f"{url}/health").json()["model"]
        with httpx.Client(base_url=url, headers=auth, timeout=120) as client:
            reference = [[i["item_id"] for i in client.post("/v1/recommend", json={"history": h, "k": 10}).json()["items"]]
                         for h in pool]  # each history asked alone: the answer every batched one must equal
            client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]})  # words path warm
        memory = {"start": server.memory_mb()}
        kinds = rng.choices(["recommend", "chat", "bad", "unauthorised", "hangup"], k=args.requests,
                            weights=[1 - args.chat_share - args.bad_share - args.unauthorised_share - args.hangup_share,
                                     args.chat_share, args.bad_share, args.unauthorised_share, args.hangup_share])
        outcomes: list[dict] = []
        lock = threading.Lock()
        start = time.time()
        swapped = threading.Event()

        def one(n: int, kind: str) -> None:
            if time.time() - start > args.max_seconds:
                return
            r = random.Random(args.seed * 100_003 + n)
            began = time.perf_counter()
            outcome = {"kind": kind, "status": None, "ok": False}
            try:
                with httpx.Client(base_url=url, timeout=0.05 if kind == "hangup" else 120,
                                  headers={} if kind == "unauthorised" else auth) as c:
                    if kind in ("recommend", "unauthorised", "hangup"):
                        h = r.randrange(len(pool))
                        answer = c.post("/v1/recommend", json={"history": pool[h], "k": 10})
                        outcome["status"] = answer.status_code
                        if kind == "unauthorised":
                            outcome["ok"] = answer.status_code == 401
                        else:
                            got = [i["item_id"] for i in answer.json().get("items", [])]
                            outcome["ok"] = answer.status_code == 200 and got == reference[h]
                            outcome["wrong"] = answer.status_code == 200 and got != reference[h]
                    elif kind == "chat":
                        message = f"I loved {r.choice(titles)}. Something like it?"
                        answer = c.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": message}],
                                                                      "k": 5})
                        outcome["status"] = answer.status_code
                        outcome["ok"] = answer.status_code == 200 and len(answer.json()["items"]) == 5
                    else:
                        body, expected = r.choice(BAD_REQUESTS)
                        answer = c.post("/v1/recommend", content=body) if isinstance(body, str) else \
                            c.post("/v1/recommend", json=body)
                        outcome["status"] = answer.status_code
                        outcome["ok"] = answer.status_code == expected
            except httpx.TimeoutException:
                outcome["status"] = "hung up" if kind == "hangup" else "timeout"
                outcome["ok"] = kind == "hangup"
            except httpx.TransportError as err:
                outcome["status"] = f"transport: {type(err).__name__}"
            outcome["seconds"] = time.perf_counter() - began
            with lock:
                outcomes.append(outcome)
                if len(outcomes) == args.requests // 2 and not swapped.is_set():
                    swapped.set()
                    threading.Thread(target=swap).start()

        def swap() -> None:
            memory["middle"] = server.memory_mb()
            began = time.perf_counter()
            answer = httpx.post(f"{url}/v1/admin/models", headers=auth, timeout=300,
                                json={"source": args.swap_model or args.model, "name": name})
            results["swap"] = {"status": answer.status_code, "seconds": round(time.perf_counter() - began, 2),
                               "during_requests": len(outcomes)}

        with ThreadPoolExecutor(args.concurrency) as workers:
            list(workers.map(lambda nk: one(*nk), enumerate(kinds)))
        elapsed = time.time() - start
        time.sleep(1.0)  # the replaced version drains and stops
        memory["end"] = server.memory_mb()
        metrics_text = httpx.get(f"{url}/metrics").text
        # SIGTERM with requests in flight (chat turns, which take a while on the model's thread): each must still be
        # answered, and the process exit 0.
        finals: list[int] = []
        turn = {"messages": [{"role": "user", "content": f"I loved {titles[0]}. Something like it?"}], "k": 3}
        threads = [threading.Thread(target=lambda: finals.append(
            httpx.post(f"{url}/v1/chat/completions", headers=auth, json=turn, timeout=120).status_code))
            for _ in range(8)]
        for t in threads:
            t.start()
        time.sleep(0.5)  # all eight accepted and waiting on the model
        process.send_signal(signal.SIGTERM)
        for t in threads:
            t.join(60)
        exit_code = process.wait(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()

    by_kind = defaultdict(list)
    for o in outcomes:
        by_kind[o["kind"]].append(o)
    hangups = len(by_kind["hangup"])
    expected_answers = [o for o in outcomes if o["kind"] != "hangup"]
    results.update({
        "requests": len(outcomes), "seconds": round(elapsed, 1),
        "lost": sum(not isinstance(o["status"], int) for o in expected_answers) + (8 - finals.count(200)),
        "wrong": sum(bool(o.get("wrong")) for o in outcomes),
        "unexpected_status": sum(not o["ok"] for o in expected_answers),
        "server_errors_5xx": sum(isinstance(o["status"], int) and o["status"] >= 500 for o in outcomes),
        "sigterm": {"in_flight": 8, "answered_200": finals.count(200), "exit_code": exit_code},
        "hangups_sent": hangups,
        "hangups_dropped_by_server": metric_value(metrics_text, "sid4llm_dropped_requests_total", reason="client_left"),
        "memory_mb": {k: round(v, 1) for k, v in memory.items()},
        "latency_ms": {kind: {p: round(float(np.percentile([o["seconds"] for o in rows if o["ok"]], q)) * 1000, 1)
                              for p, q in (("p50", 50), ("p99", 99))}
                       for kind, rows in by_kind.items() if kind != "hangup" and any(o["ok"] for o in rows)},
        "counts": {kind: len(rows) for kind, rows in by_kind.items()},
    })
    rows = [[kind, results["counts"][kind], results["latency_ms"].get(kind, {}).get("p50", "–"),
             results["latency_ms"].get(kind, {}).get("p99", "–")] for kind in sorted(results["counts"])]
    print(markdown_table(["requests", "sent", "p50 ms", "p99 ms"], rows))
    print(markdown_table(["lost", "wrong", "5xx", "unexpected status", "hang-ups sent / dropped unanswered",
                          "memory MB start / middle / end", "SIGTERM: in flight answered, exit"],
                         [[results["lost"], results["wrong"], results["server_errors_5xx"], results["unexpected_status"],
                           f"{hangups} / {results['hangups_dropped_by_server']:.0f}",
                           " / ".join(f"{results['memory_mb'].get(k, float('nan')):.0f}" for k in ("start", "middle", "end")),
                           f"{finals.count(200)} of 8, {exit_code}"]]))
    if args.json:
        write_json(args.json, results)
    return results


if __name__ == "__main__":
    (soak_args,) = HfArgumentParser([SoakArguments]).parse_args_into_dataclasses()
    main(soak_args)
