"""Nearest-neighbour retrieval over a motion bank: pose descriptors, whole body and per part.

RAF (retrieval-augmented training) swaps part of a training frame's conditioning for that
of its nearest neighbours in a large unlabelled bank. Here a frame's conditioning is cut
into *parts*, each a descriptor of its own:

- ``body``: the local-ref rotation vectors of the 35 body bones (no root, fingers, toes or
  eyes), radians; the whole-body index;
- ``arm.L``, ``arm.R``, ``leg.L``, ``leg.R``, ``trunk`` (spine, neck, head): the same bones
  split by limb;
- ``hand.L``, ``hand.R``: the finger and metacarpal bones of each hand;
- ``face``: the 52 facial-action weights.

Bank poses come from motion banks (mocap has no faces); the facial-action bank is the
seeded expression generator of :mod:`perennial.motion.face_hands` over many seeds.

Indexes are built with a maintained library. :data:`BACKENDS` lists them; ``faiss`` (exact
``IndexFlatL2``) is the default because it measured fastest to build and to query on our
banks (``perennial bench ood`` prints the figures of every installed backend:
``retrieval.<backend>.build_ms`` and ``query_us``). ``torch`` (exact, ``torch.cdist``)
needs no library and is the fallback.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from perennial.body.rig import ANNY_BONES
from perennial.errors import ConfigError, PerennialError

__all__ = ["BACKENDS", "DEFAULT_BANK", "PARTS", "PartIndex", "RetrievalBank", "facial_bank", "measure_backends",
           "part_bones"]  # fmt: skip

BACKENDS = ("faiss", "hnswlib", "usearch", "torch")
DEFAULT_BANK = Path(__file__).parent / "data" / "retrieval_bank.npz"
"""Poses shipped with the package: the CMU samples at 10 frames/s (see ``data/README.md``)."""


def _bones(pred) -> tuple[int, ...]:
    return tuple(i for i, b in enumerate(ANNY_BONES) if i > 0 and pred(b))


_FINGERS = ("finger", "metacarpal")
_SKIP = ("finger", "metacarpal", "toe", "eye")
PART_BONES: dict[str, tuple[int, ...]] = {
    "body": _bones(lambda b: not b.startswith(_SKIP)),
    "arm.L": _bones(lambda b: b.endswith(".L") and b.startswith(("clavicle", "shoulder", "upperarm", "lowerarm", "wrist"))),
    "arm.R": _bones(lambda b: b.endswith(".R") and b.startswith(("clavicle", "shoulder", "upperarm", "lowerarm", "wrist"))),
    "leg.L": _bones(lambda b: b.endswith(".L") and b.startswith(("pelvis", "upperleg", "lowerleg", "foot"))),
    "leg.R": _bones(lambda b: b.endswith(".R") and b.startswith(("pelvis", "upperleg", "lowerleg", "foot"))),
    "trunk": _bones(lambda b: b.startswith(("spine", "neck", "head"))),
    "hand.L": _bones(lambda b: b.endswith(".L") and b.startswith(_FINGERS)),
    "hand.R": _bones(lambda b: b.endswith(".R") and b.startswith(_FINGERS)),
}  # fmt: skip
PARTS = (*PART_BONES, "face")
"""Descriptor kinds: the whole body, the limbs and hands, the face."""
SWAP_PARTS = ("arm.L", "arm.R", "leg.L", "leg.R", "trunk", "hand.L", "hand.R", "face")
"""The parts whose conditioning RAF swaps independently (together they cover the whole body)."""


def part_bones(part: str) -> tuple[int, ...]:
    """Bone ids of a pose part."""
    if part not in PART_BONES:
        raise ConfigError(f"unknown pose part {part!r}; parts: {', '.join(PART_BONES)}")
    return PART_BONES[part]


def descriptor(part: str, rotvec: Tensor | None = None, facial: Tensor | None = None) -> np.ndarray:
    """(N, D) float32 descriptors of poses (N, J, 3) or facial actions (N, 52)."""
    if part == "face":
        return np.ascontiguousarray(facial.float().numpy(), dtype=np.float32)
    x = rotvec[:, list(part_bones(part))].reshape(rotvec.shape[0], -1)
    return np.ascontiguousarray(x.float().numpy(), dtype=np.float32)


class PartIndex:
    """A k-nearest-neighbour index (squared Euclidean) over (N, D) float32 vectors.

    Args:
        vectors: the bank's descriptors.
        backend: one of :data:`BACKENDS`.
    """

    def __init__(self, vectors: np.ndarray, backend: str = "faiss") -> None:
        if backend not in BACKENDS:
            raise ConfigError(f"unknown retrieval backend {backend!r}; choose one of {', '.join(BACKENDS)}")
        x = np.ascontiguousarray(vectors, dtype=np.float32)
        if x.ndim != 2 or x.shape[0] < 1:
            raise PerennialError(f"retrieval: need (N, D) vectors with N >= 1, got {x.shape}")
        self.backend, self.n, self.dim = backend, x.shape[0], x.shape[1]
        if backend == "faiss":
            import faiss

            self.index = faiss.IndexFlatL2(self.dim)
            self.index.add(x)
        elif backend == "hnswlib":
            import hnswlib

            self.index = hnswlib.Index(space="l2", dim=self.dim)
            self.index.init_index(max_elements=self.n, ef_construction=100, M=16, random_seed=0)
            self.index.add_items(x, np.arange(self.n), num_threads=1)
            self.index.set_ef(64)
        elif backend == "usearch":
            from usearch.index import Index

            self.index = Index(ndim=self.dim, metric="l2sq", dtype="f32")
            self.index.add(np.arange(self.n), x, threads=1)
        else:
            self.index = torch.from_numpy(x)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(Q, k) squared distances and bank ids of each query's ``k`` nearest vectors."""
        q = np.ascontiguousarray(queries, dtype=np.float32).reshape(-1, self.dim)
        k = min(k, self.n)
        if self.backend == "faiss":
            d, i = self.index.search(q, k)
        elif self.backend == "hnswlib":
            self.index.set_ef(max(64, k))
            i, d = self.index.knn_query(q, k=k, num_threads=1)
        elif self.backend == "usearch":
            m = self.index.search(q, k, threads=1)
            i, d = np.asarray(m.keys).reshape(len(q), -1), np.asarray(m.distances).reshape(len(q), -1)
        else:
            dist = torch.cdist(torch.from_numpy(q), self.index).square()
            d, i = (t.numpy() for t in dist.topk(k, largest=False))
        return np.asarray(d, dtype=np.float32), np.asarray(i, dtype=np.int64)


