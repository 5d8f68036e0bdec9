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
