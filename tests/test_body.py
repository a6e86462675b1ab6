import time

import pytest
import torch

from perennial.body.anny import PART_NAMES, AnnyTemplate
from perennial.body.lbs import (
    SurfaceQuery,
    blend_transforms,
    inverse_lbs,
    invert_transforms,
    skin_points,
)
from perennial.body.rig import ANNY_BONES, ANNY_PARENTS


def moderate_pose(template, seed=0):
    """A plausible pose: major joints bent by ~0.15 rad, fingers/toes/eyes at rest, feet near z=0."""
    g = torch.Generator().manual_seed(seed)
    rv, tr = template.rest_pose(1)
    major = [i for i, b in enumerate(ANNY_BONES) if not any(k in b for k in ("toe", "finger", "metacarpal", "eye"))]
    rv[:, major] = torch.randn(1, len(major), 3, generator=g) * 0.15
    rv[:, 0] = torch.tensor([0.0, 0.0, 0.7])  # turned about Z
    tr[:, 2] = 0.9
    return rv, tr


def test_rig_constants_match_model(template):
    assert tuple(template.model.bone_labels) == ANNY_BONES
    assert list(template.model.bone_parents) == list(ANNY_PARENTS)
    assert template.num_bones == 104
    assert template.num_vertices == 13718
    assert template.faces.shape == (27420, 3)
    assert template.uvs.shape[1] == 2 and template.uv_faces.shape == template.faces.shape
    assert template.uv_faces.max() < template.uvs.shape[0]
    assert torch.allclose(template.skin_weights.sum(1), torch.ones(13718), atol=1e-5)


def test_forward_shapes_and_translation(template):
    rv, tr = template.rest_pose(3)
    tr[1, 2] = 1.0
    out = template(rv, tr)
    assert out.vertices.shape == (3, 13718, 3)
    assert out.joints.shape == (3, 104, 3) and out.bone_poses.shape == (3, 104, 4, 4)
    assert torch.allclose(out.joints[1, 0], torch.tensor([0.0, 0.0, 1.0]), atol=1e-6)
    assert torch.allclose(out.vertices[1] - out.vertices[0], torch.tensor([0.0, 0.0, 1.0]).expand(13718, 3), atol=1e-5)
    # the standing body is about 1.6 m tall with default phenotypes, facing -Y (nose in front)
    height = out.vertices[0, :, 2].max() - out.vertices[0, :, 2].min()
    assert 1.5 < height < 1.75
    head = out.joints[0, ANNY_BONES.index("eye.L")]
    assert head[1] < out.joints[0, ANNY_BONES.index("head"), 1]


def test_forward_errors(template):
    with pytest.raises(ValueError, match="rotvec"):
        template(torch.zeros(1, 10, 3), torch.zeros(1, 3))
    with pytest.raises(ValueError, match="translation"):
        template(torch.zeros(2, 104, 3), torch.zeros(1, 3))
    with pytest.raises(ValueError, match="phenotype"):
        template(torch.zeros(1, 104, 3), torch.zeros(1, 3), phenotype={"heigth": 0.5})


def test_skinning_transforms_reproduce_vertices(template):
    rv, tr = moderate_pose(template)
    out = template(rv, tr)
    A = blend_transforms(template.dense_skin_weights(), out.transforms[0])
    v = (A[:, :3, :3] @ out.rest_vertices[0, :, :, None])[..., 0] + A[:, :3, 3]
    assert (v - out.vertices[0]).abs().max() < 1e-5


def test_phenotype_and_facial_actions(template):
    rv, tr = template.rest_pose(1)
    tall = template(rv, tr, phenotype={"height": 1.0}).vertices[0]
    short = template(rv, tr, phenotype={"height": 0.0}).vertices[0]
    assert (tall[:, 2].max() - tall[:, 2].min()) > (short[:, 2].max() - short[:, 2].min()) + 0.1
    fa = torch.zeros(1, 52)
    fa[0, template.facial_action_names.index("jawOpen")] = 1.0
    moved = (template(rv, tr, facial_actions=fa).vertices[0] - template(rv, tr).vertices[0]).norm(dim=-1)
    assert moved.max() > 0.005
    face = (template.part_labels == PART_NAMES.index("head")) | (template.part_labels == PART_NAMES.index("neck"))
    assert moved[~face].max() < 1e-4  # only the face (and the chin over the neck) moves


