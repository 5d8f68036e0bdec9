"""Make the embedded default's dataset: support tickets -> a JSON triage record.

A small, deterministic, learnable task: the base model does not know the exact JSON shape and label set,
a LoRA-tuned one should, so evaluation (jsonValid, exactMatch, rougeL) can show a real difference.
Every ticket is distinct (so exact dedupe keeps all rows); about one in ten carries a contact detail
(made-up email or phone number) so the pipeline's PII redaction has something to do.
Written for tuneops; licence in LICENSE.md next to this file.
Run: python examples/data/make_support_tickets.py > examples/data/support-tickets.jsonl
"""

import json
import random

PRODUCTS = {
    "billing": ["invoice", "refund", "charge", "payment", "subscription"],
    "login": ["password", "2FA code", "sign-in", "account lock", "SSO"],
    "api": ["rate limit", "timeout", "500 error", "webhook", "API key rotation"],
    "mobile": ["iOS app", "Android app", "push notification", "offline mode", "app update"],
}
SEVERITY_CUES = {
    "high": ["production is down", "all our users are blocked", "we are losing money", "urgent"],
    "medium": ["it keeps happening", "several colleagues are affected", "this is slowing us down"],
    "low": ["no rush", "just curious", "when you have a moment", "minor annoyance"],
}
TEMPLATES = [
    "Hi, I have a problem with the {thing}: {cue}.",
    "Our team noticed an issue with {thing} today, {cue}.",
    "Hello support, the {thing} is not working for me and {cue}.",
    "Can you look into the {thing}? {cue_cap}.",
    "Since this morning the {thing} fails; {cue}.",
]
CONTACTS = [" You can reach me at {name}@example.com.", " Call me back on +1 555 0100 {ext}.",
            " My email is {name}.support@example.org."]
NAMES = ["alex", "sam", "maria", "kenji", "priya", "tom", "lena", "omar", "chloe", "ivan"]
SYSTEM = "You triage support tickets. Answer with JSON only: {\"category\", \"severity\", \"topic\"}."


def main(n: int = 240, seed: int = 7) -> None:
    rng = random.Random(seed)
    seen: set[str] = set()
    while len(seen) < n:
        category = rng.choice(sorted(PRODUCTS))
        thing = rng.choice(PRODUCTS[category])
        severity = rng.choice(sorted(SEVERITY_CUES))
        cue = rng.choice(SEVERITY_CUES[severity])
        text = rng.choice(TEMPLATES).format(thing=thing, cue=cue, cue_cap=cue[0].upper() + cue[1:])
        if rng.random() < 0.1:
            text += rng.choice(CONTACTS).format(name=rng.choice(NAMES), ext=rng.randint(10, 99))
        if text.lower() in seen:
            continue
        seen.add(text.lower())
        answer = json.dumps({"category": category, "severity": severity, "topic": thing})
        print(json.dumps({"messages": [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": text},
            {"role": "assistant", "content": answer},
        ]}))


if __name__ == "__main__":
    main()
