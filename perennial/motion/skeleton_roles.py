"""Which joint of a skeleton is which body part: names and tree topology together.

Used by :mod:`perennial.motion.skeleton_detect` (the module docstring there states
the rules). :func:`find_roles` returns :class:`Roles` or raises
:class:`SkeletonError` saying what it could not find.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from perennial.motion.bonemap import RetargetError
from perennial.motion.bvh import BVH
from perennial.motion.names import JointName

__all__ = ["Roles", "SkeletonError", "Tree", "find_roles"]

_SIDE = {"L": "left", "R": "right"}


class SkeletonError(RetargetError):
    """A skeleton that cannot be mapped onto Anny; the message names the file, says what
    is missing and lists the file's joints."""


def _listed(names: list[str], most: int = 30) -> str:
    more = f", ... ({len(names) - most} more)" if len(names) > most else ""
    return ", ".join(names[:most]) + more


class Tree:
    """Parent/child relations of a skeleton (parents come before children)."""

    def __init__(self, bvh: BVH) -> None:
        self.parents = list(bvh.parents)
        n = len(self.parents)
        self.children: list[list[int]] = [[] for _ in range(n)]
        self.depth = [0] * n
        for j, p in enumerate(self.parents):
            if p >= 0:
                self.children[p].append(j)
                self.depth[j] = self.depth[p] + 1
        self.offset_length = np.linalg.norm(bvh.offsets, axis=-1) if n else np.zeros(0)

    def ancestors(self, j: int) -> list[int]:
        """``j``, its parent, ... up to the root."""
        out = []
        while j >= 0:
            out.append(j)
            j = self.parents[j]
        return out

    def lca(self, *js: int) -> int:
        """Lowest common ancestor (a joint counts as its own ancestor)."""
        common = set(self.ancestors(js[0]))
        for j in js[1:]:
            common &= set(self.ancestors(j))
        return max(common, key=lambda k: self.depth[k])

    def path(self, a: int, b: int) -> list[int]:
        """Joints strictly below ``a`` down to ``b`` (inclusive); empty unless ``a`` is above ``b``."""
        up = self.ancestors(b)
        return list(reversed(up[: up.index(a)])) if a in up else []

    def below(self, k: int, s: int) -> bool:
        """``k`` is a strict descendant of ``s``."""
        return k != s and s in self.ancestors(k)

    def subtree(self, j: int) -> list[int]:
        out, stack = [], [j]
        while stack:
            k = stack.pop()
            out.append(k)
            stack.extend(self.children[k])
        return out

    def length(self, a: int, b: int) -> float:
        """Length of the tree path between two joints (sum of rest offsets), file units."""
        c = self.lca(a, b)
        return float(sum(self.offset_length[j] for j in self.path(c, a) + self.path(c, b)))


