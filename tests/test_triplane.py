"""Tri-plane lookup: embedding-bag fast path against its grid_sample twin, and the modules."""

import pytest
import torch

from perennial.avatar.field import (
    TriPlane,
    TriPlaneConfig,
    planes_to_table,
    table_to_planes,
    triplane_lookup,
    triplane_lookup_grid_sample,
)


def _points(n: int, generator: torch.Generator, dtype=torch.float32) -> torch.Tensor:
    """Random points in [-1.3, 1.3]^3 plus the cube's corners, edges, faces and beyond."""
    rand = torch.rand(n, 3, generator=generator, dtype=dtype) * 2.6 - 1.3
    corners = torch.tensor(
        [[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], dtype=dtype
    )
    special = torch.tensor(
        [
            [0, 0, 0],
            [1, 0, 0],
            [0, -1, 0],
            [0, 0, 1],
            [1, 1, 0.3],
            [-1, 0.2, 1],
            [5, -7, 0.1],
            [-1e6, 1e6, 2],
            [1.0001, -1.0001, 0.5],
        ],
        dtype=dtype,
    )
    return torch.cat([rand, corners, special])


def _random_planes(C: int, R: int, generator: torch.Generator, dtype=torch.float32):
    return torch.randn(3, C, R, R, generator=generator, dtype=dtype)


@pytest.mark.parametrize("reduce", ["sum", "concat"])
@pytest.mark.parametrize("R", [2, 5, 32])
def test_forward_matches_grid_sample(reduce, R):
    g = torch.Generator().manual_seed(R)
    planes = _random_planes(6, R, g)
    points = _points(3000, g)
    fast = triplane_lookup(planes_to_table(planes), points, R, reduce)
    ref = triplane_lookup_grid_sample(planes, points, reduce)
    assert fast.shape == ref.shape == (points.shape[0], 6 * (3 if reduce == "concat" else 1))
    assert (fast - ref).abs().max() < 1e-5


@pytest.mark.parametrize("reduce", ["sum", "concat"])
def test_table_gradient_matches_grid_sample(reduce):
    g = torch.Generator().manual_seed(1)
    R = 16
    planes = _random_planes(4, R, g).requires_grad_()
    table = planes_to_table(planes.detach()).requires_grad_()
    points = _points(2000, g)
    fast = triplane_lookup(table, points, R, reduce)
    upstream = torch.randn(fast.shape, generator=g)
    (grad_table,) = torch.autograd.grad(fast, table, upstream)
    (grad_planes,) = torch.autograd.grad(
        triplane_lookup_grid_sample(planes, points, reduce), planes, upstream
    )
    assert (grad_table - planes_to_table(grad_planes)).abs().max() < 1e-5


@pytest.mark.parametrize("reduce", ["sum", "concat"])
def test_points_gradient_matches_grid_sample(reduce):
    g = torch.Generator().manual_seed(2)
    R = 8
    planes = _random_planes(3, R, g, torch.float64)
    table = planes_to_table(planes)
    points = torch.rand(500, 3, generator=g, dtype=torch.float64) * 2.6 - 1.3
    p_fast, p_ref = points.clone().requires_grad_(), points.clone().requires_grad_()
    fast = triplane_lookup(table, p_fast, R, reduce)
    ref = triplane_lookup_grid_sample(planes, p_ref, reduce)
    upstream = torch.randn(fast.shape, generator=g, dtype=torch.float64)
    (gf,) = torch.autograd.grad(fast, p_fast, upstream)
    (gr,) = torch.autograd.grad(ref, p_ref, upstream)
    assert (gf - gr).abs().max() < 1e-9
    assert (gf[points.abs() > 1] == 0).all()  # clamped axes give zero derivative

    # exactly on the border grid_sample gives zero; we give the derivative from inside
    edge = torch.tensor([[0.1, -1.0, 0.2], [0.3, 0.4, 1.0]], dtype=torch.float64)
    (ge,) = torch.autograd.grad(
        triplane_lookup(table, edge.requires_grad_(), R, reduce).sum(), edge
    )
    h = 1e-7
    inward = torch.tensor([[0.0, h, 0.0], [0.0, 0.0, -h]], dtype=torch.float64)
    one_sided = (
        triplane_lookup(table, edge.detach() + inward, R, reduce).sum(1)
        - triplane_lookup(table, edge.detach(), R, reduce).sum(1)
    ) / inward.sum(1)
    assert torch.allclose(torch.stack([ge[0, 1], ge[1, 2]]), one_sided, atol=1e-5)


@pytest.mark.parametrize("reduce", ["sum", "concat"])
def test_gradcheck_float64(reduce):
    g = torch.Generator().manual_seed(3)
    R, C = 3, 2
    table = torch.randn(3 * R * R, C, generator=g, dtype=torch.float64, requires_grad=True)
    points = torch.rand(6, 3, generator=g, dtype=torch.float64) * 2.4 - 1.2  # some clamped
    assert torch.autograd.gradcheck(lambda t: triplane_lookup(t, points, R, reduce), (table,))
    inside = (torch.rand(5, 3, generator=g, dtype=torch.float64) * 1.8 - 0.9).requires_grad_()
    assert torch.autograd.gradcheck(lambda t, p: triplane_lookup(t, p, R, reduce), (table, inside))


def test_sparse_gradient_equals_dense():
    g = torch.Generator().manual_seed(4)
    R = 8
    dense = torch.randn(3 * R * R, 5, generator=g, requires_grad=True)
    sparse = dense.detach().clone().requires_grad_()
    points = _points(20, g)
    triplane_lookup(dense, points, R).square().sum().backward()
    triplane_lookup(sparse, points, R, sparse=True).square().sum().backward()
    assert sparse.grad.layout == torch.sparse_coo
    assert sparse.grad._nnz() < 3 * R * R  # only touched rows
    assert torch.allclose(sparse.grad.to_dense(), dense.grad, atol=1e-6)


def test_concat_blocks_sum_to_sum():
    g = torch.Generator().manual_seed(5)
    R, C = 8, 4
    table = torch.randn(3 * R * R, C, generator=g)
    points = _points(50, g)
    concat = triplane_lookup(table, points, R, "concat")
    total = triplane_lookup(table, points, R, "sum")
    assert concat.shape == (points.shape[0], 3 * C) and total.shape == (points.shape[0], C)
    assert torch.allclose(concat.view(-1, 3, C).sum(1), total, atol=1e-6)


def test_layout_and_axes_known_values():
    R, C = 5, 2
    planes = torch.zeros(3, C, R, R)
    planes[0, :, 1, 3] = torch.tensor(
        [1.0, 2.0]
    )  # XY plane: y texel 1 (from Y), x texel 3 (from X)
    planes[2, :, 4, 0] = torch.tensor(
        [10.0, 20.0]
    )  # YZ plane: y texel 4 (from Z), x texel 0 (from Y)
    table = planes_to_table(planes)
    assert torch.equal(table[0 * R * R + 1 * R + 3], torch.tensor([1.0, 2.0]))
    assert torch.equal(table[2 * R * R + 4 * R + 0], torch.tensor([10.0, 20.0]))

    def coord(texel):  # texel centre -> canonical coordinate (align_corners=True)
        return -1 + 2 * texel / (R - 1)

    p = torch.tensor([[coord(3), coord(1), 0.3], [0.2, coord(0), coord(4)], [0.0, 1.0, 1.0]])
    out = triplane_lookup(table, p, R, "concat").view(3, 3, C)
    assert torch.allclose(out[0, 0], torch.tensor([1.0, 2.0]))  # XY read at (x=3, y=1)
    assert torch.allclose(out[1, 2], torch.tensor([10.0, 20.0]))  # YZ read at (x=0, y=4)
    assert torch.allclose(out[2], torch.zeros(3, C))  # Y=+1 is texel 4, not texel 0
    half = torch.tensor([[0.5 * (coord(3) + coord(4)), coord(1), 0.0]])  # halfway between x=3, 4
    assert torch.allclose(triplane_lookup(table, half, R), torch.tensor([[0.5, 1.0]]))


def test_conversions_round_trip():
    g = torch.Generator().manual_seed(6)
    planes = _random_planes(3, 7, g)
    table = planes_to_table(planes)
    assert table.shape == (3 * 49, 3) and table.is_contiguous()
    assert torch.equal(table_to_planes(table, 7), planes)
    assert torch.equal(planes_to_table(table_to_planes(table, 7)), table)
    view = table_to_planes(table, 7)
    view[1, 2, 3, 4] = 42.0  # a view: writes reach the table
    assert table[1 * 49 + 3 * 7 + 4, 2] == 42.0


def test_border_clamping_and_non_finite():
    g = torch.Generator().manual_seed(7)
    R = 6
    table = torch.randn(3 * R * R, 3, generator=g)
    far = torch.tensor([[1e6, -1e6, 3.0], [float("inf"), -float("inf"), 1.0]])
    edge = torch.tensor([[1.0, -1.0, 1.0], [1.0, -1.0, 1.0]])
    assert torch.allclose(triplane_lookup(table, far, R), triplane_lookup(table, edge, R))
    out = triplane_lookup(table, torch.tensor([[float("nan"), 0.0, 0.0], [0.0, 0.0, 0.0]]), R)
    assert out[0].isnan().all() and out[1].isfinite().all()


def test_empty_points():
    table = torch.randn(3 * 16, 4, requires_grad=True)
    for reduce, width in (("sum", 4), ("concat", 12)):
        out = triplane_lookup(table, torch.zeros(0, 3), 4, reduce)
        assert out.shape == (0, width)
        out.sum().backward()
        assert table.grad.abs().sum() == 0


def test_precision_and_autocast_keep_indices_exact():
    g = torch.Generator().manual_seed(8)
    R = 64
    table = torch.randn(3 * R * R, 4, generator=g)
    points = _points(500, g)
    ref = triplane_lookup(table, points, R)
    before = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("medium")
        assert torch.equal(triplane_lookup(table, points, R), ref)
    finally:
        torch.set_float32_matmul_precision(before)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert (triplane_lookup(table, points, R).float() - ref).abs().max() < 1e-5


@pytest.mark.parametrize(
    "table_shape, points_shape, R, reduce, match",
    [
        ((3 * 16, 4), (10, 3), 5, "sum", r"table must have shape \(3\*R\*R, C\) = \(75, C\)"),
        ((48,), (10, 3), 4, "sum", r"table must have shape"),
        ((48, 4), (10, 2), 4, "sum", r"points must have shape \(N, 3\), got \(10, 2\)"),
        ((48, 4), (10,), 4, "sum", r"points must have shape"),
        ((48, 4), (10, 3), 1, "sum", r"resolution must be an int >= 2"),
        ((48, 4), (10, 3), 4, "mean", r"reduce must be one of"),
    ],
)
def test_errors(table_shape, points_shape, R, reduce, match):
    with pytest.raises(ValueError, match=match):
        triplane_lookup(torch.zeros(table_shape), torch.zeros(points_shape), R, reduce)


def test_more_errors():
    with pytest.raises(ValueError, match="points must be a floating-point"):
        triplane_lookup(torch.zeros(48, 4), torch.zeros(5, 3, dtype=torch.int64), 4)
    with pytest.raises(ValueError, match="table must be a floating-point"):
        triplane_lookup(torch.zeros(48, 4, dtype=torch.int64), torch.zeros(5, 3), 4)
    with pytest.raises(ValueError, match="resolution must be an int"):
        triplane_lookup(torch.zeros(48, 4), torch.zeros(5, 3), 4.0)
    with pytest.raises(ValueError, match=r"planes must have shape \(3, C, R, R\)"):
        triplane_lookup_grid_sample(torch.zeros(2, 4, 5, 5), torch.zeros(5, 3))
    with pytest.raises(ValueError, match=r"planes must have shape"):
        planes_to_table(torch.zeros(3, 4, 5, 6))
    with pytest.raises(ValueError, match=r"= \(48, C\) for resolution R=4"):
        table_to_planes(torch.zeros(50, 4), 4)
    with pytest.raises(ValueError, match="reduce must be one of"):
        TriPlane(TriPlaneConfig(reduce="max"))
    with pytest.raises(ValueError, match="channels must be >= 1"):
        TriPlane(TriPlaneConfig(channels=0))


def test_triplane_module():
    config = TriPlaneConfig(channels=8, resolution=16, init_std=0.05, reduce="concat")
    a = config.setup(generator=torch.Generator().manual_seed(0))
    b = TriPlane(config, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a.table, b.table)  # reproducible initialisation
    assert a.table.shape == (3 * 16 * 16, 8) and isinstance(a.table, torch.nn.Parameter)
    assert abs(a.table.std().item() - 0.05) < 0.005
    assert a.out_features == 24 and a.planes().shape == (3, 8, 16, 16)
    points = torch.rand(30, 3) * 2 - 1
    out = a(points)
    assert out.shape == (30, 24)
    assert torch.equal(out, triplane_lookup(a.table, points, 16, "concat"))
    out.square().sum().backward()
    assert a.table.grad is not None and a.table.grad.abs().sum() > 0


def test_bench_smoke():
    from perennial.evaluate.bench import bench_triplane

    res = bench_triplane(N=500, C=4, R=8, repeats=1)
    for impl in ("embedding_bag", "grid_sample"):
        for phase in ("forward", "forward_backward", "forward_backward_points"):
            assert res[f"{impl}_{phase}_ms_1t"] > 0
    assert res["speedup_forward_1t"] > 0


def test_inference_mode_first_then_training():
    from perennial.avatar.field import triplane_ops as module

    module._index_constants.cache_clear()  # the cached constants get built under inference mode
    table = torch.randn(3 * 9 * 9, 4, requires_grad=True)
    with torch.inference_mode():
        triplane_lookup(table, torch.rand(5, 3), 9)
    points = torch.rand(5, 3, requires_grad=True)
    triplane_lookup(table, points, 9).sum().backward()
    assert table.grad is not None and points.grad is not None
