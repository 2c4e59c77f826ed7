"""``sid4llm serve`` as a team runs it: API keys, Prometheus metrics, model versions rolled in while serving with no
request lost, work dropped for clients that left, and a chat stream whose list leaves before its words."""

from __future__ import annotations

import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from test_serve import HISTORIES, SETTINGS, start_server

from sid4llm import RecommendationPipeline
from sid4llm.serving import ServeArguments, create_app

KEY = "sk-test-0123456789"


@pytest.fixture(scope="module")
def pipe(chat_dir) -> RecommendationPipeline:
    return RecommendationPipeline.from_pretrained(chat_dir)


@pytest.fixture(scope="module")
def keyed(pipe, chat_dir):
    url, stop, app = start_server(pipe, replace(SETTINGS, model=chat_dir, served_model_name=None,
                                                api_key=[KEY, "sk-second"]))
    yield url, app
    stop()


def bearer(key: str = KEY) -> dict:
    return {"Authorization": f"Bearer {key}"}


def metric(url: str, name: str, **labels) -> float:
    """A sample's value from /metrics, read with the Prometheus client's own parser (0 when absent)."""
    text = httpx.get(f"{url}/metrics").text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return 0.0


def test_every_v1_call_needs_a_right_key_and_health_stays_open_without_paths(keyed, chat_dir):
    url, _ = keyed
    body = {"history": HISTORIES[0], "k": 2}
    assert httpx.post(f"{url}/v1/recommend", json=body).status_code == 401
    wrong = httpx.post(f"{url}/v1/recommend", json=body, headers=bearer("sk-test-0123456788"))
    assert wrong.status_code == 401 and wrong.headers["www-authenticate"] == "Bearer"
    assert wrong.json()["error"]["type"] == "authentication_error"
    assert httpx.get(f"{url}/v1/models").status_code == 401
    for key in (KEY, "sk-second"):
        assert httpx.post(f"{url}/v1/recommend", json=body, headers=bearer(key)).status_code == 200
    health = httpx.get(f"{url}/health")
    assert health.status_code == 200 and health.json()["model"] == "model"  # the folder's name
    assert chat_dir not in health.text and "/" not in json.dumps(health.json())


def test_keys_come_from_the_environment_too(monkeypatch):
    monkeypatch.setenv("SID4LLM_API_KEYS", "sk-a, sk-b")
    assert ServeArguments(model="m", api_key=["sk-c"]).keys() == ["sk-c", "sk-a", "sk-b"]


def test_serving_beyond_loopback_without_a_key_warns_loudly(pipe, caplog):
    with caplog.at_level(logging.WARNING, logger="sid4llm.serving.app"):
        create_app(pipe, replace(SETTINGS, host="0.0.0.0"))
    assert "no API key" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="sid4llm.serving.app"):
        create_app(pipe, replace(SETTINGS, host="0.0.0.0", api_key=[KEY]))
    assert "no API key" not in caplog.text


def test_metrics_parse_with_the_prometheus_parser_and_count_what_was_sent(pipe):
    url, stop, _ = start_server(pipe, SETTINGS)
    try:
        for history in HISTORIES[:3]:
            assert httpx.post(f"{url}/v1/recommend", json={"history": history, "k": 3}).status_code == 200
        assert httpx.post(f"{url}/v1/recommend", json={"history": ["no such title at all"], "k": 3}).status_code == 422
        chat = httpx.post(f"{url}/v1/chat/completions", timeout=60,
                          json={"messages": [{"role": "user", "content": "Something like Heat"}], "k": 2})
        assert chat.status_code == 200
        assert metric(url, "sid4llm_requests_total", endpoint="/v1/recommend", status="200") == 3
        assert metric(url, "sid4llm_requests_total", endpoint="/v1/recommend", status="422") == 1
        assert metric(url, "sid4llm_requests_total", endpoint="/v1/chat/completions", status="200") == 1
        assert metric(url, "sid4llm_request_seconds_count", endpoint="/v1/recommend") == 4
        assert metric(url, "sid4llm_batch_users_sum", model="tiny-model") >= 3
        assert metric(url, "sid4llm_completion_tokens_total", model="tiny-model") > 0
        assert metric(url, "sid4llm_model_loaded", model="tiny-model", default="true") == 1
        assert metric(url, "sid4llm_queue_depth", model="tiny-model") == 0
    finally:
        stop()


def test_a_new_version_rolls_in_under_load_with_no_request_lost(pipe, chat_dir):
    url, stop, app = start_server(pipe, replace(SETTINGS, api_key=[KEY]))
    try:
        with httpx.Client(base_url=url, timeout=60, headers=bearer()) as client, ThreadPoolExecutor(8) as pool:
            def ask(n: int) -> httpx.Response:
                return client.post("/v1/recommend", json={"history": HISTORIES[n % len(HISTORIES)], "k": 3})

            before = [pool.submit(ask, n) for n in range(42)]
            swap = client.post("/v1/admin/models", json={"source": chat_dir, "name": "v2"})
            after = [pool.submit(ask, n) for n in range(42, 84)]
            answers = [f.result() for f in before + after]
        assert swap.status_code == 200 and swap.json() == {"name": "v2", "default": True, "items": len(pipe.codebook)}
        assert [a.status_code for a in answers] == [200] * 84  # none lost
        versions = [a.json()["model"] for a in answers]
        assert set(versions) <= {"tiny-model", "v2"} and versions[-1] == "v2"  # every answer names its version
        expected = {tuple(h): [i["item_id"] for i in pipe.recommend(h, k=3)] for h in map(tuple, HISTORIES)}
        assert all([i["item_id"] for i in a.json()["items"]] == expected[tuple(HISTORIES[n % len(HISTORIES)])]
                   for n, a in enumerate(answers))  # the same model's weights: the same answers from both versions
        listed = httpx.get(f"{url}/v1/models", headers=bearer()).json()["data"]
        assert {m["id"]: m["default"] for m in listed} == {"tiny-model": False, "v2": True}
        old = httpx.post(f"{url}/v1/recommend", headers=bearer(), json={"model": "tiny-model", "history": [], "k": 2})
        assert old.status_code == 200 and old.json()["model"] == "tiny-model"  # side by side, chosen by name
        assert httpx.delete(f"{url}/v1/admin/models/v2", headers=bearer()).status_code == 409  # the default stays
        assert httpx.delete(f"{url}/v1/admin/models/tiny-model", headers=bearer()).status_code == 200
        assert [m["id"] for m in httpx.get(f"{url}/v1/models", headers=bearer()).json()["data"]] == ["v2"]
        bad = httpx.post(f"{url}/v1/admin/models", headers=bearer(), json={"source": "/no/such/folder"}, timeout=60)
        assert bad.status_code == 422 and bad.json()["error"]["param"] == "source"
    finally:
        stop()