@dataclass
class Roles:
    """The body parts found (joint indices; -1 where optional and absent).

    ``limb[side]`` holds ``thigh, knee, ankle`` (measured) and ``foot`` (drives the foot),
    ``toe``, ``clavicle``, ``upperarm``, ``forearm``, ``wrist`` (measured) and ``hand``
    (drives the hand). ``fingers[side][k]`` is (metacarpal or None, phalanges) for finger
    ``k`` = 1 (thumb) .. 5 (little).
    """

    root: int
    chest: int
    head: int
    spine_bones: dict[str, int]
    neck_bones: dict[str, int]
    neck: list[int]
    limb: dict[str, dict[str, int]]
    fingers: dict[str, dict[int, tuple[int | None, list[int]]]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def _spread(js: list[int], bones: list[str], fixed: dict[int, tuple[str, ...]], frac, frac_a) -> dict[str, int]:
    """Anny bones (bottom to top) driven by source joints (bottom to top): the first joint
    drives the first bone, the last the last, a few in between by a fixed pattern
    (``fixed[count]``), more by nearest fraction along the chain."""
    n = len(js)
    if n == 0:
        return {}
    if n == 1:
        return {bones[0]: js[0]}
    out = {bones[0]: js[0], bones[-1]: js[-1]}
    mid = js[1:-1]
    if len(mid) in fixed:
        return out | dict(zip(fixed[len(mid)], mid))
    for b in bones[1:-1]:  # nearest fraction; several bones may take one joint, keep the order
        out[b] = min(mid, key=lambda j: abs(frac(j) - frac_a[b]))
    return out


def find_roles(bvh: BVH, jn: list[JointName], tree: Tree, p0: np.ndarray) -> Roles:
    """Body parts of a skeleton from joint names (``jn``) and topology; ``p0`` (J, 3) are
    rest positions.

    Raises:
        SkeletonError: a limb, the pelvis or the head cannot be found.
    """
    J = len(jn)
    missing: list[str] = []
    notes: list[str] = []
    depth = tree.depth

    def cands(role: str, side: str, pool=None) -> list[int]:
        return [j for j in (range(J) if pool is None else pool)
                if jn[j].role == role and jn[j].side == side and not jn[j].helper]  # fmt: skip

    def deepest(js: list[int]) -> int:
        return max(js, key=lambda j: depth[j]) if js else -1

    def shallowest(js: list[int]) -> int:
        return min(js, key=lambda j: depth[j]) if js else -1

    ends: dict[str, dict[str, tuple[int, int]]] = {"foot": {}, "hand": {}}
    for part, words in (("foot", "foot/ankle"), ("hand", "hand/wrist")):
        for s in "LR":
            cs = cands(part, s)
            if not cs:
                missing.append(f"no {_SIDE[s]} {part} (a joint named like {words} on the {_SIDE[s]} side)")
                continue
            top = shallowest(cs)
            ends[part][s] = (top, deepest([j for j in cs if j == top or tree.below(j, top)]))
    if missing:
        _fail(bvh, missing)
    limb: dict[str, dict[str, int]] = {"L": {}, "R": {}}
    legs = tree.lca(ends["foot"]["L"][0], ends["foot"]["R"][0])
    for s in "LR":
        ankle, foot = ends["foot"][s]
        body = tree.path(legs, ankle)[:-1]
        knee = deepest(cands("shin", s, body))
        if knee < 0:  # no name: the joint half-way along the leg
            knee = _midway(tree, [j for j in body if not jn[j].helper], ankle)
        thigh = deepest(cands("thigh", s, body[: body.index(knee)] if knee in body else body))
        if thigh < 0:
            rest = [j for j in body[: body.index(knee)] if not jn[j].helper] if knee in body else []
            thigh = rest[-1] if rest else -1
        if knee < 0 or thigh < 0:
            missing.append(f"no {_SIDE[s]} {'knee' if knee < 0 else 'thigh'} between the pelvis and the "
                           f"{_SIDE[s]} foot {bvh.names[ankle]!r}")  # fmt: skip
            continue
        toe = shallowest([j for j in cands("toe", s, tree.subtree(foot)) if j != foot])
        limb[s] |= {"thigh": thigh, "knee": knee, "ankle": ankle, "foot": foot, "toe": toe}
    chest = tree.lca(ends["hand"]["L"][0], ends["hand"]["R"][0])
    for s in "LR":
        wrist, hand = ends["hand"][s]
        body = tree.path(chest, wrist)[:-1]
        forearm = deepest(cands("forearm", s, body))
        if forearm < 0:
            forearm = _midway(tree, [j for j in body if not jn[j].helper], wrist)
        before = body[: body.index(forearm)] if forearm in body else []
        upper = deepest(cands("upperarm", s, before)) if before else -1
        if upper < 0:
            upper = deepest(cands("shoulder", s, before))
        if upper < 0:
            near = [j for j in before if not jn[j].helper and np.linalg.norm(p0[forearm] - p0[j]) > 1e-9]
            upper = near[-1] if near else -1
        if forearm < 0 or upper < 0:
            missing.append(f"no {_SIDE[s]} {'elbow' if forearm < 0 else 'upper arm'} between the chest and the "
                           f"{_SIDE[s]} hand {bvh.names[wrist]!r}")  # fmt: skip
            continue
        before = before[: before.index(upper)]
        clav = deepest(cands("clavicle", s, before))
        if clav < 0:
            clav = deepest(cands("shoulder", s, before))
        # the wrist is measured where the hand's drive joint starts (lhand of an ASF's
        # lradius -> lwrist -> lhand: the ASF wrist bone is the end of the forearm)
        limb[s] |= {"clavicle": clav, "upperarm": upper, "forearm": forearm, "wrist": hand, "hand": hand}
    heads = [j for j in range(J) if jn[j].role == "head" and not jn[j].helper]
    head = shallowest(heads)
    if head < 0:
        missing.append("no head (a joint named like head)")
    if missing:
        _fail(bvh, missing)
    root = tree.lca(limb["L"]["thigh"], limb["R"]["thigh"])
    spine, neck = _torso(tree, jn, root, chest, head)
    frac = _fractions(tree, root, spine + neck + [head, chest])
    frac_spine = {"spine04": 0.21, "spine03": 0.41, "spine02": 0.62}  # Anny, root (0) to spine01 (1)
    spine_bones = _spread(spine, ["spine05", "spine04", "spine03", "spine02", "spine01"],
                          {1: ("spine02",), 2: ("spine03", "spine02"), 3: ("spine04", "spine03", "spine02")},
                          lambda j: frac[j] / max(frac[spine[-1]], 1e-12), frac_spine)  # fmt: skip
    if len(spine) == 1 and (spine[0] == chest or frac[spine[0]] > 0.5 * frac[chest]):
        spine_bones = {"spine01": spine[0]}  # a single spine joint at the chest
    span = (frac[head] - frac[neck[0]]) if neck else 1.0
    neck_bones = _spread(neck, ["neck01", "neck02", "neck03"], {0: (), 1: ("neck02",)},
                         lambda j: (frac[j] - frac[neck[0]]) / max(span, 1e-12), {"neck02": 0.5})  # fmt: skip
    fingers = {s: _fingers(tree, jn, limb[s]["wrist"], s) for s in "LR"}
    counts = {s: sorted(len(ph) for _, ph in fingers[s].values()) for s in "LR"}
    if any(counts.values()):
        notes.append("fingers drive Anny's fingers: " + "; ".join(
            f"{_SIDE[s]} hand {len(counts[s])} fingers" for s in "LR"))  # fmt: skip
    else:
        notes.append("no finger chains of 2-3 joints: the hands keep Anny's neutral pose")
    return Roles(root, chest, head, spine_bones, neck_bones, neck, limb, fingers, notes)


def _fail(bvh: BVH, missing: list[str]) -> None:
    raise SkeletonError(f"{bvh.path}: cannot recognise a human skeleton: {'; '.join(missing)}. The file has: "
                        f"{_listed(bvh.names)}. Write a bone map for it (perennial motion inspect on a similar "
                        "file with --write-map gives one to edit) and pass --map")  # fmt: skip


def _midway(tree: Tree, body: list[int], end: int) -> int:
    """The joint of ``body`` closest to half-way (by tree length) from the first to ``end``."""
    if len(body) < 2:
        return -1
    total = tree.length(body[0], end)
    return min(body[1:], key=lambda j: abs(tree.length(body[0], j) - 0.5 * total))


def _torso(tree: Tree, jn: list[JointName], root: int, chest: int, head: int) -> tuple[list[int], list[int]]:
    """Spine joints (pelvis to chest, exclusive of the pelvis) and neck joints (up to the head)."""
    top = tree.lca(root, chest, head)
    path = tree.path(top, head)[:-1]
    stop = tree.lca(chest, head)
    cut = path.index(stop) + 1 if stop in path else 0
    spine, neck = [], []
    for i, j in enumerate(path):
        if jn[j].helper or j == root or tree.below(root, j) or jn[j].role == "head":
            continue
        (spine if i < cut and jn[j].role != "neck" else neck).append(j)
    return spine, neck


def _fractions(tree: Tree, root: int, js: list[int]) -> dict[int, float]:
    return {j: tree.length(root, j) for j in js}


def _fingers(tree: Tree, jn: list[JointName], wrist: int, side: str) -> dict[int, tuple[int | None, list[int]]]:
    """Finger chains below a wrist: finger id -> (metacarpal or None, 2-3 phalanges)."""
    pool = [j for j in tree.subtree(wrist) if jn[j].role == "finger" and jn[j].side in (side, "")
            and not jn[j].helper]  # fmt: skip
    numbered = {-1 - jn[j].finger for j in pool if jn[j].finger < 0}
    base = 1 if 0 in numbered else 0
    by_id: dict[int, list[int]] = {}
    for j in pool:
        f = jn[j].finger
        k = f if f > 0 else (-1 - f + base if f < 0 else 0)
        if 1 <= k <= 5:
            by_id.setdefault(k, []).append(j)
    out = {}
    for k, js in sorted(by_id.items()):
        js.sort(key=lambda j: tree.depth[j])
        # drop tip markers: a 4th numbered joint, or a last joint with nothing below it
        js = [j for j in js if jn[j].phalanx <= 3]
        if js and not tree.children[js[-1]] and len(js) > 3:
            js = js[:-1]
        meta = next((j for j in js if jn[j].phalanx == 0), None)
        phal = [j for j in js if jn[j].phalanx != 0]
        if len(phal) > 3:
            meta, phal = meta if meta is not None else phal[0], phal[-3:]
        if meta is None and phal:  # a carpal shared by fingers (Daz lCarpal1)
            for a in tree.ancestors(phal[0])[1:]:
                if a == wrist:
                    break
                if jn[a].role == "finger" and jn[a].phalanx == 0:
                    meta = a
                    break
        if len(phal) >= 2 and all(tree.below(b, a) for a, b in zip(phal, phal[1:])):
            out[k] = (meta, phal)
    return out
