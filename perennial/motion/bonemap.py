"""Bone maps: which source (BVH) joint drives which bone of Anny's ``anny`` rig.

Frames and units. The BVH is read in its own axes and units; a :class:`BoneMap`
says which source axis is up and which is forward in the source's rest pose and
how many metres one file unit is (CMU: +Y up, +Z forward, 0.056444 m). The fixed
rotation ``C`` (:func:`axes_matrix`) maps source axes to Anny's world frame
(metres, Z up, the body faces -Y, its left is +X); for CMU it is a +90 deg
rotation about X.

Modes. A mapped Anny bone ``b`` driven by source joint ``s`` gets the world delta
``G_b = (C R_s C^T) A_b`` (:mod:`perennial.motion.retarget`), where the constant
alignment ``A_b`` says how Anny's identity pose sits relative to the source rest
pose for that bone. The bone's mode chooses ``A_b``:

- ``"aim"`` (default): the Anny segment from ``b`` to its next mapped descendant
  is turned onto the source segment from ``s`` to the matching child joint, by the
  smallest rotation applied *after* the parent's alignment
  (``A_b = M_b A_parent``). This bends Anny's A-pose arms and knees onto the
  source's rest directions without adding twist: an elbow straightens about its
  hinge. With no such segment (the source child sits on the joint, or nothing
  below is mapped) the bone falls back to ``"inherit"``.
- ``"inherit"``: ``A_b = A_parent`` (keep the bone's reference pose relative to its
  parent, e.g. a hand continuing its forearm).
- ``"world"``: ``A_b = H``: both rest poses agree on the bone's world orientation
  (upright head, flat feet) up to the heading ``H`` of the source's reference pose
  (the turn about the vertical that takes Anny's hips line onto the source's; the
  identity for a rest pose that faces the map's ``forward``). The root is ``"world"``
  by default; a root in ``"aim"`` or ``"reach"`` mode is turned to best fit the
  directions from the root to the hips, shoulders, neck and head (heading and lean,
  :func:`perennial.motion.retarget_plan.make_plan`), which is what a rest pose that is
  not upright (a game-studio rest with the bones along local X) needs.
- ``"reach"``: ``"aim"``, then a per-frame swing towards the source child
  joint's *position* (see :mod:`perennial.motion.retarget`).

Reference pose. "Rest pose" above is the source's *reference* pose, chosen by the
map's ``reference``: ``"rest"`` (every channel zero: the BVH rest, where every world
rotation is the identity), a frame index, or ``"auto"`` (the most upright frame with
straight legs and flat feet, :mod:`perennial.motion.reference`). Files whose zero
rest is not a human pose (every bone along +Y or +X) need a frame.

Unmapped Anny bones follow their parent. Bone maps are written as JSON
(:meth:`BoneMap.from_dict`); :data:`CMU_BONE_MAP` is built in.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from perennial.body.rig import ANNY_BONES
from perennial.errors import PerennialError
from perennial.motion.bvh import BVH

__all__ = [
    "CMU_BONE_MAP",
    "EVAL_BONES",
    "BoneMap",
    "RetargetError",
    "axes_matrix",
    "axis_vector",
    "load_bone_map",
    "resolve_bone_map",
]

BONE_MAP_FORMAT = "perennial-bone-map"
BONE_MAP_VERSION = 1
MODES = ("aim", "reach", "inherit", "world")
EVAL_BONES: tuple[str, ...] = tuple(
    f"{b}.{s}"
    for b in ("upperleg01", "lowerleg01", "foot", "upperarm01", "lowerarm01", "wrist")
    for s in "LR"
) + ("head",)
"""Anny bones whose heads are compared with the source joints when evaluating
(hips, knees, ankles, shoulders, elbows, wrists, head)."""


def _listed(names: list[str], most: int = 30) -> str:
    """Names joined by commas, at most ``most`` of them and how many more."""
    more = f", ... ({len(names) - most} more)" if len(names) > most else ""
    return ", ".join(names[:most]) + more


class RetargetError(PerennialError):
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


def axis_vector(spec: str) -> np.ndarray:
    """(3,) unit vector of an axis name such as ``"+y"`` or ``"-z"``."""
    return _axis_vector(spec, "axis")


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
        modes: Anny bone -> ``"aim"``, ``"reach"``, ``"inherit"`` or ``"world"``
            (see the module docstring); bones not listed use ``"aim"``, the root
            ``"world"``.
        evaluate: Anny bone -> source joint compared in evaluation; by default the
            mapped bones among :data:`EVAL_BONES`.
        up: source up axis in its rest pose, e.g. ``"+y"``.
        forward: direction the source rest pose faces, e.g. ``"+z"``.
        scale: metres per source file unit.
        name: label for messages and reports.
        reference: the source pose Anny's identity pose is aligned with: ``"rest"``
            (all channels zero), ``"auto"`` (chosen per file) or a frame index.
    """

    bones: dict[str, str]
    modes: dict[str, str] = field(default_factory=dict)
    evaluate: dict[str, str] = field(default_factory=dict)
    up: str = "+y"
    forward: str = "+z"
    scale: float = 1.0
    name: str = "custom"
    reference: str | int = "rest"

    def __post_init__(self) -> None:
        where = f"bone map {self.name!r}"
        ref = self.reference
        if not (ref in ("rest", "auto") or (isinstance(ref, int) and not isinstance(ref, bool) and ref >= 0)):
            raise RetargetError(f"{where}: field 'reference' must be \"rest\", \"auto\" or a frame index >= 0, "
                                f"got {ref!r}")  # fmt: skip
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
                f"{_listed(missing)} (the file has: {_listed(bvh.names)})"
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
            "reference": self.reference,
            "bones": bones,
            "evaluate": dict(self.evaluate),
        }

    @classmethod
    def from_dict(cls, data: Any, where: str = "bone map") -> BoneMap:
        """Build a map from plain data (the JSON format), failing on unknown keys.

        The format::

            {"format": "perennial-bone-map", "version": 1,      # optional
             "name": "mixamo", "scale": 0.01, "up": "+y", "forward": "+z",
             "reference": "rest",                                  # optional
             "bones": {"root": "Hips", "upperleg01.L": "LeftUpLeg",
                       "foot.L": {"joint": "LeftFoot", "mode": "world"}, ...},
             "evaluate": {"upperleg01.L": "LeftUpLeg", ...}}       # optional
        """
        if not isinstance(data, dict):
            raise RetargetError(f"{where}: expected a JSON object")
        known = {"format", "version", "name", "scale", "up", "forward", "reference", "bones", "evaluate"}
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
                reference=data.get("reference", "rest"),
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
        modes |= {f"upperarm01.{side}": "reach", f"lowerarm01.{side}": "reach"}
        modes |= {f"toe{k}-1.{side}": "inherit" for k in range(1, 6)}
    evaluate = {}
    for side, src in (("L", "Left"), ("R", "Right")):
        evaluate |= {
            f"upperleg01.{side}": f"{src}Hip",
            f"lowerleg01.{side}": f"{src}Knee",
            f"foot.{side}": f"{src}Ankle",
            f"upperarm01.{side}": f"{src}Shoulder",
            f"lowerarm01.{side}": f"{src}Elbow",
            f"wrist.{side}": f"{src[0].lower()}hand",  # at the wrist, as {src}Wrist
        }
    evaluate["head"] = "Head"
    return BoneMap(bones, modes, evaluate, up="+y", forward="+z", scale=0.056444, name="cmu")


CMU_BONE_MAP: BoneMap = _cmu_map()
"""Built-in map for the CMU 31-joint BVH skeleton (cgspeed conversion): Y up,
facing +Z, 0.056444 m per unit."""


def resolve_bone_map(bone_map: BoneMap | dict | str | Path | None) -> BoneMap:
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
