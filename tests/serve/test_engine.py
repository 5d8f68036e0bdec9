"""The engine on its own: batched (and joined mid-flight) greedy decoding equals one-at-a-time decoding and
transformers' own `generate`; stop sequences, seeds and limits behave like TGI's."""

from __future__ import annotations

import pytest
import torch

from tuneops.runtime.serve.engine import Engine, SamplingParams, Sequence, TokenEvent

PROMPTS = ["Hello there", "The capital of France is", "def fibonacci(n):", "Once upon a time, in a land far away,"]


def run(engine: Engine, seqs: list[Sequence], *, join_after: dict[int, list[Sequence]] | None = None) -> None:
    """Drive the engine like the batcher does; `join_after[k]` sequences are added after decode step k."""
    engine.add(seqs)
    step = 0
    pending = dict(join_after or {})
    while engine.running or pending:
        step += 1
        engine.step()
        if step in pending:
            engine.add(pending.pop(step))


def seq(tokenizer, prompt: str, **params) -> tuple[Sequence, list[TokenEvent]]:
    events: list[TokenEvent] = []
    params.setdefault("max_new_tokens", 8)
    ids = tokenizer(prompt)["input_ids"]
    return Sequence(prompt, ids, SamplingParams(**params), emit=events.append), events


def texts(events_lists: list[list[TokenEvent]]) -> list[str]:
    return [events[-1].generated_text for events in events_lists]


@pytest.fixture()
def engine(tiny_loaded) -> Engine:
    return Engine(tiny_loaded.model, tiny_loaded.tokenizer, max_batch_size=8)


def test_batched_greedy_equals_unbatched_and_transformers_generate(engine, tiny_loaded):
    alone = []
    for prompt in PROMPTS:
        s, events = seq(engine.tokenizer, prompt)
        run(engine, [s])
        alone.append(events)
    pairs = [seq(engine.tokenizer, p) for p in PROMPTS]
    run(engine, [s for s, _ in pairs])
    batched = [events for _, events in pairs]
    assert texts(batched) == texts(alone)
    assert [[e.id for e in ev] for ev in batched] == [[e.id for e in ev] for ev in alone]
    # and the reference implementation agrees on the token ids
    tok, model = tiny_loaded.tokenizer, tiny_loaded.model
    for prompt, events in zip(PROMPTS, alone):
        ids = torch.tensor([tok(prompt)["input_ids"]])
        ref = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=8, do_sample=False,
                             pad_token_id=tok.pad_token_id)[0, ids.shape[1]:].tolist()
        assert [e.id for e in events] == ref
    assert all(e[-1].finish_reason == "length" and e[-1].generated_tokens == 8 for e in batched)
    assert engine.running == []


def test_sequences_joining_a_running_batch_and_leaving_early_decode_the_same(engine):
    expected = []
    for prompt, n in zip(PROMPTS, (3, 9, 5, 7)):
        s, events = seq(engine.tokenizer, prompt, max_new_tokens=n)
        run(engine, [s])
        expected.append([e.id for e in events])
    pairs = [seq(engine.tokenizer, p, max_new_tokens=n) for p, n in zip(PROMPTS, (3, 9, 5, 7))]
    # two start together, one joins after 2 steps (while the first is about to finish), one after 4
    run(engine, [pairs[0][0], pairs[1][0]], join_after={2: [pairs[2][0]], 4: [pairs[3][0]]})
    assert [[e.id for e in events] for _, events in pairs] == expected


def test_stop_sequence_is_kept_and_reported(engine):
    s, events = seq(engine.tokenizer, PROMPTS[1], max_new_tokens=10)
    run(engine, [s])
    full = events[-1].generated_text
    stop = full[len(full) // 2:][:3]  # a piece of what the model says
    s2, events2 = seq(engine.tokenizer, PROMPTS[1], max_new_tokens=10, stop=(stop,))
    run(engine, [s2])
    assert events2[-1].finish_reason == "stop_sequence"
    assert stop in events2[-1].generated_text and len(events2) < len(events)
    assert full.startswith(events2[-1].generated_text)


def test_seeded_sampling_is_reproducible_and_reports_the_seed(engine):
    runs = []
    for _ in range(2):
        s, events = seq(engine.tokenizer, PROMPTS[0], do_sample=True, temperature=1.5, top_k=50, top_p=0.9, seed=7)
        run(engine, [s])
        runs.append([e.id for e in events])
        assert events[-1].seed == 7
    assert runs[0] == runs[1]
    s, events = seq(engine.tokenizer, PROMPTS[0], do_sample=True, seed=None)
    run(engine, [s])
    assert isinstance(events[-1].seed, int)


def test_repetition_penalty_changes_greedy_choice_away_from_repeats(engine):
    s, events = seq(engine.tokenizer, "the the the the the the", max_new_tokens=6, repetition_penalty=50.0)
    run(engine, [s])
    the = set(engine.tokenizer("the the")["input_ids"])
    assert not the & {e.id for e in events}
    assert len({e.id for e in events}) == 6  # nothing already seen is chosen again


def test_cancelled_sequence_leaves_the_batch(engine):
    a, ea = seq(engine.tokenizer, PROMPTS[0], max_new_tokens=50)
    b, eb = seq(engine.tokenizer, PROMPTS[1], max_new_tokens=5)
    engine.add([a, b])
    engine.step()
    a.cancelled.set()
    while engine.running:
        engine.step()
    assert eb[-1].finish_reason == "length"
    assert len(ea) <= 3 and ea[-1].finish_reason is None
