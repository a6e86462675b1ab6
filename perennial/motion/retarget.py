"""Retargeting BVH motion onto Anny's ``anny`` rig, vectorised over frames.

Frames and units. The BVH is read in its own axes and units; a :class:`BoneMap`
says which source axis is up and which is forward in the source's rest pose and
how many metres one file unit is (CMU: +Y up, +Z forward, 0.056444 m). The fixed
rotation ``C`` maps source axes to Anny's world frame (metres, Z up, the body faces
-Y, its left is +X); for CMU it is a +90 deg rotation about X.

Model. Anny's ``local-ref`` forward kinematics, written with the *world delta*
``G_c`` of each bone (its posed world orientation times the transpose of its
reference orientation, the reference being the identity pose):

- ``G_c = G_p @ D_c`` where ``D_c`` is the bone's ``local-ref`` rotation, so
  ``D_c = G_p^T G_c`` (and ``D_0 = G_0``: the root's rotation is its world delta);
- bone heads ``j_c = j_p + G_p @ (q_c - q_p)``, with ``q`` the identity-pose bone
  heads and ``j_0`` the root translation.

A BVH joint's world rotation ``R_s`` is its rotation relative to the source rest
pose (where every world rotation is the identity). A mapped Anny bone ``b`` driven
by source joint ``s`` gets ``G_b = (C R_s C^T) A_b``, where the constant
alignment ``A_b`` says how Anny's identity pose sits relative to the source rest
pose for that bone. ``A_b`` depends on the bone's mode:

- ``"aim"`` (default): the Anny segment from ``b`` to its next mapped descendant
  is turned onto the source segment from ``s`` to the matching child joint, by the
  smallest rotation applied *after* the parent's alignment
  (``A_b = M_b A_parent``). This bends Anny's A-pose arms and knees onto the
  source's rest directions without adding twist: an elbow straightens about its
  hinge. With no such segment (the source child sits on the joint, or nothing
  below is mapped) the bone falls back to ``"inherit"``.
- ``"inherit"``: ``A_b = A_parent`` (keep the bone's reference pose relative to its
  parent, e.g. a hand continuing its forearm).
- ``"world"``: ``A_b = I``: both rest poses agree on the bone's world orientation
  (upright head, flat feet). The root is ``"world"`` by default; a root in
  ``"aim"`` or ``"reach"`` mode is tilted to match the hip-to-shoulder line.
- ``"reach"``: ``"aim"``, then a per-frame swing towards the source child
  joint's *position* (see below).

Unmapped Anny bones *follow their parent*: their ``local-ref`` rotation is zero,
so fingers, toes' outer phalanges, twist bones and the eyes keep their identity-pose
shape relative to the nearest mapped ancestor.

Root translation: the root is placed so that Anny's hip-joint midpoint
(``upperleg01.L/R``) coincides with the source's mapped hip joints, frame by
frame (or on the source root joint when the upper legs are unmapped), so the
source world trajectory is kept, scaled to metres. Floor (z = 0), by ``floor``:

- ``"contact"`` (default): the clip is shifted vertically so that the 20th
  percentile over frames of the lowest sole point (either foot) sits at z = 0;
  this absorbs leg-length differences and is robust to a few frames where the
  source's feet dip below its floor. Frames that would still put a sole below
  z = 0 get a smooth extra root lift (never less than the penetration, eased
  over 0.1 s), so soles never go below the floor.
- ``"lowest"``: one shift so that the lowest sole point over the whole clip
  touches z = 0 (never below the floor; may float when the source dips once).
- ``"source"``: keep the source floor (source height 0 -> z = 0), no shift.

Sole points are low foot vertices of Anny's mesh moved rigidly with their
dominant bone (a few millimetres from the skinned mesh).

Legs use ``"reach"``: after the ``"aim"`` alignment each thigh and shin is
swung, per frame, to point from Anny's posed joint to the source's posed child
joint (knee, ankle). Anny's hips are wider than the CMU skeleton's, so this
keeps the feet where the source's feet are (less foot sliding) at the cost of a
couple of degrees of leg adduction. The CMU root uses ``"aim"``: the torso is
tilted so that Anny's hip-centre -> shoulder-centre line matches the source's
(the CMU skeleton has its shoulders ~5 cm behind its hips, Anny ~2 cm in front),
the spine and neck inherit that tilt and the head keeps its world orientation.

Everything per frame is batched numpy/torch; the Anny model is only run once to
get the identity-pose skeleton and sole points (:class:`AnnyRestInfo`, cached on
disk in ``$PERENNIAL_CACHE``).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from perennial.body.rig import ANNY_BONES, ANNY_PARENTS
from perennial.motion.bvh import BVH
from perennial.motion.clip import MotionClip, quat_to_rotvec, rotmat_to_quat

log = logging.getLogger(__name__)

__all__ = [
    "CMU_BONE_MAP",
    "AnnyRestInfo",
    "BoneMap",
    "RetargetError",
    "anny_forward_joints",
    "axes_matrix",
    "load_bone_map",
    "local_ref_from_world",
    "rest_info",
    "retarget",
    "retarget_world",
]

BONE_MAP_FORMAT = "perennial-bone-map"
BONE_MAP_VERSION = 1
MODES = ("aim", "reach", "inherit", "world")
FLOOR_MODES = ("contact", "lowest", "source")
CONTACT_PERCENTILE = 20.0
"""``floor="contact"`` puts this percentile of the per-frame lowest sole point at z = 0."""
LIFT_SMOOTHING_S = 0.1
"""Radius in seconds of the smooth root lift that keeps soles above the floor."""
EVAL_BONES: tuple[str, ...] = tuple(
    f"{b}.{s}"
    for b in ("upperleg01", "lowerleg01", "foot", "upperarm01", "lowerarm01", "wrist")
    for s in "LR"
) + ("head",)
"""Anny bones whose heads are compared with the source joints when evaluating
(hips, knees, ankles, shoulders, elbows, wrists, head)."""


class RetargetError(ValueError):
    """A bone map that is malformed or does not fit a source skeleton."""


# ---------------------------------------------------------------------------
# axes


_AXES = {"x": 0, "y": 1, "z": 2}


def _axis_vector(spec: str, where: str) -> np.ndarray:
    s = spec.strip().lower()
    sign = -1.0 if s.startswith("-") else 1.0
    s = s.lstrip("+-")
    if s not in _AXES:
        raise RetargetError(f"{where}: axis must be one of +x, -x, +y, -y, +z, -z, got {spec!r}")
    v = np.zeros(3)
    v[_AXES[s]] = sign
    return v


def axes_matrix(up: str = "+y", forward: str = "+z") -> np.ndarray:
    """(3, 3) rotation ``C`` from source axes to Anny's world axes.

    Args:
        up: the source's up axis in its rest pose (``"+y"`` for CMU).
        forward: the direction the source's rest pose faces (``"+z"`` for CMU).

    Returns:
        ``C`` with ``C @ up = +Z``, ``C @ forward = -Y`` and ``C @ (up x forward) = +X``
        (the body's left, for a right-handed source frame).
    """
    u, f = _axis_vector(up, "up"), _axis_vector(forward, "forward")
    if abs(u @ f) > 0.5:
        raise RetargetError(f"up {up!r} and forward {forward!r} must be different axes")
    left = np.cross(u, f)
    # C = X left^T + Z up^T - Y forward^T
    return np.outer([1.0, 0, 0], left) + np.outer([0, 0, 1.0], u) - np.outer([0, 1.0, 0], f)


# ---------------------------------------------------------------------------
# bone maps


@dataclass(frozen=True)
class BoneMap:
    """Which source joint drives which Anny bone, and how the two rest poses relate.

    Attributes:
        bones: Anny bone -> source joint name. ``root`` must be mapped.
        modes: Anny bone -> ``"aim"``, ``"inherit"`` or ``"world"``; bones not
            listed use ``"aim"`` (the root always uses ``"world"``).
        evaluate: Anny bone -> source joint compared in evaluation; by default the
            mapped bones among :data:`EVAL_BONES`.
        up: source up axis in its rest pose, e.g. ``"+y"``.
        forward: direction the source rest pose faces, e.g. ``"+z"``.
        scale: metres per source file unit.
        name: label for messages and reports.
    """

    bones: dict[str, str]
    modes: dict[str, str] = field(default_factory=dict)
    evaluate: dict[str, str] = field(default_factory=dict)
    up: str = "+y"
    forward: str = "+z"
    scale: float = 1.0
    name: str = "custom"

    def __post_init__(self) -> None:
        where = f"bone map {self.name!r}"
        if "root" not in self.bones:
            raise RetargetError(f"{where}: field 'bones' must map Anny's 'root' bone")
        for key in ("bones", "modes", "evaluate"):
            for b in getattr(self, key):
                if b not in ANNY_BONES:
                    raise RetargetError(f"{where}: field {key!r} names unknown Anny bone {b!r}")
        for b, m in self.modes.items():
            if m not in MODES:
                raise RetargetError(
                    f"{where}: field 'modes' gives {b!r} mode {m!r}; modes: {', '.join(MODES)}"
                )
            if b not in self.bones:
                raise RetargetError(
                    f"{where}: field 'modes' names {b!r}, which 'bones' does not map"
                )
        if not (
            isinstance(self.scale, (int, float)) and np.isfinite(self.scale) and self.scale > 0
        ):
            raise RetargetError(
                f"{where}: field 'scale' must be a positive number of metres per unit"
            )
        axes_matrix(self.up, self.forward)  # validates
        if not self.evaluate:
            object.__setattr__(
                self, "evaluate", {b: self.bones[b] for b in EVAL_BONES if b in self.bones}
            )

    def mode(self, bone: str) -> str:
        """The alignment mode of a mapped bone."""
        return self.modes.get(bone, "world" if bone == "root" else "aim")

    def axes(self) -> np.ndarray:
        """(3, 3) source-axes -> Anny-axes rotation, see :func:`axes_matrix`."""
        return axes_matrix(self.up, self.forward)

    def check(self, bvh: BVH) -> None:
        """Raise :class:`RetargetError` if the BVH lacks joints this map needs."""
        names = set(bvh.names)
        needed = set(self.bones.values()) | set(self.evaluate.values())
        missing = sorted(needed - names)
        if missing:
            raise RetargetError(
                f"{bvh.path}: bone map {self.name!r} needs joints missing from the file: "
                f"{', '.join(missing)} (the file has: {', '.join(bvh.names)})"
            )

    def to_dict(self) -> dict[str, Any]:
        """Plain data, the JSON bone-map format."""
        bones: dict[str, Any] = {}
        for b, s in self.bones.items():
            bones[b] = {"joint": s, "mode": self.modes[b]} if b in self.modes else s
        return {
            "format": BONE_MAP_FORMAT,
            "version": BONE_MAP_VERSION,
            "name": self.name,
            "scale": self.scale,
            "up": self.up,
            "forward": self.forward,
            "bones": bones,
            "evaluate": dict(self.evaluate),
        }

    @classmethod
    def from_dict(cls, data: Any, where: str = "bone map") -> BoneMap:
        """Build a map from plain data (the JSON format), failing on unknown keys.

        The format::

            {"format": "perennial-bone-map", "version": 1,      # optional
             "name": "mixamo", "scale": 0.01, "up": "+y", "forward": "+z",
             "bones": {"root": "Hips", "upperleg01.L": "LeftUpLeg",
                       "foot.L": {"joint": "LeftFoot", "mode": "world"}, ...},
             "evaluate": {"upperleg01.L": "LeftUpLeg", ...}}       # optional
        """
        if not isinstance(data, dict):
            raise RetargetError(f"{where}: expected a JSON object")
        known = {"format", "version", "name", "scale", "up", "forward", "bones", "evaluate"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise RetargetError(f"{where}: unknown field(s) {unknown}; known: {sorted(known)}")
        if "format" in data and data["format"] != BONE_MAP_FORMAT:
            raise RetargetError(f"{where}: field 'format' must be {BONE_MAP_FORMAT!r}")
        if "version" in data and data["version"] != BONE_MAP_VERSION:
            raise RetargetError(
                f"{where}: field 'version' {data['version']!r} is not supported ({BONE_MAP_VERSION})"
            )
        if "scale" not in data:
            raise RetargetError(f"{where}: missing field 'scale' (metres per file unit)")
        if not isinstance(data.get("bones"), dict) or not data["bones"]:
            raise RetargetError(
                f"{where}: field 'bones' must be a non-empty object of anny bone -> joint"
            )
        bones, modes = {}, {}
        for b, v in data["bones"].items():
            if isinstance(v, str):
                bones[b] = v
            elif (
                isinstance(v, dict)
                and isinstance(v.get("joint"), str)
                and set(v) <= {"joint", "mode"}
            ):
                bones[b] = v["joint"]
                if "mode" in v:
                    modes[b] = v["mode"]
            else:
                raise RetargetError(
                    f"{where}: field 'bones.{b}' must be a joint name or {{'joint': name, 'mode': mode}}"
                )
        evaluate = data.get("evaluate", {})
        if not isinstance(evaluate, dict) or not all(isinstance(v, str) for v in evaluate.values()):
            raise RetargetError(
                f"{where}: field 'evaluate' must be an object of anny bone -> joint"
            )
        try:
            scale = float(data["scale"])
        except (TypeError, ValueError):
            raise RetargetError(f"{where}: field 'scale' must be a number") from None
        try:
            return cls(
                bones=bones,
                modes=modes,
                evaluate=dict(evaluate),
                up=str(data.get("up", "+y")),
                forward=str(data.get("forward", "+z")),
                scale=scale,
                name=str(data.get("name", where)),
            )
        except RetargetError as e:
            raise RetargetError(f"{where}: {e}") from None


def load_bone_map(path: str | Path) -> BoneMap:
    """Read a JSON bone map (format in :meth:`BoneMap.from_dict`).

    Raises:
        RetargetError: unreadable file, bad JSON (with line) or bad content (with field).
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise RetargetError(f"{path}: cannot read bone map: {e.strerror or e}") from None
    except json.JSONDecodeError as e:
        raise RetargetError(f"{path}, line {e.lineno}: invalid JSON ({e.msg})") from None
    if isinstance(data, dict):
        data.setdefault("name", path.stem)
    return BoneMap.from_dict(data, where=str(path))


def _cmu_map() -> BoneMap:
    bones = {"root": "Hips", "spine05": "lowerback", "spine02": "Chest", "spine01": "Chest2",
             "neck01": "lowerneck", "neck03": "Neck", "head": "Head"}  # fmt: skip
    modes = {b: "inherit" for b in ("spine05", "spine02", "spine01", "neck01", "neck03")}
    modes |= {"root": "aim", "head": "world"}
    for side, src in (("L", "Left"), ("R", "Right")):
        s = src[0]
        bones |= {
            f"clavicle.{side}": f"{src}Collar",
            f"upperarm01.{side}": f"{src}Shoulder",
            f"lowerarm01.{side}": f"{src}Elbow",
            f"wrist.{side}": f"{s.lower()}hand",
            f"upperleg01.{side}": f"{src}Hip",
            f"lowerleg01.{side}": f"{src}Knee",
            f"foot.{side}": f"{src}Ankle",
        }
        bones |= {f"toe{k}-1.{side}": f"{src}Toe" for k in range(1, 6)}
        modes |= {
            f"clavicle.{side}": "inherit",
            f"wrist.{side}": "inherit",
            f"foot.{side}": "world",
        }
        modes |= {f"upperleg01.{side}": "reach", f"lowerleg01.{side}": "reach"}
        modes |= {f"toe{k}-1.{side}": "inherit" for k in range(1, 6)}
    evaluate = {}
    for side, src in (("L", "Left"), ("R", "Right")):
        evaluate |= {
            f"upperleg01.{side}": f"{src}Hip",
            f"lowerleg01.{side}": f"{src}Knee",
            f"foot.{side}": f"{src}Ankle",
            f"upperarm01.{side}": f"{src}Shoulder",
            f"lowerarm01.{side}": f"{src}Elbow",
            f"wrist.{side}": f"{src}Wrist",
        }
    evaluate["head"] = "Head"
    return BoneMap(bones, modes, evaluate, up="+y", forward="+z", scale=0.056444, name="cmu")


CMU_BONE_MAP: BoneMap = _cmu_map()
"""Built-in map for the CMU 31-joint BVH skeleton (cgspeed conversion): Y up,
facing +Z, 0.056444 m per unit."""


def _resolve_map(bone_map: BoneMap | dict | str | Path | None) -> BoneMap:
    """A bone map from a map, plain data, ``"cmu"``, a JSON path, or None (CMU)."""
    if bone_map is None:
        return CMU_BONE_MAP
    if isinstance(bone_map, BoneMap):
        return bone_map
    if isinstance(bone_map, dict):
        return BoneMap.from_dict(bone_map)
    if str(bone_map).lower() == "cmu":
        return CMU_BONE_MAP
    return load_bone_map(bone_map)


# ---------------------------------------------------------------------------
# Anny rest information


REST_SCHEMA = 1


@dataclass
class AnnyRestInfo:
    """What retargeting needs from Anny, computed once from the model.

    Attributes:
        joints: (J, 3) bone heads of the identity pose (zero ``local-ref``
            rotations, root at the origin), metres, world axes.
        parents: (J,) parent index, -1 for the root.
        sole_points: (N, 3) low foot vertices in the identity pose, metres.
        sole_bones: (N,) the bone each sole point follows rigidly (its dominant
            skinning bone).
    """

    joints: np.ndarray
    parents: np.ndarray
    sole_points: np.ndarray
    sole_bones: np.ndarray

    @classmethod
    def from_template(
        cls, template, sole_band: float = 0.05, max_points: int = 600
    ) -> AnnyRestInfo:
        """Run the template once in its identity pose.

        Args:
            template: an :class:`~perennial.body.anny.AnnyTemplate`.
            sole_band: keep foot vertices up to this many metres above the foot's
                lowest vertex.
            max_points: keep at most this many sole points (evenly strided).
        """
        rv, tr = template.rest_pose(1)
        with torch.no_grad():
            out = template(rv, tr)
        joints = out.joints[0].double().cpu().numpy()
        verts = out.vertices[0].double().cpu().numpy()
        parts = template.part_labels.cpu().numpy()
        dominant = (
            template.skin_indices.gather(1, template.skin_weights.argmax(1, keepdim=True))[:, 0]
            .cpu()
            .numpy()
        )
        keep = []
        for part in ("foot.L", "foot.R"):
            idx = np.nonzero(parts == template.part_names.index(part))[0]
            z = verts[idx, 2]
            keep.append(idx[z < z.min() + sole_band])
        keep = np.concatenate(keep)
        if len(keep) > max_points:
            keep = keep[np.linspace(0, len(keep) - 1, max_points).round().astype(int)]
        return cls(joints, np.asarray(template.parents), verts[keep], dominant[keep])

    def save(self, path: Path) -> None:
        tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npz")
        np.savez(
            tmp,
            schema=REST_SCHEMA,
            joints=self.joints,
            parents=self.parents,
            sole_points=self.sole_points,
            sole_bones=self.sole_bones,
        )
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> AnnyRestInfo:
        with np.load(path, allow_pickle=False) as z:
            if int(z["schema"]) != REST_SCHEMA:
                raise ValueError(f"{path}: rest-info schema {int(z['schema'])} != {REST_SCHEMA}")
            return cls(z["joints"], z["parents"], z["sole_points"], z["sole_bones"])


_REST_CACHE: dict[Any, AnnyRestInfo] = {}


def rest_info(template=None) -> AnnyRestInfo:
    """Anny's identity-pose skeleton and sole points for retargeting.

    Args:
        template: an Anny template to compute it from; when None, a copy cached in
            ``$PERENNIAL_CACHE`` is used (built from the shared template the first time).
    """
    if isinstance(template, AnnyRestInfo):
        return template
    key = id(template) if template is not None else "default"
    if key in _REST_CACHE:
        return _REST_CACHE[key]
    if template is not None:
        info = AnnyRestInfo.from_template(template)
    else:
        from importlib.metadata import version

        from perennial.body.cache import cache_dir

        path = cache_dir() / f"anny-{version('anny')}-rest-info-v{REST_SCHEMA}.npz"
        info = None
        if path.exists():
            try:
                info = AnnyRestInfo.load(path)
            except (OSError, ValueError, KeyError) as e:
                log.warning("ignoring unreadable rest-info cache %s (%s)", path, e)
        if info is None:
            from perennial.body.anny import load_template

            info = AnnyRestInfo.from_template(load_template())
            info.save(path)
    _REST_CACHE[key] = info
    return info


# ---------------------------------------------------------------------------
# rotation helpers


def _min_rotation(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(3, 3) smallest rotation taking direction ``a`` onto direction ``b``."""
    a = a / np.linalg.norm(a)
    b = b / np.linalg.norm(b)
    axis = np.cross(a, b)
    s, c = np.linalg.norm(axis), float(a @ b)
    if s < 1e-12:
        if c > 0:
            return np.eye(3)
        # opposite: half turn about any axis perpendicular to a
        perp = np.cross(a, [1.0, 0, 0] if abs(a[0]) < 0.9 else [0, 1.0, 0])
        axis, s, c = perp / np.linalg.norm(perp), 1.0, -1.0
        angle = np.pi
    else:
        angle = np.arctan2(s, c)
        axis = axis / s
    K = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * K + (1 - np.cos(angle)) * K @ K


def _min_rotation_batch(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(F, 3, 3) smallest rotations taking directions ``a`` (F, 3) onto ``b`` (F, 3).

    Near-opposite pairs (never met by a swing correction) get the identity.
    """
    a = a / np.linalg.norm(a, axis=-1, keepdims=True).clip(1e-12)
    b = b / np.linalg.norm(b, axis=-1, keepdims=True).clip(1e-12)
    v = np.cross(a, b)
    c = (a * b).sum(-1)
    K = np.zeros(a.shape[:-1] + (3, 3))
    K[..., 0, 1], K[..., 0, 2], K[..., 1, 2] = -v[..., 2], v[..., 1], -v[..., 0]
    K[..., 1, 0], K[..., 2, 0], K[..., 2, 1] = v[..., 2], -v[..., 1], v[..., 0]
    # Rodrigues with sin = |v|, 1 - cos: R = I + K + K^2 / (1 + c)
    k = np.where(c > -0.999, 1.0 / (1.0 + c).clip(1e-3), 0.0)[..., None, None]
    R = np.eye(3) + K + (K @ K) * k
    return np.where((c > -0.999)[..., None, None], R, np.eye(3))


def local_ref_from_world(G: torch.Tensor, parents) -> torch.Tensor:
    """``local-ref`` rotation matrices from world deltas.

    Args:
        G: (F, J, 3, 3) per-bone world deltas (posed world orientation times the
            transposed identity-pose orientation).
        parents: (J,) parent indices, -1 for the root.

    Returns:
        (F, J, 3, 3) ``D_c = G_parent^T G_c``; ``D_0 = G_0``.
    """
    par = torch.as_tensor(np.asarray(parents)).clamp_min(0)
    D = G[:, par].transpose(-1, -2) @ G
    D[:, 0] = G[:, 0]
    return D


def anny_forward_joints(
    G: np.ndarray, translation: np.ndarray, rest: AnnyRestInfo, upto: int | None = None
) -> np.ndarray:
    """Bone heads of Anny posed by world deltas (the model's ``local-ref`` kinematics).

    Args:
        G: (F, J, 3, 3) world deltas.
        translation: (F, 3) root position, metres.
        rest: the identity-pose skeleton.
        upto: if given, only this bone's head is computed.

    Returns:
        (F, J, 3) bone heads, metres (equal to the template's ``joints``), or
        (F, 3) for ``upto``.
    """
    F, J = G.shape[:2]
    q, par = rest.joints, rest.parents
    if upto == 0:
        return translation.copy()
    if upto is not None:  # only the chain from the root down to bone `upto`
        chain = [upto]
        while par[chain[-1]] > 0:
            chain.append(par[chain[-1]])
        j = translation.copy()
        for c in reversed(chain):
            j = j + G[:, par[c]] @ (q[c] - q[par[c]])
        return j
    j = np.empty((F, J, 3))
    j[:, 0] = translation
    for c in range(1, J):  # parents come before children in Anny's order
        p = par[c]
        j[:, c] = j[:, p] + G[:, p] @ (q[c] - q[p])
    return j


# ---------------------------------------------------------------------------
# the retargeting plan (per skeleton + map) and its application (per frame)


@dataclass
class _Plan:
    mapped: np.ndarray  # (M,) Anny bone ids that are mapped
    src: np.ndarray  # (M,) source joint per mapped bone
    align: np.ndarray  # (M, 3, 3)
    driver: np.ndarray  # (J,) position in `mapped` of the bone that drives each Anny bone
    reach: list[tuple[int, int, np.ndarray]]  # (mapped position, source target joint, Anny segment)
    hips_src: np.ndarray  # (K,) source joints of the hip anchors (may be empty)
    hips_anny: np.ndarray  # (3,) Anny hip midpoint relative to the root, identity pose
    root_src: int
    C: np.ndarray
    scale: float


def _torso_alignment(bvh: BVH, bmap: BoneMap, q: np.ndarray, C: np.ndarray) -> np.ndarray:
    """Root alignment turning Anny's hip-centre -> shoulder-centre line onto the source's."""
    pairs = [(f"upperleg01.{s}", f"upperarm01.{s}") for s in "LR"]
    if not all(h in bmap.bones and a in bmap.bones for h, a in pairs):
        return np.eye(3)
    p0, _ = bvh.forward_kinematics(rest=True)
    ids = {k: ANNY_BONES.index(k) for pair in pairs for k in pair}
    v_a = np.mean([q[ids[a]] - q[ids[h]] for h, a in pairs], 0)
    v_s = np.mean(
        [p0[0, bvh.index(bmap.bones[a])] - p0[0, bvh.index(bmap.bones[h])] for h, a in pairs], 0
    )
    return _min_rotation(v_a, C @ v_s)


def _plan(bvh: BVH, bmap: BoneMap, rest: AnnyRestInfo) -> _Plan:
    bmap.check(bvh)
    C = bmap.axes()
    names = {n: i for i, n in enumerate(bvh.names)}
    src_par = np.asarray(bvh.parents)
    offs = bvh.offsets
    J = len(ANNY_BONES)
    par = np.asarray(ANNY_PARENTS)
    children: list[list[int]] = [[] for _ in range(J)]
    for c in range(1, J):
        children[par[c]].append(c)
    src_of = {ANNY_BONES.index(b): names[s] for b, s in bmap.bones.items()}
    q = rest.joints

    def first_mapped_below(b: int, s: int) -> list[int]:
        """First mapped bones on every path below b, passing through bones mapped to s."""
        out, stack = [], list(children[b])
        while stack:
            c = stack.pop()
            if c in src_of and src_of[c] != s:
                out.append(c)
            else:
                stack.extend(children[c])
        return out

    align: dict[int, np.ndarray] = {}
    reach: list[tuple[int, int, np.ndarray]] = []
    driver = np.zeros(J, dtype=np.int64)
    mapped = sorted(src_of)
    pos_in = {b: i for i, b in enumerate(mapped)}
    for b in range(J):  # parents before children
        if b not in src_of:
            driver[b] = driver[par[b]]
            continue
        driver[b] = pos_in[b]
        anc = par[b]
        while anc >= 0 and anc not in src_of:
            anc = par[anc]
        A_par = align[anc] if anc >= 0 else np.eye(3)
        mode = bmap.mode(ANNY_BONES[b])
        if b == 0 and mode in ("aim", "reach"):
            align[b] = _torso_alignment(bvh, bmap, q, C)
            continue
        if mode == "world":
            align[b] = np.eye(3)
            continue
        align[b] = A_par
        if mode == "inherit":
            continue
        s = src_of[b]
        groups: dict[int, list[int]] = {}
        for c in first_mapped_below(b, s):
            # the source segment: s -> its child k, when c's joint sits on k
            # (k itself or below it through zero offsets)
            k = src_of[c]
            while k >= 0 and src_par[k] != s and np.linalg.norm(offs[k]) < 1e-9:
                k = src_par[k]
            if k >= 0 and src_par[k] == s and np.linalg.norm(offs[k]) > 1e-9:
                groups.setdefault(k, []).append(c)
        best = None
        for k, cs in groups.items():
            v_a = A_par @ (q[cs].mean(0) - q[b])
            v_s = C @ offs[k]
            if np.linalg.norm(v_a) < 1e-9:
                continue
            cos = v_a @ v_s / (np.linalg.norm(v_a) * np.linalg.norm(v_s))
            if best is None or cos > best[0]:
                best = (cos, v_a, v_s, k, q[cs].mean(0) - q[b])
        if best is not None:
            align[b] = _min_rotation(best[1], best[2]) @ A_par
            if mode == "reach":
                reach.append((pos_in[b], best[3], best[4]))
    hip_bones = [ANNY_BONES.index(f"upperleg01.{s}") for s in "LR"]
    if all(h in src_of for h in hip_bones):
        hips_src = np.array([src_of[h] for h in hip_bones])
        hips_anny = q[hip_bones].mean(0) - q[0]
    else:
        hips_src, hips_anny = np.zeros(0, dtype=np.int64), np.zeros(3)
    return _Plan(
        mapped=np.array(mapped),
        src=np.array([src_of[b] for b in mapped]),
        align=np.stack([align[b] for b in mapped]),
        reach=reach,
        driver=driver,
        hips_src=hips_src,
        hips_anny=hips_anny,
        root_src=src_of[0],
        C=C,
        scale=float(bmap.scale),
    )


def retarget_world(
    bvh: BVH,
    rest=None,
    bone_map: BoneMap | str | Path | None = None,
    floor: str = "contact",
    frames: slice | np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Retarget to per-bone world deltas (the step before ``local-ref`` rotations).

    Args:
        bvh: the source motion.
        rest: Anny rest information (or a template); cached default when None.
        bone_map: :class:`BoneMap`, JSON path, or None for :data:`CMU_BONE_MAP`.
        floor: ``"contact"``, ``"lowest"`` or ``"source"`` (see the module docstring).
        frames: optional frame selection of the BVH.

    Returns:
        G (F, J, 3, 3) world deltas, translation (F, 3) metres, and an info dict
        (``floor_shift_m``: the constant vertical shift; ``lifted_frames`` and
        ``max_lift_m``: the extra root lift that kept soles above the floor).
    """
    rest = rest_info(rest)
    bmap = _resolve_map(bone_map)
    if floor not in FLOOR_MODES:
        raise ValueError(f"floor must be one of {FLOOR_MODES}, got {floor!r}")
    plan = _plan(bvh, bmap, rest)
    pos, rot = bvh.forward_kinematics(frames)
    C = plan.C
    # world deltas of the mapped bones: G = C R_s C^T A
    Gm = C @ rot[:, plan.src] @ C.T @ plan.align  # (F, M, 3, 3)
    G = Gm[:, plan.driver]  # (F, J, 3, 3)
    P = plan.scale * pos @ C.T  # (F, Js, 3) metres, Anny axes
    if len(plan.hips_src):
        trans = P[:, plan.hips_src].mean(1) - G[:, 0] @ plan.hips_anny
    else:
        trans = P[:, plan.root_src].copy()
    for m, k, seg in plan.reach:  # parents first
        b = plan.mapped[m]
        j_b = anny_forward_joints(G, trans, rest, upto=b)
        swing = _min_rotation_batch(Gm[:, m] @ seg, P[:, k] - j_b)
        Gm[:, m] = swing @ Gm[:, m]
        G[:, plan.driver == m] = Gm[:, m, None]
    info: dict[str, Any] = {
        "bone_map": bmap.name,
        "floor_shift_m": 0.0,
        "lifted_frames": 0,
        "max_lift_m": 0.0,
    }
    if floor != "source" and len(trans):
        z = sole_heights(G, trans, rest)
        if floor == "lowest":
            shift = -float(z.min())
        else:  # contact: typical lowest contact on the floor, then no penetration
            shift = -float(np.percentile(z, CONTACT_PERCENTILE))
            radius = max(1, round(LIFT_SMOOTHING_S * bvh.fps))
            lift = _smooth_cover(np.clip(-(z + shift), 0.0, None), radius)
            trans[:, 2] += lift
            info.update(lifted_frames=int((lift > 0).sum()), max_lift_m=float(lift.max()))
        trans[:, 2] += shift
        info["floor_shift_m"] = shift
    return G, trans, info


def _smooth_cover(p: np.ndarray, r: int) -> np.ndarray:
    """A smooth curve >= ``p`` everywhere: box average (radius r) of a running max (radius r).

    Each average covers frame f with values that are all >= p[f], so the result
    never drops below ``p``; it is zero where ``p`` is zero for 2r frames around.
    """
    if not p.any():
        return p
    n = len(p)
    pad = np.pad(p, r, mode="edge")
    win = np.lib.stride_tricks.sliding_window_view(pad, 2 * r + 1)
    m = np.pad(win.max(1), r, mode="edge")
    c = np.concatenate([[0.0], np.cumsum(m)])
    return (c[2 * r + 1 :] - c[:n]) / (2 * r + 1)


def sole_heights(G: np.ndarray, translation: np.ndarray, rest: AnnyRestInfo) -> np.ndarray:
    """(F,) height of the lowest sole point of either foot per frame, metres.

    Sole points move rigidly with their dominant bone (an approximation of the
    skinned mesh good to a few millimetres at the sole).
    """
    j = anny_forward_joints(G, translation, rest)
    k = rest.sole_bones
    d = rest.sole_points - rest.joints[k]  # (N, 3)
    # z[f, n] = j[f, k_n, 2] + sum_b G[f, k_n, 2, b] * d[n, b]
    z = j[:, k, 2] + np.einsum("fnb,nb->fn", G[:, k, 2, :], d)
    return z.min(1)


def retarget(
    bvh: BVH,
    rest=None,
    fps: float | None = None,
    bone_map: BoneMap | str | Path | None = None,
    floor: str = "contact",
) -> MotionClip:
    """Retarget a BVH motion onto Anny.

    Args:
        bvh: parsed BVH (:func:`perennial.motion.bvh.read_bvh`).
        rest: :class:`AnnyRestInfo`, an Anny template, or None for the cached default.
        fps: resample the result to this frame rate (slerp); the BVH's rate when None.
        bone_map: :class:`BoneMap`, a JSON bone-map path, ``"cmu"`` or None (CMU).
        floor: ``"contact"`` (default), ``"lowest"`` or ``"source"``, see the
            module docstring.

    Returns:
        A :class:`MotionClip` (``local-ref`` rotvec, root translation in metres).

    Raises:
        RetargetError: the bone map is malformed or names joints the BVH lacks.
    """
    bmap = _resolve_map(bone_map)
    G, trans, _ = retarget_world(bvh, rest, bmap, floor)
    mapped = torch.tensor([ANNY_BONES.index(b) for b in bmap.bones])
    Gt = torch.from_numpy(G)
    parents = torch.tensor(ANNY_PARENTS)[mapped].clamp_min(0)
    D = Gt[:, parents].transpose(-1, -2) @ Gt[:, mapped]  # D_c = G_p^T G_c
    D[:, mapped == 0] = Gt[:, :1]  # the root's rotation is its world delta
    # unmapped bones follow their parent exactly: zero local-ref rotation
    rotvec = torch.zeros(G.shape[0], len(ANNY_BONES), 3, dtype=torch.float64)
    rotvec[:, mapped] = quat_to_rotvec(rotmat_to_quat(D))
    clip = MotionClip(
        rotvec.float(), torch.from_numpy(trans).float(), bvh.fps, source=str(bvh.path)
    )
    return clip if fps is None else clip.resample(fps)
