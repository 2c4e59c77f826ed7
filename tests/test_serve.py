"""``sid4llm serve``: the recommender behind real HTTP on a loopback port — every endpoint, the OpenAI client
unchanged, concurrent requests batched without cross-talk, and every bad request answered with a 4xx that
names the field while the server keeps serving."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from types import SimpleNamespace

import httpx
import pytest

from sid4llm import RecommendationPipeline
from sid4llm.serving import ServeArguments, create_app

HISTORIES = [["Toy Story (1995)", "Aladdin (1992)"], ["Scary Movie (2000)"], ["Unforgiven (1992)", "m11", "Halloween (1978)"],
             ["m2", "m3", "m4", "m5"], ["Good Will Hunting (1997)"], ["m12", "m10"]]


def free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    return sock


def start_server(pipe: RecommendationPipeline, settings: ServeArguments):
    """The app on a loopback port in a background thread; returns (base url, stop function, app)."""
    import uvicorn

    app = create_app(pipe, settings)
    sock = free_socket()
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started and time.time() < deadline:
        time.sleep(0.02)
    assert server.started, "the server did not start"

    def stop():
        server.should_exit = True
        thread.join(15)

    return f"http://127.0.0.1:{sock.getsockname()[1]}", stop, app


SETTINGS = ServeArguments(model="tiny-model", max_wait_ms=30, max_history_items=1000, max_body_bytes=2_000_000)


@pytest.fixture(scope="module")
def pipe(chat_dir) -> RecommendationPipeline:
    return RecommendationPipeline.from_pretrained(chat_dir)


@pytest.fixture(scope="module")
def server(pipe):
    url, stop, app = start_server(pipe, SETTINGS)
    with httpx.Client(base_url=url, timeout=60) as client:
        yield SimpleNamespace(url=url, client=client, app=app)
    stop()


def ids(items: list[dict]) -> list[str]:
    return [item["item_id"] for item in items]


def test_health_and_models_describe_the_loaded_model(server, pipe):
    health = server.client.get("/health").json()
    assert health["status"] == "ok" and health["model"] == "tiny-model" and health["items"] == len(pipe.codebook)
    models = server.client.get("/v1/models").json()
    assert models["object"] == "list" and [m["id"] for m in models["data"]] == ["tiny-model"]


def test_recommend_answers_as_the_pipeline_does(server, pipe):
    answer = server.client.post("/v1/recommend", json={"history": HISTORIES[0], "k": 5})
    assert answer.status_code == 200
    items = answer.json()["items"]
    expected = pipe.recommend(HISTORIES[0], k=5)
    assert ids(items) == ids(expected) and len(items) == 5
    assert items[0]["score"] == pytest.approx(expected[0]["score"], abs=1e-4)
    assert set(items[0]) == {"item_id", "title", "index", "score"}


def test_the_batch_form_gives_one_list_per_history_and_exclude_applies_to_all(server, pipe):
    answer = server.client.post("/v1/recommend", json={"histories": HISTORIES[:3], "k": 4, "exclude": ["m1"]}).json()
    expected = pipe.recommend(HISTORIES[:3], k=4, exclude=["m1"])
    assert [ids(r) for r in answer["results"]] == [ids(r) for r in expected]
    assert all("m1" not in ids(r) for r in answer["results"])


def test_concurrent_requests_are_batched_and_each_gets_its_own_answer(server, pipe):
    batches_before = server.app.state.registry.get().batcher.batches
    requests = [(HISTORIES[n % len(HISTORIES)], 3 + n % 3) for n in range(24)]  # different users and ks
    with ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(lambda r: server.client.post("/v1/recommend", json={"history": r[0], "k": r[1]}), requests))
    assert all(a.status_code == 200 for a in answers)
    for (history, k), answer in zip(requests, answers):
        assert ids(answer.json()["items"]) == ids(pipe.recommend(history, k=k))
    assert server.app.state.registry.get().batcher.batches - batches_before < len(requests)  # some were decoded together


def test_a_query_in_words_is_read_as_the_chat_reads_it(server, pipe):
    query = "a scary movie for tonight"
    answer = server.client.post("/v1/recommend", json={"history": ["Scary Movie (2000)"], "query": query, "k": 3}).json()
    expected = pipe.recommend_request(query, pipe.resolve(["Scary Movie (2000)"]), k=3)
    assert ids(answer["items"]) == ids(expected)


def test_a_json_body_sent_as_curl_d_sends_it_is_read_as_json(server, pipe):
    body = json.dumps({"history": HISTORIES[1], "k": 2})
    answer = server.client.post("/v1/recommend", content=body, headers={"content-type": "application/x-www-form-urlencoded"})
    assert answer.status_code == 200 and ids(answer.json()["items"]) == ids(pipe.recommend(HISTORIES[1], k=2))


def test_an_empty_history_gets_the_cold_start_list(server, pipe):
    answer = server.client.post("/v1/recommend", json={"history": [], "k": 3})
    assert answer.status_code == 200 and ids(answer.json()["items"]) == ids(pipe.recommend([], k=3))


def test_an_openai_client_talks_to_it_unchanged(server, pipe):
    from openai import OpenAI

    client = OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
    messages = [{"role": "user", "content": "I loved Toy Story (1995). Something funny?"}]
    completion = client.chat.completions.create(model="tiny-model", messages=messages, extra_body={"k": 3})
    expected = pipe.chat(messages, k=3)
    message = completion.choices[0].message
    assert message.role == "assistant" and message.content == expected["content"]
    assert ids(message.model_extra["items"]) == ids(expected["items"]) == ids(completion.model_extra["items"])
    assert completion.usage.total_tokens > 0 and completion.choices[0].finish_reason == "stop"

    streamed = client.chat.completions.create(model="tiny-model", messages=messages, extra_body={"k": 3}, stream=True)
    assert "".join(chunk.choices[0].delta.content or "" for chunk in streamed) == expected["content"]


def test_items_sent_back_in_an_assistant_turn_are_not_recommended_again(server):
    first = [{"role": "user", "content": "Something like Scary Movie (2000)"}]
    reply = server.client.post("/v1/chat/completions", json={"messages": first, "k": 3}).json()["choices"][0]["message"]
    follow = first + [{"role": "assistant", "content": reply["content"], "items": reply["items"]},
                      {"role": "user", "content": "more please"}]
    again = server.client.post("/v1/chat/completions", json={"messages": follow, "k": 3}).json()
    assert not set(ids(reply["items"])) & set(ids(again["items"]))


BAD_REQUESTS = [
    # (endpoint, body (bytes or JSON), status, words the message must hold)
    ("/v1/recommend", b'{"history": ["Toy Story (1995)"', 400, "not valid JSON"),
    ("/v1/recommend", {"history": "Toy Story (1995)"}, 422, "history"),
    ("/v1/recommend", {"history": [["Toy Story (1995)"]]}, 422, "history"),
    ("/v1/recommend", {"history": [], "k": "5"}, 422, "k"),
    ("/v1/recommend", {"history": [1.5]}, 422, "history"),
    ("/v1/recommend", {"history": ["Toy Story (1995)", "No Such Film At All (2031)"]}, 422, "No Such Film At All (2031)"),
    ("/v1/recommend", {"history": [], "exclude": ["Nothing Like This (1901)"]}, 422, "exclude"),
    ("/v1/recommend", {"history": ["m1"] * 100_000}, 422, "at most 1,000"),
    ("/v1/recommend", {"history": [], "k": 0}, 422, "k"),
    ("/v1/recommend", {"history": [], "k": -3}, 422, "k"),
    ("/v1/recommend", {"history": [], "k": 10_000}, 422, "catalogue"),
    ("/v1/recommend", {}, 422, "exactly one of 'history'"),
    ("/v1/recommend", {"history": [], "histories": [[]]}, 422, "exactly one of 'history'"),
    ("/v1/recommend", {"history": [], "colour": "blue"}, 422, "colour: unknown field"),
    ("/v1/recommend", b"x" * 10_000_000, 413, "larger than this server's limit"),
    ("/v1/chat/completions", {"messages": []}, 422, "messages"),
    ("/v1/chat/completions", {"messages": [{"role": "system", "content": "be brief"}]}, 422, "user"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]},
     422, "user"),
    ("/v1/chat/completions", {"messages": [{"role": "wizard", "content": "hi"}]}, 422, "role"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": 7}]}, 422, "content"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "n": 2}, 422, "n"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "tools": []}, 422, "tools: unknown field"),
    ("/v1/chat/completions", {"model": "gpt-9", "messages": [{"role": "user", "content": "hi"}]}, 404, "gpt-9"),
]


@pytest.mark.parametrize(("endpoint", "body", "status", "words"), BAD_REQUESTS,
                         ids=[f"{n}-{e.rsplit('/', 1)[-1]}-{s}" for n, (e, _, s, _) in enumerate(BAD_REQUESTS)])
def test_a_bad_request_gets_a_4xx_naming_the_field_and_the_server_keeps_serving(server, endpoint, body, status, words):
    if isinstance(body, bytes):
        answer = server.client.post(endpoint, content=body, headers={"content-type": "application/json"})
    else:
        answer = server.client.post(endpoint, json=body)
    assert answer.status_code == status, answer.text
    error = answer.json()["error"]
    assert words in error["message"], error
    good = server.client.post("/v1/recommend", json={"history": HISTORIES[1], "k": 2})
    assert good.status_code == 200 and len(good.json()["items"]) == 2


def test_a_failure_inside_one_request_fails_only_that_request(pipe):
    real = pipe.recommender.recommend
    poisoned = pipe.resolve(["Halloween (1978)"])[0]

    def recommend(histories, *args, **kwargs):
        if any(poisoned in h for h in histories):
            raise RuntimeError("this history breaks the model")
        return real(histories, *args, **kwargs)

    url, stop, _ = start_server(pipe, replace(SETTINGS, max_wait_ms=200))
    pipe.recommender.recommend = recommend
    try:
        with httpx.Client(base_url=url, timeout=60) as client, ThreadPoolExecutor(4) as pool:
            histories = [HISTORIES[0], ["Halloween (1978)"], HISTORIES[1], HISTORIES[4]]
            answers = list(pool.map(lambda h: client.post("/v1/recommend", json={"history": h, "k": 2}), histories))
            assert [a.status_code for a in answers] == [200, 500, 200, 200]
            assert "this history breaks the model" in answers[1].json()["error"]["message"]
            assert client.get("/health").status_code == 200
    finally:
        pipe.recommender.recommend = real
        stop()


def test_a_request_that_waits_too_long_gets_504(pipe):
    real = pipe.recommender.recommend

    def slow(*args, **kwargs):
        time.sleep(1.0)
        return real(*args, **kwargs)

    url, stop, _ = start_server(pipe, replace(SETTINGS, request_timeout_s=0.2))
    pipe.recommender.recommend = slow
    try:
        answer = httpx.post(f"{url}/v1/recommend", json={"history": [], "k": 2}, timeout=30)
        assert answer.status_code == 504 and "request_timeout_s" in answer.json()["error"]["message"]
    finally:
        pipe.recommender.recommend = real
        stop()


@pytest.mark.slow
def test_sigterm_lets_the_in_flight_request_finish_then_exits_cleanly(chat_dir):
    port = free_socket().getsockname()[1]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    process = subprocess.Popen([sys.executable, "-m", "sid4llm", "serve", "--model", chat_dir, "--port", str(port),
                                "--max_wait_ms", "1500", "--log_level", "warning"], env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.3)
        answers = []
        request = threading.Thread(target=lambda: answers.append(
            httpx.post(f"{url}/v1/recommend", json={"history": HISTORIES[0], "k": 3}, timeout=60)))
        request.start()
        time.sleep(0.5)  # the request is waiting in the batcher (max_wait_ms 1500)
        process.send_signal(signal.SIGTERM)
        request.join(60)
        assert answers and answers[0].status_code == 200 and len(answers[0].json()["items"]) == 3
        assert process.wait(timeout=60) == 0
        with pytest.raises(httpx.TransportError):
            httpx.get(f"{url}/health", timeout=2)
    finally:
        if process.poll() is None:
            process.kill()


def test_serve_binds_to_loopback_by_default():
    assert ServeArguments(model="x").host == "127.0.0.1"
