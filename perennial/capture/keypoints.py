"""Where MediaPipe's landmarks sit on Anny.

Body: BlazePose's 33 landmarks follow COCO's keypoint semantics for the points both
have; Anny ships a COCO regressor (``anny.KeypointsRegressor.coco``: 17 COCO points and
6 foot points, each a fixed blend of vertices), so those 23 points are matched and the
rest (eye corners, mouth, BlazePose's coarse hand points) are left to the hand and face
models. Hands: MediaPipe's 21 points are the wrist, four points per finger (the thumb's
CMC, MCP, IP and tip; the other fingers' MCP, PIP, DIP and tip); on Anny they are bone
heads (``wrist``, ``finger<k>-<1,2,3>``) and, for the tips, the vertex of the last
phalanx farthest along it.
"""

from __future__ import annotations

import torch
from torch import Tensor

from perennial.body.rig import ANNY_BONES

# BlazePose index of each of Anny's 23 COCO + foot keypoints (same order as the regressor's labels)
COCO_LABELS = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
    "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee",
    "right_knee", "left_ankle", "right_ankle", "left_big_toe", "right_big_toe", "left_small_toe",
    "right_small_toe", "left_heel", "right_heel",
)  # fmt: skip
BLAZE_OF_COCO = (0, 2, 5, 7, 8, 11, 12, 13, 14, 15, 16, 23, 24, 25, 26, 27, 28, 31, 32, -1, -1, 29, 30)
"""BlazePose landmark of each COCO label; -1: BlazePose has none (the small toes)."""
TORSO = (5, 6, 11, 12)
"""COCO indices of the shoulders and hips."""

SIDES = (".L", ".R")  # the person's left, right: MediaPipe's hand order in landmarks.npz


def _hand_spec(side: str) -> list[tuple[str, bool]]:
    """(bone, is_tip) for MediaPipe's 21 hand points: bone head, or the tip of that (last) bone."""
    spec = [("wrist" + side, False)]
    for k in range(1, 6):
        spec += [(f"finger{k}-{j}{side}", False) for j in (1, 2, 3)]
        spec.append((f"finger{k}-3{side}", True))
    return spec


class AnnyLandmarks:
    """Anny's points that match MediaPipe's body (23) and hand (2 x 21) landmarks.

    Body points are fixed vertex blends (a sparse (23, S) matrix over the support ``body_vertices``);
    hand points are joints (bone heads) or single vertices (fingertips).
    """

    def __init__(self, template) -> None:
        import anny

        reg = anny.KeypointsRegressor.coco(template.model)
        if tuple(reg.labels) != COCO_LABELS:
            raise RuntimeError(f"Anny's COCO regressor labels changed: {reg.labels}")
        W = reg.regression_weights.float()
        # the 64 largest weights of each point (moves no rest-pose point by more than 0.2 mm; the ears
        # blend 4,105 vertices otherwise): 1,472 vertices to skin instead of 8,795
        top, idx = W.topk(64, dim=1)
        W = torch.zeros_like(W).scatter_(1, idx, top / top.sum(1, keepdim=True))
        self.body_vertices = (W > 0).any(0).nonzero()[:, 0]
        """(S,) the vertices the body keypoints blend."""
        self.body_weights = W[:, self.body_vertices]
        """(23, S) blend weights, rows summing to 1."""
        rest_state = template.rest_state()
        rest, head = rest_state.vertices, rest_state.bone_poses[:, :3, 3]
        dominant = template.skin_indices.gather(1, template.skin_weights.argmax(1, keepdim=True))[:, 0]
        joints, tips = [], []
        for side in SIDES:
            for bone, is_tip in _hand_spec(side):
                b = ANNY_BONES.index(bone)
                joints.append(b)
                if not is_tip:
                    tips.append(-1)
                    continue
                # the tip: the vertex of the last phalanx farthest along the phalanx (rest pose)
                parent = ANNY_BONES.index(bone.replace("-3", "-2"))
                axis = head[b] - head[parent]
                own = (dominant == b).nonzero()[:, 0]
                tips.append(int(own[((rest[own] - head[b]) @ axis).argmax()]))
        self.hand_joints = torch.tensor(joints).view(2, 21)
        """(2, 21) bone whose head is each hand point (for tips: the last phalanx)."""
        self.hand_tips = torch.tensor(tips).view(2, 21)
        """(2, 21) vertex of each fingertip, -1 where the point is a bone head."""

    def body(self, vertices_support: Tensor) -> Tensor:
        """(B, 23, 3) body keypoints from the posed support vertices (B, S, 3)."""
        return torch.einsum("ks,bsc->bkc", self.body_weights.to(vertices_support), vertices_support)

    def hands(self, joints: Tensor, tip_vertices: Tensor) -> Tensor:
        """(B, 2, 21, 3) hand points from joints (B, J, 3) and the posed tip vertices (B, 2, 21, 3) (any value
        where ``hand_tips`` is -1)."""
        heads = joints[:, self.hand_joints.reshape(-1)].view(-1, 2, 21, 3)
        return torch.where((self.hand_tips >= 0)[None, ..., None].to(joints.device), tip_vertices, heads)


def skin_subset(template, x: Tensor, transforms: Tensor, idx: Tensor) -> Tensor:
    """Posed vertices ``idx`` (B, n, 3) from their rest positions ``x`` ((n, 3), or (B, n, 3) per frame) and
    skinning transforms (B, J, 4, 4)."""
    B, J = transforms.shape[:2]
    A = (template.skin_dense[idx] @ transforms[:, :, :3, :].permute(1, 0, 2, 3).reshape(J, -1))
    A = A.view(-1, B, 3, 4).transpose(0, 1)  # (B, n, 3, 4)
    return A[..., 0] * x[..., :1] + A[..., 1] * x[..., 1:2] + A[..., 2] * x[..., 2:3] + A[..., 3]
