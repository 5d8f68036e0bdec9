"""Make the embedded default's dataset: support tickets -> a JSON triage record.

A small, deterministic, learnable task: the base model does not know the exact JSON shape and label set,
a LoRA-tuned one should, so evaluation (jsonValid, exactMatch, rougeL) can show a real difference.
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
SYSTEM = "You triage support tickets. Answer with JSON only: {\"category\", \"severity\", \"topic\"}."


def main(n: int = 240, seed: int = 7) -> None:
    rng = random.Random(seed)
    for _ in range(n):
        category = rng.choice(sorted(PRODUCTS))
        thing = rng.choice(PRODUCTS[category])
        severity = rng.choice(sorted(SEVERITY_CUES))
        cue = rng.choice(SEVERITY_CUES[severity])
        text = rng.choice(TEMPLATES).format(thing=thing, cue=cue, cue_cap=cue[0].upper() + cue[1:])
        answer = json.dumps({"category": category, "severity": severity, "topic": thing})
        print(json.dumps({"messages": [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": text},
            {"role": "assistant", "content": answer},
        ]}))


if __name__ == "__main__":
    main()
