"""perennial.motion: motion clips, BVH and ASF/AMC import, skeleton recognition and
retargeting onto Anny, motion banks.

Light to import: the Anny model is only loaded when a function needs it.
"""

from perennial.motion.asf import ASFError, read_amc, read_asf
from perennial.motion.bank import MotionBank, load_bank
from perennial.motion.bank_import import BankEntry, BankReport, import_bank
from perennial.motion.bonemap import CMU_BONE_MAP, BoneMap, RetargetError, load_bone_map
from perennial.motion.bvh import BVH, BVHError, BVHJoint, parse_bvh, read_bvh
from perennial.motion.clip import MotionClip, MotionFormatError
from perennial.motion.load import load_motion
from perennial.motion.rest import AnnyRestInfo, rest_info
from perennial.motion.retarget import retarget
from perennial.motion.skeleton_detect import Detection, SkeletonError, detect_skeleton

__all__ = [
    "ASFError",
    "BVH",
    "CMU_BONE_MAP",
    "AnnyRestInfo",
    "BVHError",
    "BVHJoint",
    "BankEntry",
    "BankReport",
    "BoneMap",
    "Detection",
    "MotionBank",
    "MotionClip",
    "MotionFormatError",
    "RetargetError",
    "SkeletonError",
    "detect_skeleton",
    "import_bank",
    "load_bank",
    "load_bone_map",
    "load_motion",
    "parse_bvh",
    "read_amc",
    "read_asf",
    "read_bvh",
    "rest_info",
    "retarget",
]
