"""Duplicate detection: exact (64-bit hash of the normal form) and near (MinHash-LSH over character
5-grams, language-agnostic).

Exact dedupe keeps 8 bytes per distinct row (sorted uint64 runs plus a small set of recent hashes) instead
of a Python set's ~70 bytes, so memory stays nearly flat at millions of rows.
"""

from __future__ import annotations

import xxhash

from .errors import RowError


def row_hash(normal_form: str) -> int:
    return xxhash.xxh3_64_intdigest(normal_form.encode("utf-8", "surrogatepass"))


class CompactHashSet:
    """A set of 64-bit ints at ~8 bytes each; `add(h)` returns False when `h` was already present.

    Storage is a list of sorted uint64 runs of at most RUN_MAX entries (1 MiB each) plus a small Python set
    of recent hashes: growing never copies more than two runs at once, so memory grows by the 8 bytes per
    row and nothing else (one big sorted array re-merged every 64k rows peaked at several times its size).
    `add_many` does the same for a whole batch with numpy (no per-row Python)."""

    RUN_MAX = 1 << 17
    RECENT_MAX = 1 << 14
    FILTER_SLOTS = 1 << 22  # 4 MiB: a one-byte-per-slot filter over the runs' keys, so `add` skips most searches

    def __init__(self) -> None:
        import numpy as np

        self._runs: list = []  # sorted numpy uint64 arrays, sizes non-increasing (merged like a binary counter)
        self._recent: set[int] = set()
        self._filter = np.zeros(self.FILTER_SLOTS, dtype=np.uint8)

    def __len__(self) -> int:
        return sum(len(r) for r in self._runs) + len(self._recent)

    def __contains__(self, h: int) -> bool:
        if h in self._recent:
            return True
        if not self._filter[h & (self.FILTER_SLOTS - 1)]:
            return False
        import numpy as np

        key = np.uint64(h)
        for run in self._runs:
            i = run.searchsorted(key)
            if i < len(run) and run[i] == key:
                return True
        return False

    def add(self, h: int) -> bool:
        if h in self:
            return False
        self._recent.add(h)
        if len(self._recent) >= self.RECENT_MAX:
            import numpy as np

            self._push(np.sort(np.fromiter(self._recent, dtype=np.uint64, count=len(self._recent))))
            self._recent = set()
        return True

    def add_many(self, keys):
        """`keys`: a uint64 numpy array. Adds them all; returns a bool array, True where a key was new (its
        first occurrence in `keys`, and not seen before) — what calling `add` on each in order returns."""
        import numpy as np

        first = np.zeros(len(keys), dtype=bool)
        if not len(keys):
            return first
        uniq, where = np.unique(keys, return_index=True)
        new = np.ones(len(uniq), dtype=bool)
        maybe = np.flatnonzero(self._filter[uniq & np.uint64(self.FILTER_SLOTS - 1)])  # the rest are new
        if len(maybe):
            candidates = uniq[maybe]
            for run in self._runs:
                i = run.searchsorted(candidates)
                inside = i < len(run)
                hit = np.zeros(len(candidates), dtype=bool)
                hit[inside] = run[i[inside]] == candidates[inside]
                new[maybe[hit]] = False
        if self._recent:
            new &= np.fromiter((k not in self._recent for k in uniq.tolist()), dtype=bool, count=len(uniq))
        first[where[new]] = True
        if new.any():
            self._push(uniq[new])  # np.unique's output is sorted
        return first

    def _push(self, run) -> None:
        import numpy as np

        self._filter[run & np.uint64(self.FILTER_SLOTS - 1)] = 1
        runs = self._runs
        runs.append(run)
        # Merge equal-ish neighbours (binary counter) up to RUN_MAX: few runs to search, small copies.
        while len(runs) > 1 and len(runs[-2]) <= 2 * len(runs[-1]) and len(runs[-2]) + len(runs[-1]) <= self.RUN_MAX:
            b, a = runs.pop(), runs.pop()
            runs.append(np.insert(a, a.searchsorted(b), b))


class ExactDeduper:
    def __init__(self) -> None:
        self.seen = CompactHashSet()

    def check(self, key: int, where: str) -> None:
        if not self.seen.add(key):
            raise RowError("duplicate", "exact duplicate of an earlier row (after normalisation)")


class NearDeduper:
    """MinHash-LSH (datasketch). A row is a near duplicate when the estimated Jaccard similarity of its
    character 5-gram set with an earlier kept row reaches the threshold. LSH only proposes candidates; each
    one is verified against its stored signature, so the threshold means what it says (1.0 = identical
    5-gram sets). Memory grows with the kept rows (the LSH index plus 512 bytes of signature per row), so
    near dedupe suits up to a few million rows."""

    SHINGLE = 5
    MAX_CHARS = 20000  # MinHash of the first 20k characters: bounds the cost of huge rows
    NUM_PERM = 128

    def __init__(self, threshold: float):
        from datasketch import MinHash, MinHashLSH

        self._minhash = MinHash
        prototype = MinHash(num_perm=self.NUM_PERM, hashfunc=_hash32)
        # Shared permutations: building them per MinHash costs ~30x the hashing of a short row.
        self._permutations, self._scheme = prototype.permutations, prototype.scheme
        # LSH needs at least 2 bands; above 0.95 it proposes candidates at 0.95 and verification decides.
        self.lsh = MinHashLSH(threshold=min(threshold, 0.95), num_perm=self.NUM_PERM)
        self.threshold = threshold
        self._signatures: list = []
        self._where: list[str] = []

    def _signature(self, text: str):
        text = text[: self.MAX_CHARS]
        n = self.SHINGLE
        shingles = {text[i:i + n] for i in range(max(1, len(text) - n + 1))}
        m = self._minhash(num_perm=self.NUM_PERM, hashfunc=_hash32, permutations=self._permutations,
                          scheme=self._scheme)
        m.update_batch([s.encode("utf-8", "surrogatepass") for s in shingles])
        return m

    def check(self, normal_form: str, where: str) -> None:
        signature = self._signature(normal_form)
        best, best_id = 0.0, -1
        for candidate in self.lsh.query(signature):
            similarity = float((self._signatures[candidate] == signature.hashvalues).mean())
            if similarity > best or (similarity == best and candidate < best_id):
                best, best_id = similarity, candidate
        if best_id >= 0 and best >= self.threshold:
            raise RowError("near_duplicate", f"near duplicate of {self._where[best_id]} (estimated Jaccard "
                                             f"{best:.2f} >= {self.threshold:g})")
        key = len(self._signatures)
        self._signatures.append(signature.hashvalues.copy())
        self._where.append(where)
        self.lsh.insert(key, signature, check_duplication=False)


def _hash32(data: bytes) -> int:
    return xxhash.xxh32_intdigest(data)