def test_gradients_reach_pose(template):
    rv, tr = template.rest_pose(1)
    rv.requires_grad_(True)
    template(rv, tr).vertices.square().sum().backward()
    assert rv.grad is not None and rv.grad[0, ANNY_BONES.index("upperarm01.L")].abs().sum() > 0


def test_part_labels(template):
    counts = torch.bincount(template.part_labels, minlength=len(PART_NAMES))
    assert (counts > 50).all(), dict(zip(PART_NAMES, counts.tolist()))
    rv, tr = template.rest_pose(1)
    v = template(rv, tr).vertices[0]

    def x(name):
        return v[template.part_labels == PART_NAMES.index(name), 0].mean()

    def z(name):
        return v[template.part_labels == PART_NAMES.index(name), 2].mean()

    assert x("hand.L") > 0.3 and x("hand.R") < -0.3  # Anny's left is +X
    assert z("head") > z("torso") > z("upperleg.L") > z("lowerleg.L") > z("foot.L")


def test_warm_construction_is_fast(template):
    t0 = time.perf_counter()
    AnnyTemplate()
    assert time.perf_counter() - t0 < 1.0


def test_inverse_lbs_round_trip(template):
    g = torch.Generator().manual_seed(1)
    rv, tr = moderate_pose(template)
    out = template(rv, tr)
    rest_v, faces = out.rest_vertices[0], template.faces
    W = template.dense_skin_weights()
    rest, posed = SurfaceQuery(rest_v, faces), SurfaceQuery(out.vertices[0], faces)
    # points within 5 cm of the rest surface
    n = 6000
    f = torch.randint(0, faces.shape[0], (n,), generator=g)
    b = torch.rand(n, 3, generator=g)
    b = b / b.sum(1, keepdim=True)
    tri = rest_v[faces[f]]
    normal = torch.linalg.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    normal = normal / normal.norm(dim=-1, keepdim=True)
    x_c = (b[..., None] * tri).sum(1) + normal * (torch.rand(n, 1, generator=g) * 0.1 - 0.05)
    x_p = skin_points(x_c, rest, W, out.transforms[0])
    res = inverse_lbs(x_p, posed, rest, W, out.transforms[0], iterations=2)
    err = (res.canonical - x_c).norm(dim=-1)
    # Exact (< 1 mm) except where the 5 cm shells of two bones overlap near joints
    # (armpits, neck, crotch): there the skinning map itself folds.
    assert (err < 1e-3).float().mean() > 0.98
    assert err.median() < 1e-5
    # the reported residual flags most of the failures
    assert ((err > 1e-3) & (res.residual < 1e-4)).float().mean() < 0.01


def test_surface_query_matches_brute_force(template):
    rv, tr = template.rest_pose(1)
    v = template(rv, tr).vertices[0]
    q = SurfaceQuery(v, template.faces)
    pts = v[::500] + 0.01
    hit = q.closest(pts)
    closest = torch.einsum("nk,nkc->nc", hit.bary, v[template.faces[hit.face]])
    assert torch.allclose((closest - pts).norm(dim=-1), hit.distance, atol=1e-5)
    # no vertex is closer than the reported surface point
    brute = torch.cdist(pts, v, compute_mode="donot_use_mm_for_euclid_dist").min(1).values
    assert (brute >= hit.distance - 1e-6).all()


