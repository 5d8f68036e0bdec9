"""Batched token-by-token generation over a causal LM with a KV cache.

One `Sequence` per request. `Engine.step` advances every running sequence by one token in a single forward
pass; new sequences are prefilled (left padded) and merged into the running batch between steps (continuous
batching), finished ones are dropped from the batch and the cache. Each token is handed to the sequence's
`emit` callback as soon as it is chosen, which is what streaming needs. Everything here runs on the batcher's
worker thread; nothing is shared with the event loop except through `emit`."""

from __future__ import annotations

import inspect
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from . import errors


@dataclass(frozen=True)
class SamplingParams:
    max_new_tokens: int
    do_sample: bool = False
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    typical_p: float | None = None
    repetition_penalty: float | None = None
    frequency_penalty: float | None = None
    stop: tuple[str, ...] = ()
    seed: int | None = None

    @property
    def sampling(self) -> bool:
        # TGI: sample if asked, or if any warper would change the distribution.
        return self.do_sample or self.temperature != 1.0 or bool(self.top_k) or (
            self.top_p is not None and self.top_p < 1.0) or (self.typical_p is not None and self.typical_p < 1.0)


@dataclass
class TokenEvent:
    index: int
    id: int
    text: str
    logprob: float
    special: bool
    # Set on the last token only.
    finish_reason: str | None = None  # length | eos_token | stop_sequence
    generated_text: str | None = None
    generated_tokens: int | None = None
    seed: int | None = None


@dataclass
class ErrorEvent:
    error: errors.ServeError


Emit = Callable[[Any], None]


@dataclass
class Sequence:
    """One request's generation state."""

    request_id: str
    input_ids: list[int]
    params: SamplingParams
    emit: Emit
    deadline: float | None = None
    cancelled: threading.Event = field(default_factory=threading.Event)
    enqueued_at: float = field(default_factory=time.monotonic)
    started_at: float | None = None
    first_token_at: float | None = None
    generated: list[int] = field(default_factory=list)
    text: str = ""
    seed: int | None = None
    generator: torch.Generator | None = None
    # incremental detokenisation (TGI's prefix/read offsets)
    _detok_ids: list[int] = field(default_factory=list)
    _prefix_offset: int = 0
    _read_offset: int = 0
    finished: bool = False
    adapter: str | None = None  # peft adapter name of this row (mixed-adapter batches); None = base model
    meta: dict[str, Any] = field(default_factory=dict)  # the HTTP layer's bookkeeping (tracing)


