"""Rig facts of the Anny body template that need no model data.

Kept as constants so that readers (captures, motion files) can validate bone
names without building the template. ``tests/test_body.py`` checks them
against the built model.
"""

from __future__ import annotations

from perennial.errors import PerennialError

ANNY_BONES: tuple[str, ...] = (
    'root', 'pelvis.L', 'upperleg01.L', 'upperleg02.L', 'lowerleg01.L', 'lowerleg02.L',
    'foot.L', 'toe1-1.L', 'toe1-2.L', 'toe2-1.L', 'toe2-2.L', 'toe2-3.L',
    'toe3-1.L', 'toe3-2.L', 'toe3-3.L', 'toe4-1.L', 'toe4-2.L', 'toe4-3.L',
    'toe5-1.L', 'toe5-2.L', 'toe5-3.L', 'pelvis.R', 'upperleg01.R', 'upperleg02.R',
    'lowerleg01.R', 'lowerleg02.R', 'foot.R', 'toe1-1.R', 'toe1-2.R', 'toe2-1.R',
    'toe2-2.R', 'toe2-3.R', 'toe3-1.R', 'toe3-2.R', 'toe3-3.R', 'toe4-1.R',
    'toe4-2.R', 'toe4-3.R', 'toe5-1.R', 'toe5-2.R', 'toe5-3.R', 'spine05',
    'spine04', 'spine03', 'spine02', 'spine01', 'clavicle.L', 'shoulder01.L',
    'upperarm01.L', 'upperarm02.L', 'lowerarm01.L', 'lowerarm02.L', 'wrist.L', 'finger1-1.L',
    'finger1-2.L', 'finger1-3.L', 'metacarpal1.L', 'finger2-1.L', 'finger2-2.L', 'finger2-3.L',
    'metacarpal2.L', 'finger3-1.L', 'finger3-2.L', 'finger3-3.L', 'metacarpal3.L', 'finger4-1.L',
    'finger4-2.L', 'finger4-3.L', 'metacarpal4.L', 'finger5-1.L', 'finger5-2.L', 'finger5-3.L',
    'clavicle.R', 'shoulder01.R', 'upperarm01.R', 'upperarm02.R', 'lowerarm01.R', 'lowerarm02.R',
    'wrist.R', 'finger1-1.R', 'finger1-2.R', 'finger1-3.R', 'metacarpal1.R', 'finger2-1.R',
    'finger2-2.R', 'finger2-3.R', 'metacarpal2.R', 'finger3-1.R', 'finger3-2.R', 'finger3-3.R',
    'metacarpal3.R', 'finger4-1.R', 'finger4-2.R', 'finger4-3.R', 'metacarpal4.R', 'finger5-1.R',
    'finger5-2.R', 'finger5-3.R', 'neck01', 'neck02', 'neck03', 'head',
    'eye.L', 'eye.R',
)
"""The 104 bones of Anny's ``anny`` rig, in model order (index = bone id)."""

ANNY_PARENTS: tuple[int, ...] = (
    -1, 0, 1, 2, 3, 4, 5, 6, 7, 6, 9, 10, 6, 12, 13, 6,
    15, 16, 6, 18, 19, 0, 21, 22, 23, 24, 25, 26, 27, 26, 29, 30,
    26, 32, 33, 26, 35, 36, 26, 38, 39, 0, 41, 42, 43, 44, 45, 46,
    47, 48, 49, 50, 51, 52, 53, 54, 52, 56, 57, 58, 52, 60, 61, 62,
    52, 64, 65, 66, 52, 68, 69, 70, 45, 72, 73, 74, 75, 76, 77, 78,
    79, 80, 78, 82, 83, 84, 78, 86, 87, 88, 78, 90, 91, 92, 78, 94,
    95, 96, 45, 98, 99, 100, 101, 101,
)
"""Parent bone id of each bone (-1 for the root)."""

ANNY_FACIAL_ACTIONS: tuple[str, ...] = (
    'browDownLeft', 'browDownRight', 'browInnerUp', 'browOuterUpLeft',
    'browOuterUpRight', 'cheekPuff', 'cheekSquintLeft', 'cheekSquintRight',
    'eyeBlinkLeft', 'eyeBlinkRight', 'eyeLookDownLeft', 'eyeLookDownRight',
    'eyeLookInLeft', 'eyeLookInRight', 'eyeLookOutLeft', 'eyeLookOutRight',
    'eyeLookUpLeft', 'eyeLookUpRight', 'eyeSquintLeft', 'eyeSquintRight',
    'eyeWideLeft', 'eyeWideRight', 'jawForward', 'jawLeft',
    'jawOpen', 'jawRight', 'mouthClose', 'mouthDimpleLeft',
    'mouthDimpleRight', 'mouthFrownLeft', 'mouthFrownRight', 'mouthFunnel',
    'mouthLeft', 'mouthLowerDownLeft', 'mouthLowerDownRight', 'mouthPressLeft',
    'mouthPressRight', 'mouthPucker', 'mouthRight', 'mouthRollLower',
    'mouthRollUpper', 'mouthShrugLower', 'mouthShrugUpper', 'mouthSmileLeft',
    'mouthSmileRight', 'mouthStretchLeft', 'mouthStretchRight', 'mouthUpperUpLeft',
    'mouthUpperUpRight', 'noseSneerLeft', 'noseSneerRight', 'tongueOut',
)
"""The 52 ARKit facial-action blendshape names, each driven in [0, 1]."""

PHENOTYPE_LABELS: tuple[str, ...] = ("gender", "age", "muscle", "weight", "height", "proportions")
"""Anny's six phenotype parameters, each in [0, 1], 0.5 the default."""

_RIGS = {"anny": ANNY_BONES}


def bone_names(rig: str) -> tuple[str, ...]:
    """Bone names of a supported rig, in model order.

    Raises:
        PerennialError: for an unknown rig.
    """
    try:
        return _RIGS[rig]
    except KeyError:
        raise PerennialError(f"unknown rig {rig!r}; supported: {sorted(_RIGS)}") from None