def facial_bank(seeds: int = 64, frames: int = 300, fps: float = 30.0) -> Tensor:
    """(seeds * frames, 52) facial-action vectors of the seeded expression generator."""
    from perennial.motion.face_hands import facial_action_track

    return torch.cat([facial_action_track(frames, fps, 10_000 + s) for s in range(seeds)])


class RetrievalBank:
    """Bank poses and facial actions with one index per part.

    Args:
        rotvec: (N, J, 3) bank poses (local-ref).
        facial: (M, 52) bank facial actions.
        backend: the index library.
        parts: the parts to index (default: all).
    """

    def __init__(self, rotvec: Tensor, facial: Tensor, backend: str = "faiss",
                 parts: tuple[str, ...] = PARTS) -> None:  # fmt: skip
        self.rotvec, self.facial, self.backend = rotvec.float(), facial.float(), backend
        t0 = time.perf_counter()
        self.indexes = {p: PartIndex(descriptor(p, self.rotvec, self.facial), backend) for p in parts}
        self.build_s = time.perf_counter() - t0

    @classmethod
    def load(cls, path: str | Path | None = None, backend: str = "faiss", fps: float = 10.0) -> RetrievalBank:
        """A bank from a motion bank (folder or ``.npz``) or clip file; the shipped bank when None."""
        if path is None or str(path) == "":
            if not DEFAULT_BANK.is_file():
                raise PerennialError(f"{DEFAULT_BANK}: the shipped retrieval bank is missing")
            with np.load(DEFAULT_BANK, allow_pickle=False) as z:
                rotvec = torch.from_numpy(z["rotvec"].astype(np.float32))
        else:
            from perennial.motion.prior import load_training_poses

            rotvec = load_training_poses(path, fps=fps)[0]
        return cls(rotvec, facial_bank(), backend)

    def neighbours(self, part: str, rotvec: Tensor | None, facial: Tensor | None, k: int) -> Tensor:
        """(Q, k) bank ids of the nearest entries of each query's ``part``."""
        q = descriptor(part, rotvec, facial)
        return torch.from_numpy(self.indexes[part].search(q, k)[1])

    def distance(self, part: str, rotvec: Tensor | None = None, facial: Tensor | None = None) -> Tensor:
        """(Q,) Euclidean distance of each query's ``part`` to its nearest bank entry."""
        d, _ = self.indexes[part].search(descriptor(part, rotvec, facial), 1)
        return torch.from_numpy(d[:, 0]).clamp_min(0).sqrt()


def measure_backends(vectors: np.ndarray, queries: np.ndarray, k: int = 8, repeats: int = 3) -> dict[str, float]:
    """Build time (ms) and query latency (us per query, one query at a time) of every installed backend.

    Returns ``{"<backend>.build_ms": ..., "<backend>.query_us": ..., "<backend>.recall": ...}`` (recall@k
    against the exact torch search); a backend that is not installed is left out.
    """
    out: dict[str, float] = {}
    exact = PartIndex(vectors, "torch").search(queries, k)[1]
    for b in BACKENDS:
        try:
            builds = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                idx = PartIndex(vectors, b)
                builds.append(time.perf_counter() - t0)
        except ImportError:
            continue
        t0 = time.perf_counter()
        found = np.concatenate([idx.search(q[None], k)[1] for q in queries])
        per = (time.perf_counter() - t0) / len(queries)
        out[f"{b}.build_ms"] = float(np.median(builds)) * 1000
        out[f"{b}.query_us"] = per * 1e6
        out[f"{b}.recall"] = float(np.mean([len(set(a) & set(e)) / len(e) for a, e in zip(found, exact)]))
    return out
