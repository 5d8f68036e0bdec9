"""The server's state: configuration, the loaded model, the batcher, readiness and the per-request plumbing
between the event loop and the batcher's worker thread."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import AsyncIterator, Callable

from tuneops import __version__

from . import errors, tracing
from .batcher import Batcher
from .drift import PROFILE_FILE, DriftMonitor, DriftProfile, EmbeddingDrift, profile_prompts
from .engine import Engine, ErrorEvent, SamplingParams, Sequence, TokenEvent
from .adapters import BASE, AdapterInfo, AdapterSet
from .loader import LoadedModel
from .metrics import ServeMetrics
from .schemas import GenerateParameters, check_parameters, check_text

log = logging.getLogger("tuneops.serve")

KEEPALIVE_S = 15.0  # TGI/axum send an SSE comment this often on idle streams


@dataclass
class ServeConfig:
    max_input_tokens: int = 1024
    max_total_tokens: int = 2048
    max_concurrent_requests: int = 128
    max_batch_size: int = 16
    request_timeout_s: float = 120.0
    max_input_chars: int = 200_000
    payload_limit: int = 2_000_000         # bytes, like TGI's --payload-limit
    drain_timeout_s: float = 30.0
    api_token: str | None = None           # bearer token; None = no auth
    cors_origins: list[str] = field(default_factory=list)  # empty = CORS off
    drift_reference: Path | None = None    # a drift profile (.json) or reference prompts (.jsonl)
    drift_window: int = 200
    drift_min_samples: int = 30
    psi_threshold: float = 0.25
    drift_embeddings: bool = True          # sentence-embedding drift (needs the profile's embeddings + the model)
    embedding_centroid_threshold: float = 0.1
    embedding_outlier_threshold: float = 0.25
    embedding_queue_size: int = 256        # prompts waiting to be embedded; more are dropped and counted
    log_prompts: bool = False              # privacy: prompts are not logged unless asked
    adapters_file: Path | None = None      # adapters.json ({"default": NAME}) polled for the default adapter
    version: str = __version__

    @property
    def fingerprint(self) -> str:
        return f"{self.version}-native"


@dataclass
class Prepared:
    """A validated, tokenised request."""

    input_ids: list[int]
    sampling: SamplingParams
    params: GenerateParameters
    drift_text: str | None = None  # what drift is measured on when it is not the raw input (chat: the messages)
    embed_text: str | None = None  # what embedding drift embeds when it is not the raw input (chat: user turns)
    tokenize_s: float = 0.0
    adapter: AdapterInfo | None = None  # resolved at admission: a later default switch does not move it


@dataclass
class Outcome:
    """What a finished generation produced."""

    tokens: list[TokenEvent]
    final: TokenEvent
    input_length: int


class ServerState:
    def __init__(self, config: ServeConfig, load: Callable[[], LoadedModel]) -> None:
        self.config = config
        self.metrics = ServeMetrics()
        self._load = load
        self.loaded: LoadedModel | None = None
        self.engine: Engine | None = None
        self.batcher: Batcher | None = None
        self.drift: DriftMonitor | None = None
        self.ready = False
        self.draining = False
        self.load_error: str | None = None
        self.started = threading.Event()
        self._stop_watch = threading.Event()

    # ---- lifecycle (run in a thread: loading takes seconds to minutes) -----------------------------------

    def start(self) -> None:
        try:
            begun = time.monotonic()
            self.loaded = self._load()
            self.engine = Engine(self.loaded.model, self.loaded.tokenizer,
                                 max_batch_size=self.config.max_batch_size, metrics=self.metrics,
                                 mixed_adapters=self.adapters is not None)
            self._watch_adapters_file()
            self._warm_up()
            self.batcher = Batcher(self.engine, max_concurrent_requests=self.config.max_concurrent_requests,
                                   metrics=self.metrics)
            self.batcher.start()
            self.drift = self._drift_monitor()
            self.ready = True
            self.metrics.ready.set(1)
            log.info("model ready", extra={"model_id": self.loaded.model_id,
                                           "load_seconds": round(time.monotonic() - begun, 2)})
        except Exception as exc:  # noqa: BLE001 - reported by /health and /livez, and logged
            self.load_error = f"{type(exc).__name__}: {exc}"
            log.exception("model failed to load")
        finally:
            self.started.set()

    def _drift_monitor(self) -> DriftMonitor | None:
        """Token drift whenever there is a reference; embedding drift too when the reference has embeddings
        and the embedding model is installed (else the report says why it is off)."""
        cfg = self.config
        embedder, why_not = None, None
        if cfg.drift_embeddings:
            from .embeddings import EmbeddingUnavailable, load_embedder

            try:
                embedder = load_embedder()
            except EmbeddingUnavailable as exc:
                why_not = str(exc)
        else:
            why_not = "disabled by configuration (--no-drift-embeddings)"
        profile = self._drift_profile(embedder)
        if profile is None:
            return None
        embedding = None
        if embedder is not None and profile.embedding is None:
            why_not = "the drift reference has no embeddings (written without the embedding model); rebuild it"
        elif embedder is not None and profile.embedding.model != embedder.name:
            why_not = f"the drift reference embeds with {profile.embedding.model}, this server with {embedder.name}"
        elif embedder is not None:
            embedding = EmbeddingDrift(
                profile.embedding, embedder.embed, window=cfg.drift_window, min_samples=cfg.drift_min_samples,
                centroid_threshold=cfg.embedding_centroid_threshold, outlier_threshold=cfg.embedding_outlier_threshold,
                queue_size=cfg.embedding_queue_size, on_drop=self.metrics.drift_embedding_dropped.inc,
                thread_init=embedder.thread_init)
        return DriftMonitor(profile, window=cfg.drift_window, min_samples=cfg.drift_min_samples,
                            psi_threshold=cfg.psi_threshold, embedding=embedding, embedding_disabled=why_not)

    def _drift_profile(self, embedder=None) -> DriftProfile | None:
        """--drift-reference (profile .json or prompts .jsonl), else drift_profile.json beside the model."""
        reference = self.config.drift_reference
        if reference is None and self.loaded is not None:
            beside = self.loaded.directory / PROFILE_FILE
            reference = beside if beside.is_file() else None
        if reference is None:
            return None
        if Path(reference).suffix == ".jsonl":
            return profile_prompts(Path(reference), self.tokenize, embedder=embedder)
        return DriftProfile.load(Path(reference))

    def _warm_up(self) -> None:
        """One tiny generation so the first request does not pay for lazy initialisation."""
        assert self.engine is not None
        done = threading.Event()
        seq = Sequence("warmup", self.tokenize("Hello")[:8] or [0], SamplingParams(max_new_tokens=2),
                       emit=lambda e: done.set() if getattr(e, "finish_reason", None) else None)
        self.engine.add([seq])
        while self.engine.running:
            self.engine.step()

    def _watch_adapters_file(self) -> None:
        path = self.config.adapters_file
        if path is None or self.adapters is None:
            return
        from .adapters import read_default, watch_file

        if path.exists() and (wanted := read_default(path)):
            self.adapters.set_default(wanted)  # before ready: an unknown name fails the load, visibly
        threading.Thread(target=watch_file, args=(self.adapters, path, self._stop_watch), daemon=True,
                         name="tuneops-adapters-file").start()

    @property
    def adapters(self) -> AdapterSet | None:
        return self.loaded.adapters if self.loaded else None

    def stop(self) -> None:
        """Graceful shutdown: not ready any more, refuse new requests, let admitted ones finish."""
        self._stop_watch.set()
        self.draining = True
        self.ready = False
        self.metrics.ready.set(0)
        if self.drift:
            self.drift.close()
        if self.batcher:
            drained = self.batcher.stop(self.config.drain_timeout_s)
            log.info("shutdown", extra={"drained": drained})

    # ---- request plumbing ------------------------------------------------------------------------------

    def require_ready(self) -> None:
        if self.draining:
            raise errors.not_ready("server is shutting down")
        if not self.ready:
            raise errors.not_ready(self.load_error or "model is not loaded yet")

    @property
    def model_id(self) -> str:
        return self.loaded.model_id if self.loaded else "unknown"

    @property
    def tokenizer(self):
        assert self.loaded is not None
        return self.loaded.tokenizer

    def tokenize(self, text: str, *, add_special_tokens: bool = True) -> list[int]:
        return list(self.loaded.tokenizer(text, add_special_tokens=add_special_tokens)["input_ids"])

    def prepare(self, text: str, params: GenerateParameters, *, field_name: str = "inputs",
                add_special_tokens: bool = True, adapter: str | None = None,
                adapter_field: str = "parameters.adapter_id") -> Prepared:
        """TGI validation: parameter ranges, prompt size, token limits. Raises 422 `ServeError`s.
        `adapter` picks one of several loaded adapters (ignored when the server serves one model)."""
        started = time.perf_counter()
        chosen = self.adapters.resolve(adapter, field_name=adapter_field) if self.adapters else None
        check_text(field_name, text, max_chars=self.config.max_input_chars)
        check_parameters(params)
        ids = self.tokenize(text, add_special_tokens=add_special_tokens)
        if params.truncate:
            ids = ids[-params.truncate:]
        if not ids:
            raise errors.validation(f"`{field_name}` tokenizes to no tokens")
        cfg = self.config
        if len(ids) > cfg.max_input_tokens:
            raise errors.validation(
                f"`{field_name}` tokens must be <= {cfg.max_input_tokens}. Given: {len(ids)}")
        max_new = params.max_new_tokens if params.max_new_tokens is not None else cfg.max_total_tokens - len(ids)
        if len(ids) + max_new > cfg.max_total_tokens:
            raise errors.validation(
                f"`inputs` tokens + `max_new_tokens` must be <= {cfg.max_total_tokens}. "
                f"Given: {len(ids)} `inputs` tokens and {max_new} `max_new_tokens`")
        sampling = SamplingParams(
            max_new_tokens=max_new, do_sample=params.do_sample,
            temperature=params.temperature if params.temperature is not None else 1.0,
            top_k=params.top_k, top_p=params.top_p, typical_p=params.typical_p,
            repetition_penalty=params.repetition_penalty, frequency_penalty=params.frequency_penalty,
            stop=tuple(params.stop), seed=params.seed)
        elapsed = time.perf_counter() - started
        self.metrics.validation_duration.observe(elapsed)
        return Prepared(ids, sampling, params, tokenize_s=elapsed, adapter=chosen)

    def submit(self, request_id: str, prepared: Prepared) -> tuple[Sequence, asyncio.Queue]:
        """Admit the request (429 if full) and return its sequence and the queue its tokens arrive on."""
        self.require_ready()
        assert self.batcher is not None
        loop = asyncio.get_running_loop()
        events: asyncio.Queue = asyncio.Queue()
        seq = Sequence(request_id, prepared.input_ids, prepared.sampling,
                       emit=lambda event: loop.call_soon_threadsafe(events.put_nowait, event),
                       deadline=time.monotonic() + self.config.request_timeout_s,
                       adapter=prepared.adapter.peft_name if prepared.adapter else None)
        seq.meta["tokenize_s"] = prepared.tokenize_s
        self.metrics.counters.inc("tgi_request_count")
        try:
            self.batcher.submit(seq)
        except errors.ServeError as exc:
            self.record_failure(exc)
            raise
        self.metrics.in_flight.inc()
        if self.adapters is not None:
            self.metrics.adapter_requests.labels(prepared.adapter.name if prepared.adapter else BASE).inc()
        self.metrics.input_length.observe(len(prepared.input_ids))
        self.metrics.max_new_tokens.observe(prepared.sampling.max_new_tokens)
        self.metrics.tokens_in.inc(len(prepared.input_ids))
        if self.drift:
            text = prepared.embed_text
            if text is None and self.drift.embedding is not None:  # raw-input routes: the prompt as tokenised
                text = self.tokenizer.decode(prepared.input_ids, skip_special_tokens=True)
            self.drift.observe(self.tokenize(prepared.drift_text) if prepared.drift_text is not None
                               else prepared.input_ids, text=text)
        return seq, events

    async def stream(self, seq: Sequence, events: asyncio.Queue) -> AsyncIterator[TokenEvent | None]:
        """Tokens as they come (None = keep-alive tick). Raises the request's `ServeError`; always releases it."""
        succeeded = False
        outcome = "cancelled"
        try:
            while True:
                remaining = (seq.deadline or float("inf")) - time.monotonic()
                if remaining < -1.0:  # the worker reports timeouts itself; this is the backstop
                    raise errors.timed_out(self.config.request_timeout_s)
                try:
                    event = await asyncio.wait_for(events.get(), timeout=max(0.05, min(remaining + 1.0, KEEPALIVE_S)))
                except TimeoutError:
                    yield None
                    continue
                if isinstance(event, ErrorEvent):
                    raise event.error
                yield event
                if event.finish_reason:
                    succeeded = True
                    self._record_success(seq)
                    return
        except errors.ServeError as exc:
            outcome = exc.error_type
            self.record_failure(exc)
            raise
        finally:
            tracing.record_request(seq.request_id, seq, tokenize_s=seq.meta.get("tokenize_s", 0.0),
                                   outcome="ok" if succeeded else outcome)
            if not succeeded:
                seq.cancelled.set()  # client gone or failed: stop generating for it
            assert self.batcher is not None
            self.batcher.done(seq)
            self.metrics.in_flight.dec()

    async def run_to_end(self, request_id: str, prepared: Prepared) -> Outcome:
        seq, events = self.submit(request_id, prepared)
        tokens = [event async for event in self.stream(seq, events) if event is not None]
        return Outcome(tokens, tokens[-1], len(prepared.input_ids))

    def record_failure(self, exc: errors.ServeError) -> None:
        if not exc.counted:
            exc.counted = True
            self.metrics.counters.inc("tgi_request_failure", err=exc.error_type)

    def _record_success(self, seq: Sequence) -> None:
        m = self.metrics
        now = time.monotonic()
        m.counters.inc("tgi_request_success")
        m.request_duration.observe(now - seq.enqueued_at)
        if seq.started_at is not None:
            inference = now - seq.started_at
            m.inference_duration.observe(inference)
            if seq.generated:
                m.time_per_token.observe(inference / len(seq.generated))
                m.tokens_per_second.observe(len(seq.generated) / max(inference, 1e-9))
        if seq.first_token_at is not None:
            m.ttft.observe(seq.first_token_at - seq.enqueued_at)
        m.generated_tokens.observe(len(seq.generated))
        m.tokens_out.inc(len(seq.generated))
        extra = {"input_tokens": len(seq.input_ids), "generated_tokens": len(seq.generated),
                 "duration_ms": round((now - seq.enqueued_at) * 1000, 1),
                 "ttft_ms": round(((seq.first_token_at or now) - seq.enqueued_at) * 1000, 1)}
        log.info("generated", extra=extra)

    def drift_report(self) -> dict:
        if not self.drift:
            self.metrics.drift_embedding_enabled.set(0)
            return {"enabled": False, "reason": "no drift reference: no drift_profile.json beside the model and "
                                                "no --drift-reference", "embedding": {"enabled": False}}
        report = {"enabled": True, **self.drift.report()}
        for feature, value in report["psi"].items():
            self.metrics.drift_psi.labels(feature).set(value)
        if report["ks"]:
            self.metrics.drift_ks.set(report["ks"]["statistic"])
        embedding = report["embedding"]
        self.metrics.drift_embedding_enabled.set(1 if embedding["enabled"] else 0)
        if embedding.get("centroid_distance") is not None:
            self.metrics.drift_embedding_centroid.set(embedding["centroid_distance"])
            self.metrics.drift_embedding_outliers.set(embedding["outlier_fraction"])
        self.metrics.drift_detected.set(1 if report["drift"] else 0)
        return report
