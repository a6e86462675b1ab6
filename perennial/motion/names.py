"""Joint names of motion-capture skeletons: tokens, side and anatomical role.

Conventions name the same joint in many ways (``LeftUpLeg``, ``mixamorig:LeftUpLeg``,
``CC_Base_L_Thigh``, ``Bip01 L Thigh``, ``thigh_l``, ``lThighBend``, ``lfemur``,
``LeftHip``). :func:`joint_name` reduces a name to what matters:

- namespaces (``mixamorig:``, Maya ``a|b`` paths) and vendor prefixes (``CC_Base``,
  ``Bip01``, ``DEF``, ``Character1``, ...) are dropped;
- the name is split into lower-case tokens at separators (``_ - . space``), at
  camelCase boundaries and between letters and digits;
- a side token (``l``, ``left``, ``r``, ``right``, also glued as in ``lfemur`` or
  ``rhand``) gives the side ``"L"`` or ``"R"``;
- the remaining letters give the role, by synonyms: thigh/upleg/upperleg/hip/buttock/femur,
  shin/calf/leg/knee/lowerleg/tibia, foot/ankle, toe/toebase/ball, collar/clavicle
  (``shoulder`` is either a clavicle or an upper arm, decided by the chain),
  upperarm/arm/shldr/humerus, forearm/lowerarm/elbow/radius, hand/wrist,
  the five fingers, spine/abdomen/chest/waist/back/thorax, neck, head, and the
  unsided hips/pelvis/root;
- twist, share, roll, helper, IK, end/nub/tip and face bones are *helpers*, never
  mapped (a twist of the neck is the neck: some rigs call their neck bones so).

Topology decides what names leave open (:mod:`perennial.motion.skeleton_detect`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["CONVENTIONS", "JointName", "guess_convention", "joint_name", "tokens"]

_PREFIXES = {"cc", "base", "mixamorig", "def", "org", "mch", "character", "armature", "rig", "skel",
             "skeleton", "sk", "bn", "jnt", "rl", "valve", "biped", "bip"}  # fmt: skip
_SIDES = {"l": "L", "left": "L", "lft": "L", "r": "R", "right": "R", "rt": "R", "rgt": "R"}
_HELPER_TOKENS = {
    "twist", "share", "sharebone", "roll", "helper", "nub", "end", "tip", "top", "ik", "fk", "ctrl",
    "control", "pole", "target", "dummy", "null", "corrective", "adjust", "eye", "eyes", "jaw", "tongue",
    "teeth", "lip", "lips", "brow", "cheek", "breast", "facial", "face", "lid", "eyelid", "nose", "ear",
    "hair", "weapon", "prop", "attach", "socket", "ribs", "upperjaw", "lowerjaw", "muscle",
    "site", "offset", "bust", "pectoral", "ponytail", "skirt", "cape", "tail",
}  # fmt: skip
_FINGERS = {"thumb": 1, "index": 2, "middle": 3, "mid": 3, "ring": 4, "pinky": 5, "pinkie": 5,
            "little": 5}  # fmt: skip
_PHALANX_WORDS = {"metacarpal": 0, "carpal": 0, "inhand": 0, "proximal": 1, "intermediate": 2,
                  "medial": 2, "distal": 3}  # fmt: skip

# role -> regular expression on the side-less letters of the name; first match wins
_ROLES: list[tuple[str, str]] = [
    ("pelvis_side", r"hipjoint|hipbone"),
    ("toe", r".*toe.*|ball|balloffoot|toes?base"),
    ("foot_detail", r"metatarsals?|heel"),
    ("foot", r"foot|ankle|tarsus"),
    ("forearm", r"(fore|lower|lo)arm\w*|elbow|radius|ulna"),
    ("upperarm", r"(upper|up)arm\w*|arm|shldr\w*|humerus"),
    ("clavicle", r"collar\w*|clavicle|clav|scapula"),
    ("shoulder", r"shoulder"),
    ("hand", r"hand|wrist|palm"),
    ("thigh", r"(up|upper)leg\w*|thigh\w*|hip|buttock|femur|uleg"),
    ("shin", r"(lower|lo)leg\w*|leg|shin\w*|calf|knee|tibia|crus"),
    ("neck", r"\w*neck\w*"),
    ("head", r"head|skull"),
    ("spine", r"spine|abdomen\w*|chest\w*|waist|torso|\w*back|thorax|ribcage|belly|stomach|"
              r"lumbar|dorsal|upperchest|trunk"),
    ("pelvis", r"hips|hip|pelvis|root|cog|com|body|center|centre|reference|"),
]
_ROLE_RE = [(role, re.compile(rf"^(?:{pattern})$")) for role, pattern in _ROLES]
SIDED_ROLES = {"pelvis_side", "toe", "foot_detail", "foot", "forearm", "upperarm", "clavicle",
               "shoulder", "hand", "thigh", "shin", "finger"}  # fmt: skip
_TOKEN_RE = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+")


def tokens(name: str) -> list[str]:
    """Lower-case tokens of a joint name, namespace dropped (``mixamorig:LeftUpLeg`` ->
    ``["left", "up", "leg"]``, ``CC_Base_L_Thigh`` -> ``["cc", "base", "l", "thigh"]``)."""
    name = re.split(r"[:|]", name)[-1]
    out: list[str] = []
    for part in re.split(r"[\s_\-.]+", name):
        out += [t.lower() for t in _TOKEN_RE.findall(part)]
    return out


def _role_of(letters: str) -> str | None:
    for role, rx in _ROLE_RE:
        if rx.match(letters):
            return role
    return None


@dataclass(frozen=True)
class JointName:
    """What a joint's name says.

    Attributes:
        name: the name as written in the file.
        side: ``"L"``, ``"R"`` or ``""`` (none named).
        role: one of ``pelvis``, ``spine``, ``neck``, ``head``, ``clavicle``, ``shoulder``
            (clavicle or upper arm), ``upperarm``, ``forearm``, ``hand``, ``finger``, ``thigh``,
            ``shin``, ``foot``, ``toe``, ``pelvis_side``, ``foot_detail``, or ``""`` (unknown).
        helper: a twist/share/roll/IK/end/face bone: never drives Anny.
        finger: 1 (thumb) to 5 (little) for a finger joint named so, else 0; numbered
            fingers (``Finger0``, ``Finger1``...) give ``-1 - number`` until the skeleton
            tells whether they count from 0 or 1.
        phalanx: 0 for a metacarpal, 1-3 for phalanges when the name says, else -1.
        number: trailing number of the name (``Spine2`` -> 2), -1 when none.
    """

    name: str
    side: str
    role: str
    helper: bool
    finger: int = 0
    phalanx: int = -1
    number: int = -1


def joint_name(name: str) -> JointName:
    """Side, role and helper flag of one joint name (see the module docstring)."""
    toks = tokens(name)
    # vendor prefixes and a leading "Bip01"-style number
    while len(toks) > 1 and (toks[0] in _PREFIXES or toks[0].isdigit()):
        toks = toks[1:]
    toks = [t for t in toks if t not in ("bone", "jnt", "bn")] or toks
    side = ""
    rest: list[str] = []
    for t in toks:
        if t in _SIDES and not side:
            side = _SIDES[t]
        else:
            rest.append(t)
    letters = [t for t in rest if not t.isdigit()]
    digits = [t for t in rest if t.isdigit()]
    if not side and letters:  # glued side: lfemur, rhand, LeftArm written leftarm
        first = letters[0]
        for pre, s in (("left", "L"), ("right", "R"), ("l", "L"), ("r", "R")):
            tail = first[len(pre) :]
            if first.startswith(pre) and tail and _sided_word(tail):
                side, letters = s, [tail, *letters[1:]]
                break
    number = int(digits[-1]) if digits else -1
    word = "".join(letters)
    helper = any(t in _HELPER_TOKENS for t in letters) or "twist" in word or "share" in word
    finger, phalanx = 0, -1
    for t in letters:
        if t in _FINGERS and not finger:
            finger = _FINGERS[t]
        elif _finger_word(t) and not finger:
            finger = _FINGERS[_finger_word(t)]
        if t in _PHALANX_WORDS:
            phalanx = _PHALANX_WORDS[t]
    if "carpal" in word or "inhand" in word:
        phalanx = 0
    if finger and phalanx < 0 and digits:
        phalanx = int(digits[-1])
    role = ""
    if "toe" in word:
        role = "toe" if not finger else "toe_detail"
    elif finger or phalanx == 0 or re.fullmatch(r"fingers?\w*", word or "-"):
        role = "finger"
        if not finger and digits and word.startswith("finger"):
            finger = -1 - int(digits[0][0])  # numbered finger, base decided later
            if phalanx < 0:  # Biped: Finger1, Finger11, Finger12 are the index's phalanges
                phalanx = 1 + (int(digits[0][1:]) if len(digits[0]) > 1 else 0)
    else:
        core = re.sub(r"(bend|joint|jnt)$", "", word) if word not in ("hipjoint",) else word
        role = _role_of(core) or ""
    if role == "neck" and helper and not any(t in _HELPER_TOKENS - {"twist"} for t in letters):
        helper = False  # NeckTwist01/02 of some rigs (Character Creator) are the neck
    if role in ("pelvis", "spine", "neck", "head") and side:
        helper = True  # a sided spine or head bone is a helper (breast, eye...)
    if role in ("pelvis_side", "foot_detail", "toe_detail"):
        helper = True
    if role == "thigh" and not side and word in ("hip", "hips"):
        role = "pelvis"  # Daz/Poser "hip" is the pelvis
    if role == "pelvis" and side:
        role, helper = "pelvis_side", True
    return JointName(name, side, role, helper, finger, phalanx, number)


def _sided_word(t: str) -> bool:
    """A limb or finger word that a glued side letter may precede (``hand`` of ``lhand``)."""
    return _role_of(t) in SIDED_ROLES or bool(_finger_word(t)) or bool(re.fullmatch(r"fingers?", t))


def _finger_word(t: str) -> str:
    for w in _FINGERS:
        if t.startswith(w) or t.endswith(w):
            return w
    return ""


CONVENTIONS: dict[str, tuple[str, ...]] = {
    "cmu": ("LHipJoint", "LeftHip", "LeftKnee", "LeftAnkle", "LeftCollar", "LeftShoulder", "LeftElbow",
            "LeftWrist", "lhand", "lowerback", "Chest", "Chest2", "lowerneck", "LFingers"),
    "cmu-asf": ("root", "lhipjoint", "lfemur", "ltibia", "lfoot", "ltoes", "lowerback", "upperback", "thorax",
                "lowerneck", "upperneck", "lclavicle", "lhumerus", "lradius", "lwrist", "lhand"),
    "mixamo": (),  # recognised by its namespace
    "character-creator": (),  # CC_Base_ prefix
    "3dsmax-biped": (),  # Bip01 prefix
    "daz-poser": ("hip", "abdomen", "abdomenLower", "abdomenUpper", "chest", "chestLower", "chestUpper",
                  "lThigh", "lThighBend", "lShin", "lShldr", "lShldrBend", "lForeArm", "lForearmBend",
                  "lCollar", "lHand", "neckLower", "neckUpper", "lButtock"),
    "unreal": ("root", "pelvis", "spine_01", "spine_02", "spine_03", "neck_01", "thigh_l", "calf_l", "foot_l",
               "ball_l", "clavicle_l", "upperarm_l", "lowerarm_l", "hand_l"),
    "unity-humanoid": ("Hips", "LeftUpperLeg", "LeftLowerLeg", "LeftFoot", "LeftToes", "Spine", "Chest",
                       "UpperChest", "LeftShoulder", "LeftUpperArm", "LeftLowerArm", "LeftHand"),
    "motionbuilder": ("Hips", "LeftUpLeg", "LeftLeg", "LeftFoot", "LeftToeBase", "Spine", "Spine1", "Neck",
                      "Head", "LeftShoulder", "LeftArm", "LeftForeArm", "LeftHand", "Neck1", "Reference"),
    "perception-neuron": ("Hips", "LeftUpLeg", "LeftLeg", "LeftFoot", "Spine", "Spine1", "Spine2", "Spine3",
                          "Neck", "Head", "LeftShoulder", "LeftArm", "LeftForeArm", "LeftHand",
                          "LeftInHandIndex", "LeftInHandMiddle", "LeftInHandRing", "LeftInHandPinky"),
    "rokoko": ("Hips", "LeftThigh", "LeftShin", "LeftFoot", "LeftToe", "Spine1", "Spine2", "Spine3", "Spine4",
               "Neck", "Head", "LeftShoulder", "LeftArm", "LeftForeArm", "LeftHand",
               "LeftFinger1Metacarpal", "LeftFinger1Proximal", "LeftFinger2Proximal"),
}  # fmt: skip
"""Characteristic joint names of the conventions told apart (a label for messages only:
detection itself works from roles and topology)."""


def guess_convention(names: list[str]) -> str:
    """The convention whose characteristic names the skeleton shares most, or ``"generic"``."""
    if any(n.lower().startswith("mixamorig") for n in names):
        return "mixamo"
    if sum(n.startswith("CC_Base_") for n in names) >= 5:
        return "character-creator"
    if sum(bool(re.match(r"^Bip0*\d+( |$)", n)) for n in names) >= 5:
        return "3dsmax-biped"
    have = set(names)
    best, hits = "generic", 0
    for conv, known in CONVENTIONS.items():
        # the share of the convention's names found, counted in names so that
        # larger sets are not favoured
        k = len(have & set(known))
        score = k / max(len(known), 1)
        if k >= 5 and (score > hits):
            best, hits = conv, score
    return best
