"""Duplicate detection: exact (64-bit hash of the normal form) and near (MinHash-LSH over character
5-grams, language-agnostic).

Exact dedupe keeps 8 bytes per distinct row (a sorted `array('Q')` plus a small set of recent hashes merged
in every 64k rows) instead of a Python set's ~70 bytes, so memory stays nearly flat at millions of rows.
"""

from __future__ import annotations

import bisect
from array import array

import xxhash

from .errors import RowError


def row_hash(normal_form: str) -> int:
    return xxhash.xxh3_64_intdigest(normal_form.encode("utf-8", "surrogatepass"))


class CompactHashSet:
    """A set of 64-bit ints at ~8 bytes each; `add(h)` returns False when `h` was already present."""

    def __init__(self, merge_every: int = 65536):
        self._sorted = array("Q")
        self._recent: set[int] = set()
        self._merge_every = merge_every

    def __len__(self) -> int:
        return len(self._sorted) + len(self._recent)

    def __contains__(self, h: int) -> bool:
        if h in self._recent:
            return True
        i = bisect.bisect_left(self._sorted, h)
        return i < len(self._sorted) and self._sorted[i] == h

    def add(self, h: int) -> bool:
        if h in self:
            return False
        self._recent.add(h)
        if len(self._recent) >= self._merge_every:
            self._merge()
        return True

    def _merge(self) -> None:
        import numpy as np

        merged = np.union1d(np.frombuffer(self._sorted, dtype=np.uint64),
                            np.fromiter(self._recent, dtype=np.uint64, count=len(self._recent)))
        self._sorted = array("Q", merged.tobytes())
        self._recent = set()


class ExactDeduper:
    def __init__(self) -> None:
        self.seen = CompactHashSet()

    def check(self, key: int, where: str) -> None:
        if not self.seen.add(key):
            raise RowError("duplicate", "exact duplicate of an earlier row (after normalisation)")


class NearDeduper:
    """MinHash-LSH (datasketch). Rows whose estimated Jaccard similarity of character 5-gram sets reaches
    the threshold with an earlier kept row are rejected, naming that row. Memory grows with the number of
    rows (the LSH index), so near dedupe suits up to a few million rows."""

    SHINGLE = 5
    MAX_CHARS = 20000  # MinHash of the first 20k characters: bounds the cost of huge rows
    NUM_PERM = 128

    def __init__(self, threshold: float):
        from datasketch import MinHash, MinHashLSH

        self._minhash = MinHash
        self.lsh = MinHashLSH(threshold=threshold, num_perm=self.NUM_PERM)
        self.threshold = threshold

    def _signature(self, text: str):
        text = text[: self.MAX_CHARS]
        n = self.SHINGLE
        shingles = {text[i:i + n] for i in range(max(1, len(text) - n + 1))}
        m = self._minhash(num_perm=self.NUM_PERM, hashfunc=_hash32)
        m.update_batch([s.encode("utf-8", "surrogatepass") for s in shingles])
        return m

    def check(self, normal_form: str, where: str) -> None:
        signature = self._signature(normal_form)
        similar = self.lsh.query(signature)
        if similar:
            raise RowError("near_duplicate", f"near duplicate of {min(similar)} (estimated Jaccard >= "
                                             f"{self.threshold:g})")
        self.lsh.insert(where, signature, check_duplication=False)


def _hash32(data: bytes) -> int:
    return xxhash.xxh32_intdigest(data)