def test_without_keys_the_admin_endpoints_are_off(pipe, chat_dir):
    url, stop, _ = start_server(pipe, SETTINGS)
    try:
        answer = httpx.post(f"{url}/v1/admin/models", json={"source": chat_dir})
        assert answer.status_code == 403 and "--api_key" in answer.json()["error"]["message"]
    finally:
        stop()


def test_a_request_whose_client_left_is_dropped_from_its_batch(pipe):
    url, stop, app = start_server(pipe, replace(SETTINGS, max_wait_ms=1500))
    try:
        batcher = app.state.registry.get().batcher
        users_before = batcher.users
        with pytest.raises(httpx.ReadTimeout):  # the client hangs up while its request waits for a batch
            httpx.post(f"{url}/v1/recommend", json={"history": HISTORIES[0], "k": 3}, timeout=0.3)
        deadline = time.time() + 10
        while metric(url, "sid4llm_dropped_requests_total", reason="client_left") < 1 and time.time() < deadline:
            time.sleep(0.1)
        assert metric(url, "sid4llm_dropped_requests_total", reason="client_left") == 1
        assert batcher.users == users_before  # never decoded
    finally:
        stop()


def test_a_streamed_chat_sends_its_list_before_its_words(pipe, monkeypatch):
    assistant = pipe.assistant
    real_words = assistant.words

    def slow_words(*args, **kwargs):
        time.sleep(1.0)
        return real_words(*args, **kwargs)

    monkeypatch.setattr(assistant, "words", slow_words)
    url, stop, _ = start_server(pipe, SETTINGS)
    try:
        arrivals = []
        body = {"messages": [{"role": "user", "content": "Something like Heat"}], "k": 3, "stream": True}
        start = time.perf_counter()
        with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=60) as response:
            for line in response.iter_lines():
                if line.startswith("data: {"):
                    arrivals.append((time.perf_counter() - start, json.loads(line[6:])["choices"][0]["delta"]))
        (first_at, first), (words_at, words) = arrivals[0], arrivals[1]
        assert len(first["items"]) == 3 and first["content"] == ""
        assert words["content"] and words_at - first_at > 0.8  # the list did not wait for the words
    finally:
        stop()


@pytest.mark.slow  # the real server in a subprocess, with a swap and SIGTERM
def test_the_soak_script_loses_nothing_on_a_tiny_model(chat_dir, chat_prepared, tmp_path, monkeypatch):
    from test_evaluation import REPO, _script

    monkeypatch.syspath_prepend(str(REPO / "scripts"))  # it starts the server with bench_serve's Server
    soak = _script("soak_serve")
    result = soak.main(soak.SoakArguments(model=chat_dir, data_dir=chat_prepared["data_dir"], requests=150,
                                          concurrency=8, chat_share=0.05, histories=20, json=str(tmp_path / "s.json")))
    assert result["requests"] == 150 and result["lost"] == result["wrong"] == result["server_errors_5xx"] == 0
    assert result["unexpected_status"] == 0 and result["swap"]["status"] == 200
    assert result["sigterm"] == {"in_flight": 8, "answered_200": 8, "exit_code": 0}
    assert json.loads((tmp_path / "s.json").read_text())["counts"]["recommend"] > 100


def test_a_replaced_version_is_freed_once_it_has_drained(chat_dir):
    """The version a server started with, and any loaded later, is released when replaced: nothing (no closure, no
    request state) keeps its weights, so the memory goes back."""
    import gc
    import weakref

    url, stop, app = start_server(RecommendationPipeline.from_pretrained(chat_dir), replace(SETTINGS, api_key=[KEY]))
    try:
        for name in ("tiny-model", "v"):
            load = {"source": chat_dir, "name": name}
            if name == "v":
                assert httpx.post(f"{url}/v1/admin/models", json=load, headers=bearer(), timeout=60).status_code == 200
            old = weakref.ref(app.state.registry.get(name).pipe.recommender.model)
            answer = httpx.post(f"{url}/v1/recommend", json={"history": HISTORIES[0], "k": 2}, headers=bearer())
            assert answer.status_code == 200
            assert httpx.post(f"{url}/v1/admin/models", json=load, headers=bearer(), timeout=60).status_code == 200
            deadline = time.time() + 10
            while old() is not None and time.time() < deadline:
                gc.collect()
                time.sleep(0.1)
            assert old() is None, name
    finally:
        stop()