class Engine:
    """Owns the model and tokenizer; `step()` is the only thing the worker thread calls."""

    def __init__(self, model: Any, tokenizer: Any, *, max_batch_size: int = 16, metrics: Any = None,
                 mixed_adapters: bool = False) -> None:
        self.model = model
        # An unmerged multi-LoRA peft model: every forward names each row's adapter (peft `adapter_names`).
        self.mixed_adapters = mixed_adapters
        self.tokenizer = tokenizer
        self.max_batch_size = max_batch_size
        self.metrics = metrics
        self.device = next(model.parameters()).device
        self.eos_ids = _eos_ids(model, tokenizer)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(self.eos_ids, default=0)
        self.special_ids = set(getattr(tokenizer, "all_special_ids", []) or [])
        self.running: list[Sequence] = []
        self._cache: Any = None
        self._mask: torch.Tensor | None = None      # [B, T] 1 = real token
        self._positions: torch.Tensor | None = None  # [B] position of the next token
        self._next_input: torch.Tensor | None = None  # [B] last chosen token, fed on the next step
        # Joining a running batch pads the KV cache tensors; only plain (non-sliding) layers allow that.
        self.can_join = True
        inner = model.get_base_model() if hasattr(model, "get_base_model") else model  # peft hides it in **kwargs
        params = inspect.signature(inner.forward).parameters
        self._cache_kwarg = "cache" if "cache" in params else "past_key_values"

    # ---- admission -------------------------------------------------------------------------------------

    def free_slots(self) -> int:
        if self.running and not self.can_join:
            return 0
        return self.max_batch_size - len(self.running)

    def add(self, sequences: list[Sequence]) -> None:
        """Prefill `sequences` (left padded, one forward pass) and merge them into the running batch."""
        sequences = [s for s in sequences if not self._drop_if_dead(s)]
        if not sequences:
            return
        now = time.monotonic()
        for seq in sequences:
            seq.started_at = now
            if seq.params.sampling:
                seq.seed = seq.params.seed if seq.params.seed is not None else random.getrandbits(63)
                seq.generator = torch.Generator(device=self.device).manual_seed(seq.seed)
            seq._detok_ids = list(seq.input_ids[-5:])
            seq._prefix_offset = 0
            seq._read_offset = len(seq._detok_ids)
        width = max(len(s.input_ids) for s in sequences)
        ids = torch.full((len(sequences), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(sequences), width), dtype=torch.long)
        for row, seq in enumerate(sequences):
            ids[row, width - len(seq.input_ids):] = torch.tensor(seq.input_ids)
            mask[row, width - len(seq.input_ids):] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        started = time.perf_counter()
        with torch.inference_mode():
            out = self._forward(ids, mask, positions, None, sequences)
        if self.metrics:
            self.metrics.observe_forward("prefill", time.perf_counter() - started, len(sequences))
        cache = _cache_of(out)
        next_positions = mask.sum(-1)
        if not self.running:
            self._cache, self._mask, self._positions = cache, mask, next_positions
            self.running = list(sequences)
            self.can_join = _joinable(cache)
            chosen = self._choose(out.logits[:, -1, :], sequences)
        else:
            chosen_new = self._choose(out.logits[:, -1, :], sequences)
            self._merge(cache, mask, next_positions)
            self.running.extend(sequences)
            chosen = torch.cat([self._next_input, chosen_new])
        self._next_input = chosen
        self._retire()

    # ---- decoding --------------------------------------------------------------------------------------

    def step(self) -> None:
        """Advance every running sequence by one token."""
        if not self.running:
            return
        for seq in self.running:
            self._drop_if_dead(seq)
        self._retire()
        if not self.running:
            return
        ids = self._next_input.view(-1, 1)
        mask = torch.cat([self._mask, torch.ones((len(self.running), 1), dtype=self._mask.dtype,
                                                 device=self.device)], dim=1)
        started = time.perf_counter()
        with torch.inference_mode():
            out = self._forward(ids, mask, self._positions.view(-1, 1), self._cache, self.running)
        if self.metrics:
            self.metrics.observe_forward("decode", time.perf_counter() - started, len(self.running))
        self._cache, self._mask = _cache_of(out), mask
        self._positions = self._positions + 1
        self._next_input = self._choose(out.logits[:, -1, :], self.running)
        self._retire()

    def _forward(self, ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, cache: Any,
                 seqs: list[Sequence]) -> Any:
        # transformers 5.x renamed `past_key_values` to `cache`; logits_to_keep=1 skips the LM head for
        # every prompt position but the last (the vocabulary projection dominates small models' prefill).
        kwargs: dict[str, Any] = {self._cache_kwarg: cache} if cache is not None else {}
        if self.mixed_adapters:
            # Rows follow `seqs` order; the cache rows were built with the same adapter (merge/retire keep order).
            kwargs["adapter_names"] = [s.adapter or "__base__" for s in seqs]
        return self.model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True,
                          logits_to_keep=1, **kwargs)

    def _choose(self, logits: torch.Tensor, seqs: list[Sequence]) -> torch.Tensor:
        """Pick one token per row with that request's parameters, emit it and mark finished sequences."""
        logits = logits.float()
        chosen = torch.empty(len(seqs), dtype=torch.long, device=logits.device)
        greedy_rows = [i for i, s in enumerate(seqs) if not s.params.sampling and not _penalised(s.params)]
        if greedy_rows:
            rows = torch.tensor(greedy_rows, device=logits.device)
            logprobs = torch.log_softmax(logits[rows], dim=-1)
            best = logprobs.argmax(dim=-1)
            chosen[rows] = best
            picked = logprobs.gather(1, best.view(-1, 1)).view(-1).tolist()
            for i, token, lp in zip(greedy_rows, best.tolist(), picked):
                self._accept(seqs[i], token, lp)
        for i, seq in enumerate(seqs):
            if i in greedy_rows:
                continue
            token, lp = _pick(logits[i], seq)
            chosen[i] = token
            self._accept(seq, token, lp)
        return chosen

    def _accept(self, seq: Sequence, token: int, logprob: float) -> None:
        if seq.finished:  # dropped (cancelled/timed out) while its row was still in the batch
            return
        seq.generated.append(token)
        special = token in self.special_ids
        text = self._decode_incremental(seq, token)
        if not special:
            seq.text += text
        now = time.monotonic()
        if seq.first_token_at is None:
            seq.first_token_at = now
        finish = None
        if token in self.eos_ids:
            finish = "eos_token"
        elif seq.params.stop and any(stop in seq.text for stop in seq.params.stop):
            finish = "stop_sequence"
        elif len(seq.generated) >= seq.params.max_new_tokens:
            finish = "length"
        event = TokenEvent(index=len(seq.generated), id=token, text=text, logprob=logprob, special=special)
        if finish:
            seq.finished = True
            event.finish_reason = finish
            event.generated_text = self.tokenizer.decode(seq.generated, skip_special_tokens=True)
            event.generated_tokens = len(seq.generated)
            event.seed = seq.seed
        seq.emit(event)

    def _decode_incremental(self, seq: Sequence, token: int) -> str:
        if token in self.special_ids:
            return self.tokenizer.convert_ids_to_tokens(token)
        seq._detok_ids.append(token)
        prefix = self.tokenizer.decode(seq._detok_ids[seq._prefix_offset:seq._read_offset])
        full = self.tokenizer.decode(seq._detok_ids[seq._prefix_offset:])
        # Hold back a partial multi-byte character until the next token completes it.
        if len(full) > len(prefix) and not full.endswith("\ufffd"):
            seq._prefix_offset, seq._read_offset = seq._read_offset, len(seq._detok_ids)
            return full[len(prefix):]
        return ""

    def _drop_if_dead(self, seq: Sequence) -> bool:
        if seq.finished:
            return True
        if seq.cancelled.is_set():
            seq.finished = True
            return True
        if seq.deadline is not None and time.monotonic() > seq.deadline:
            seq.finished = True
            seq.emit(ErrorEvent(errors.timed_out(seq.deadline - seq.enqueued_at)))
            return True
        return False

    def _retire(self) -> None:
        """Drop finished rows from the batch, the cache and the mask; trim all-padding columns."""
        keep = [i for i, s in enumerate(self.running) if not s.finished]
        if len(keep) == len(self.running):
            return
        if not keep:
            self.running, self._cache, self._mask, self._positions, self._next_input = [], None, None, None, None
            return
        index = torch.tensor(keep, device=self.device)
        self.running = [self.running[i] for i in keep]
        self._cache.batch_select_indices(index)
        self._mask = self._mask[index]
        self._positions = self._positions[index]
        self._next_input = self._next_input[index]
        first_real = int(self._mask.any(dim=0).nonzero()[0])
        if first_real > 0 and self.can_join:
            for layer in self._cache.layers:
                layer.keys, layer.values = layer.keys[:, :, first_real:], layer.values[:, :, first_real:]
            self._mask = self._mask[:, first_real:]

    def _merge(self, cache: Any, mask: torch.Tensor, positions: torch.Tensor) -> None:
        """Concatenate a freshly prefilled batch onto the running one, left padding the shorter cache."""
        old_len, new_len = self._mask.shape[1], mask.shape[1]
        width = max(old_len, new_len)
        for old, new in zip(self._cache.layers, cache.layers):
            old.keys = torch.cat([_left_pad(old.keys, width), _left_pad(new.keys, width)])
            old.values = torch.cat([_left_pad(old.values, width), _left_pad(new.values, width)])
        self._mask = torch.cat([_left_pad_mask(self._mask, width), _left_pad_mask(mask, width)])
        self._positions = torch.cat([self._positions, positions])