def test_inverse_transform_gradcheck():
    g = torch.Generator().manual_seed(0)
    w = torch.rand(5, 4, generator=g, dtype=torch.float64)
    w = w / w.sum(1, keepdim=True)
    T = torch.eye(4, dtype=torch.float64).repeat(4, 1, 1)
    T[:, :3, :3] += 0.1 * torch.randn(4, 3, 3, generator=g, dtype=torch.float64)
    T[:, :3, 3] = torch.randn(4, 3, generator=g, dtype=torch.float64)
    T.requires_grad_(True)
    p = torch.randn(5, 3, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda T, p: invert_transforms(blend_transforms(w, T), p), (T, p))


def test_far_points_get_valid_weights(template):
    rv, tr = template.rest_pose(1)
    out = template(rv, tr)
    q = SurfaceQuery(out.vertices[0], template.faces)
    far = torch.tensor([[5.0, 5.0, 5.0]])
    hit = q.closest(far, max_dist=0.5)
    assert hit.face.item() == -1 and hit.distance.item() > 1e9
    w = q.weights(hit, template.dense_skin_weights())
    assert torch.allclose(w.sum(1), torch.ones(1))
    res = inverse_lbs(far, q, q, template.dense_skin_weights(), out.transforms[0], max_dist=0.5)
    assert torch.isfinite(res.canonical).all()


def test_pose_rest_equals_forward(template):
    """Posing a cached rest state (FK + skinning) gives the full forward's numbers."""
    pheno = {"gender": 0.2, "height": 0.8, "weight": 0.3}
    rest = template.rest_state(pheno)
    g = torch.Generator().manual_seed(3)
    rv = 0.3 * torch.randn(2, template.num_bones, 3, generator=g)
    tr = torch.tensor([[0.1, -0.2, 0.9], [0.0, 0.3, 1.0]])
    ref = template(rv, tr, phenotype=pheno)
    verts, transforms = template.pose_rest(rv, tr, rest)
    assert torch.allclose(verts, ref.vertices, atol=1e-5)
    assert torch.allclose(transforms, ref.transforms, atol=1e-5)
    assert torch.allclose(rest.vertices, ref.rest_vertices[0], atol=1e-6)
    rv.requires_grad_(True)
    _, transforms = template.pose_rest(rv, tr, rest, vertices=False)
    transforms.sum().backward()
    assert rv.grad.abs().sum() > 0


def test_pose_rest_with_facial_actions_equals_forward(template):
    """Facial actions are linear blendshapes of the rest mesh: the cached basis reproduces them."""
    pheno = {"age": 0.7, "weight": 0.6}
    rest = template.rest_state(pheno)
    basis = template.facial_basis(rest)
    assert basis.shape == (52, template.num_vertices, 3) and rest.facial_basis is basis
    assert template.facial_basis(rest) is basis  # computed once per rest state
    g = torch.Generator().manual_seed(4)
    rv = 0.2 * torch.randn(2, template.num_bones, 3, generator=g)
    tr = torch.tensor([[0.0, 0.0, 0.9], [0.2, -0.1, 1.0]])
    fa = torch.rand(2, 52, generator=g)  # many actions at once: checks linearity, not one column
    ref = template(rv, tr, phenotype=pheno, facial_actions=fa)
    verts, transforms = template.pose_rest(rv, tr, rest, facial_actions=fa)
    assert (verts - ref.vertices).abs().max() < 1e-5
    assert torch.allclose(transforms, ref.transforms, atol=1e-5)
    # without actions: the neutral face; a face region that moves, nothing else
    neutral, _ = template.pose_rest(rv, tr, rest)
    assert (neutral - template(rv, tr, phenotype=pheno).vertices).abs().max() < 1e-5
    face = template.face_vertices(rest)
    moved = (verts - neutral).norm(dim=-1).amax(0)
    assert moved[face].max() > 0.005 and moved[~face].max() < 1e-4
    assert face[template.part_labels == PART_NAMES.index("head")].float().mean() > 0.5
    with pytest.raises(ValueError, match="phenotype"):
        template.facial_basis(type(rest)(vertices=rest.vertices, bone_poses=rest.bone_poses))