def _penalised(p: SamplingParams) -> bool:
    return bool(p.repetition_penalty and p.repetition_penalty != 1.0) or bool(p.frequency_penalty)


def _pick(logits: torch.Tensor, seq: Sequence) -> tuple[int, float]:
    """Penalties, then temperature/top-k/top-p, then sample (or argmax when not sampling)."""
    p = seq.params
    if _penalised(p):
        logits = logits.clone()
        if p.repetition_penalty and p.repetition_penalty != 1.0:
            seen = torch.tensor(sorted(set(seq.input_ids) | set(seq.generated)), device=logits.device)
            scores = logits[seen]
            logits[seen] = torch.where(scores > 0, scores / p.repetition_penalty, scores * p.repetition_penalty)
        if p.frequency_penalty and seq.generated:
            ids, counts = torch.tensor(seq.generated, device=logits.device).unique(return_counts=True)
            logits[ids] -= p.frequency_penalty * counts.to(logits.dtype)
    if not p.sampling:
        logprobs = torch.log_softmax(logits, dim=-1)
        token = int(logprobs.argmax())
        return token, float(logprobs[token])
    logits = logits / p.temperature
    logprobs = torch.log_softmax(logits, dim=-1)
    filtered = logits.clone()
    if p.top_k:
        kth = torch.topk(filtered, min(p.top_k, filtered.numel())).values[-1]
        filtered[filtered < kth] = float("-inf")
    if p.top_p is not None and p.top_p < 1.0:
        sorted_logits, order = torch.sort(filtered, descending=True)
        cumulative = torch.softmax(sorted_logits, dim=-1).cumsum(-1)
        drop = cumulative > p.top_p
        drop[1:] = drop[:-1].clone()  # keep the token that crosses the threshold
        drop[0] = False
        filtered[order[drop]] = float("-inf")
    if p.typical_p is not None and p.typical_p < 1.0:
        probs = torch.softmax(filtered, dim=-1)
        entropy = -(probs * torch.log_softmax(filtered, dim=-1)).nan_to_num().sum()
        deviation = (-torch.log_softmax(filtered, dim=-1) - entropy).abs()
        order = deviation.argsort()
        cumulative = probs[order].cumsum(-1)
        drop = cumulative > p.typical_p
        drop[1:] = drop[:-1].clone()
        drop[0] = False
        filtered[order[drop]] = float("-inf")
    probs = torch.softmax(filtered, dim=-1)
    token = int(torch.multinomial(probs, 1, generator=seq.generator))
    return token, float(logprobs[token])


def _cache_of(out: Any) -> Any:
    cache = getattr(out, "cache", None)
    return cache if cache is not None else out.past_key_values


def _left_pad(t: torch.Tensor, width: int) -> torch.Tensor:
    missing = width - t.shape[2]
    if missing == 0:
        return t
    pad = torch.zeros((*t.shape[:2], missing, *t.shape[3:]), dtype=t.dtype, device=t.device)
    return torch.cat([pad, t], dim=2)


def _left_pad_mask(m: torch.Tensor, width: int) -> torch.Tensor:
    missing = width - m.shape[1]
    if missing == 0:
        return m
    return torch.cat([torch.zeros((m.shape[0], missing), dtype=m.dtype, device=m.device), m], dim=1)


def _joinable(cache: Any) -> bool:
    from transformers.cache_utils import DynamicLayer

    layers = getattr(cache, "layers", None)
    return bool(layers) and all(type(layer) is DynamicLayer for layer in layers)


def _eos_ids(model: Any, tokenizer: Any) -> set[int]:
    ids: set[int] = set()
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    for value in (eos, tokenizer.eos_token_id):
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, (list, tuple)):
            ids.update(int(v) for v in value)
    return ids
