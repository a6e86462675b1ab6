"""Tri-plane feature lookup, functional: the kernel behind :class:`~perennial.avatar.field.triplane.TriPlane`.

A tri-plane holds three axis-aligned feature planes over the canonical cube
``[-1, 1]^3``. A point reads each plane bilinearly at its projection and the three
features are summed (``reduce="sum"``, (N, C)) or concatenated
(``reduce="concat"``, (N, 3C), order XY | XZ | YZ).

Two storages of the same numbers:

* planes ``(3, C, R, R)``, the layout ``F.grid_sample`` reads: plane ``p`` is an
  image with height ``R`` (rows, ``y``) and width ``R`` (columns, ``x``).
* table ``(3*R*R, C)``, the layout ``F.embedding_bag`` reads:
  ``table[p*R*R + y*R + x, c] == planes[p, c, y, x]``.

Which point coordinate is the plane's ``x`` (width, ``grid[..., 0]`` in
``grid_sample``) and ``y`` (height, ``grid[..., 1]``):

====  =====  ==============  ==============
 p    plane  x (width)       y (height)
====  =====  ==============  ==============
 0    XY     ``points[:, 0]``  ``points[:, 1]``
 1    XZ     ``points[:, 0]``  ``points[:, 2]``
 2    YZ     ``points[:, 1]``  ``points[:, 2]``
====  =====  ==============  ==============

Sampling follows ``grid_sample(mode="bilinear", align_corners=True,
padding_mode="border")``: coordinate ``-1`` is the centre of texel 0, ``+1`` the
centre of texel ``R-1``, texel position ``u = (coord + 1) / 2 * (R - 1)``, and
points outside ``[-1, 1]`` are clamped to the border. NaN points give NaN features.

The fast path gathers the 4 corners of the 3 planes as one bag of 12 table rows
per point with ``F.embedding_bag(per_sample_weights=bilinear weights)``. Its
backward is written by hand: PyTorch's CPU ``embedding_bag`` backward sorts all
``12 N`` indices and was slower than ``grid_sample``'s (~430 vs ~370 ms at N=200k,
C=16, R=128, 1 thread); ours sorts the ``3 N`` (plane, point) entries by texel cell
and reduces the gradient with ``embedding_bag`` itself. The gradient w.r.t. the
points is a few more bags with the derivative weights.

Measured with ``perennial bench triplane`` (:func:`perennial.evaluate.bench.bench_triplane`)
on the shared 2-core CPU, 1 thread, speed-up over ``grid_sample``: ``sum``, N=200k,
C=16, R=128: forward ~2.5-3.5x, forward + backward ~3x (~2x with the points'
gradient); ``concat``, N=181k, C=8, R=64 (the field's setting): forward ~1.2-1.4x,
forward + backward ~1.1x, ~0.8x with the points' gradient. The bag itself is cheap
(~6 ms at N=181k); eager index and weight arithmetic on (N, 12) arrays costs as much
again, and bags of 4 (concat) cost ~3x bags of 12 per entry. grid_sample gains more
from small C than the bags do.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

REDUCTIONS = ("sum", "concat")
PLANE_AXES = ((0, 1), (0, 2), (1, 2))
"""(x axis, y axis) of the point coordinates read by planes XY, XZ, YZ."""


def _check_reduce(reduce: str) -> None:
    if reduce not in REDUCTIONS:
        raise ValueError(f"reduce must be one of {REDUCTIONS}, got {reduce!r}")


def _check_resolution(resolution: int) -> None:
    if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 2:
        raise ValueError(f"resolution must be an int >= 2, got {resolution!r}")


def _check_points(points: Tensor) -> None:
    if not isinstance(points, Tensor) or points.dim() != 2 or points.shape[1] != 3:
        shape = tuple(points.shape) if isinstance(points, Tensor) else type(points).__name__
        raise ValueError(f"points must have shape (N, 3), got {shape}")
    if not points.is_floating_point():
        raise ValueError(f"points must be a floating-point tensor, got {points.dtype}")


def _check_table(table: Tensor, resolution: int) -> None:
    rows = 3 * resolution * resolution
    if not isinstance(table, Tensor) or table.dim() != 2 or table.shape[0] != rows:
        shape = tuple(table.shape) if isinstance(table, Tensor) else type(table).__name__
        raise ValueError(
            f"table must have shape (3*R*R, C) = ({rows}, C) for resolution R={resolution}, "
            f"got {shape}"
        )
    if not table.is_floating_point():
        raise ValueError(f"table must be a floating-point tensor, got {table.dtype}")


def _check_planes(planes: Tensor) -> None:
    if (
        not isinstance(planes, Tensor)
        or planes.dim() != 4
        or planes.shape[0] != 3
        or planes.shape[2] != planes.shape[3]
        or planes.shape[2] < 2
    ):
        shape = tuple(planes.shape) if isinstance(planes, Tensor) else type(planes).__name__
        raise ValueError(f"planes must have shape (3, C, R, R) with R >= 2, got {shape}")


def planes_to_table(planes: Tensor) -> Tensor:
    """Planes (grid_sample layout) to a table (embedding_bag layout).

    Args:
        planes: (3, C, R, R) feature planes XY, XZ, YZ; ``planes[p, c, y, x]``.

    Returns:
        (3*R*R, C) contiguous copy with ``table[p*R*R + y*R + x, c] = planes[p, c, y, x]``.
    """
    _check_planes(planes)
    _, C, R, _ = planes.shape
    return planes.permute(0, 2, 3, 1).reshape(3 * R * R, C).contiguous()


def table_to_planes(table: Tensor, resolution: int) -> Tensor:
    """A table (embedding_bag layout) seen as planes (grid_sample layout).

    Args:
        table: (3*R*R, C) features, row ``p*R*R + y*R + x``.
        resolution: R.

    Returns:
        (3, C, R, R) view of ``table`` (shares its memory and its autograd graph;
        not contiguous): ``planes[p, c, y, x] = table[p*R*R + y*R + x, c]``.
    """
    _check_resolution(resolution)
    _check_table(table, resolution)
    R = resolution
    return table.view(3, R, R, table.shape[1]).permute(0, 3, 1, 2)


@functools.lru_cache(maxsize=64)
def _index_constants(resolution: int, device: torch.device, dtype: torch.dtype):
    """Constants turning per-axis texel corners into 12 table rows and weights per point.

    Column ``j = 4*p + k`` is corner ``k`` of plane ``p`` with axes ``(a, b)``;
    ``k = 0..3`` is (y0, x0), (y0, x1), (y1, x0), (y1, x1), row offset 0, 1, R, R+1.
    With ``gf = [1-f | f | -(1-f) | -f | 0]`` (N, 13) of the fractions f (N, 3):
    ``weight[n, j] = gf[n, pick_x[j]] * gf[n, pick_y[j]]`` and
    ``d weight[n, j] / d f[n, a] = gf[n, pick_d[a, j]]``.

    Returns:
        M: (3, 12) with ``i0 @ M + offset`` = table row of corner j (i0: (N, 3) floor texels).
        offset: (12,) ``p*R*R + corner offset``.
        pick_x: (12,) column of gf holding corner j's x-weight.
        pick_y: (12,) column of gf holding corner j's y-weight.
        pick_d: (3, 12) column of gf holding the derivative of corner j's weight along
            axis a (the zero column 12 where plane j does not use axis a).
        pick_role: (2, 12) the same along the x axis (row 0) and the y axis (row 1) of
            corner j's own plane.
    """
    with torch.inference_mode(False):  # cached: must not become inference tensors
        return _build_index_constants(resolution, device, dtype)


def _build_index_constants(resolution: int, device: torch.device, dtype: torch.dtype):
    R = resolution
    M = torch.zeros(3, 12, dtype=dtype)
    offset = torch.zeros(12, dtype=dtype)
    pick_x = torch.zeros(12, dtype=torch.int64)
    pick_y = torch.zeros(12, dtype=torch.int64)
    pick_d = torch.full((3, 12), 12, dtype=torch.int64)
    pick_role = torch.zeros(2, 12, dtype=torch.int64)
    for p, (a, b) in enumerate(PLANE_AXES):
        for k in range(4):
            j, dx, dy = 4 * p + k, k & 1, k >> 1
            M[a, j], M[b, j] = 1.0, float(R)
            offset[j] = p * R * R + dy * R + dx
            pick_x[j], pick_y[j] = a + 3 * dx, b + 3 * dy
            # d/dfa [(fa or 1-fa) * y-weight] = +-y-weight; column +6 holds the negated one
            pick_d[a, j] = b + 3 * dy + (0 if dx else 6)
            pick_d[b, j] = a + 3 * dx + (0 if dy else 6)
            pick_role[0, j], pick_role[1, j] = pick_d[a, j], pick_d[b, j]
    return tuple(t.to(device) for t in (M, offset, pick_x, pick_y, pick_d, pick_role))


def _corners(points: Tensor, resolution: int) -> tuple[Tensor, Tensor]:
    """Table rows of the 12 corners (3 planes x 4) of each point, and its cell fractions.

    Args:
        points: (N, 3) in [-1, 1]^3 (outside is clamped to the border).
        resolution: R.

    Returns:
        idx: (N, 12) int32 table rows, column ``4*p + k`` (see ``_index_constants``).
        f: (N, 3) position inside the texel cell along each axis, in [0, 1],
            differentiable w.r.t. ``points`` (zero derivative where clamped); float32
            (float64 for float64 points or huge R).
    """
    R = resolution
    big = 3 * R * R + R >= 2**24  # rows no longer exact in float32
    exact = torch.float64 if points.dtype == torch.float64 or big else torch.float32
    with torch.autocast(points.device.type, enabled=False):
        # u[n, a] = texel position along axis a, as grid_sample computes it
        u = ((points.to(exact) + 1) / 2 * (R - 1)).clamp(0, R - 1)
        i0 = u.detach().floor().clamp_(0, R - 2)  # NaN stays NaN (-> NaN weights)
        M, offset = _index_constants(R, points.device, exact)[:2]
        # idx[n, j] = sum_a i0[n, a] * M[a, j] + offset[j]: integers below 2^24, so exact
        # in float32 whatever the summation order; one GEMM beats broadcasting on (N, 3)
        idx = torch.addmm(offset, i0.nan_to_num(0.0), M).int()
    return idx, u - i0


def _weight_columns(f: Tensor) -> Tensor:
    """(N, 13) ``[1-f | f | -(1-f) | -f | 0]`` of the (N, 3) fractions."""
    g = 1 - f
    return torch.cat([g, f, -g, -f, f.new_zeros(f.shape[0], 1)], dim=1)


def _table_grad(grad_out: Tensor, weights: Tensor, idx: Tensor, R: int, concat: bool) -> Tensor:
    """Gradient of the lookup w.r.t. the table, (3*R*R, C).

    ``grad[row] = sum over (n, j) with idx[n, j] == row of weights[n, j] * g[n, plane(j)]``.
    The 3N (plane, point) entries are sorted by their (plane, y0, x0) cell; for each
    corner k one ``embedding_bag`` over the sorted entries sums, per cell, the output
    gradients weighted by corner k's weights; corner k's sums are added to the rows
    shifted by its offset (0, 1, R or R+1).
    """
    N, RR = idx.shape[0], R * R
    if N == 0:
        return grad_out.new_zeros(3 * RR, grad_out.shape[1] // (3 if concat else 1))
    # entry e = p*N + n; key[e] = p*R*R + y0*R + x0 = table row of corner k=0
    key = idx[:, 0::4].T.reshape(-1)
    order = torch.argsort(key)  # (3N,) int32 keys: about twice as fast to sort as int64
    counts = torch.bincount(key, minlength=3 * RR)
    starts = counts.cumsum(0) - counts  # (3RR,) first sorted position of each (plane, cell)
    point = order % N
    if concat:  # plane p's output gradient for point n is row 3n + p of grad_out as (3N, C)
        source, rows = grad_out.view(N * 3, -1), point * 3 + order // N
    else:
        source, rows = grad_out, point
    # w_sorted[k, s] = weights[n, 4p + k] for the entry e = p*N + n sorted to position s
    w_sorted = weights.view(N, 3, 4).permute(2, 1, 0).reshape(4, 3 * N).index_select(1, order)
    grad = torch.zeros(3, RR, source.shape[1], dtype=source.dtype, device=source.device)
    for k, shift in enumerate((0, 1, R, R + 1)):
        sums = F.embedding_bag(rows, source, starts, mode="sum", per_sample_weights=w_sorted[k])
        # cells never have x0 = R-1 or y0 = R-1, so a flat shift never wraps a row
        grad[:, shift:] += sums.view(3, RR, -1)[:, : RR - shift]
    return grad.view(3 * RR, -1)


def _to_sparse(grad: Tensor, idx: Tensor) -> Tensor:
    """Rows of ``grad`` touched by ``idx`` as a coalesced sparse COO tensor."""
    touched = torch.zeros(grad.shape[0], dtype=torch.bool, device=grad.device)
    touched[idx.reshape(-1)] = True
    rows = touched.nonzero().view(-1)
    return torch.sparse_coo_tensor(
        rows[None], grad[rows], grad.shape, is_coalesced=True, check_invariants=False
    )


def _rowdot(a: Tensor, b: Tensor) -> Tensor:
    """(M,) row-wise dot products of two (M, C) matrices (a batched matmul: faster on CPU
    than ``(a * b).sum(1)`` for small C)."""
    return torch.bmm(a.unsqueeze(1), b.unsqueeze(2)).view(-1)


def _fraction_grad(
    grad_out: Tensor, table: Tensor, f: Tensor, idx: Tensor, R: int, concat: bool
) -> Tensor:
    """Gradient of the lookup w.r.t. the cell fractions ``f``, (N, 3).

    ``grad_f[n, a] = sum_j sum_c (d w[n, j] / d f[n, a]) * table[idx[n, j], c] * g[n, plane(j), c]``:
    bags with the derivative weights, dotted with the output gradient. Sum: one bag of
    12 per point and axis. Concat: one bag of 4 per (point, plane) and plane axis
    (x, y), then each plane's two results go to the axes it reads.
    """
    N = idx.shape[0]
    _, _, _, _, pick_d, pick_role = _index_constants(R, f.device, f.dtype)
    gf = _weight_columns(f)
    if not concat:
        grad_f = torch.empty(N, 3, dtype=f.dtype, device=f.device)
        for a in range(3):
            dw = gf.index_select(1, pick_d[a]).to(table.dtype)  # (N, 12)
            d = F.embedding_bag(idx, table, per_sample_weights=dw, mode="sum")  # (N, C)
            grad_f[:, a] = _rowdot(d, grad_out)
        return grad_f
    g = grad_out.view(N * 3, -1)
    role = []  # role[r][n, p]: derivative along plane p's x (r=0) or y (r=1) axis
    for r in range(2):
        dw = gf.index_select(1, pick_role[r]).to(table.dtype).view(N * 3, 4)
        d = F.embedding_bag(idx.view(N * 3, 4), table, per_sample_weights=dw, mode="sum")
        role.append(_rowdot(d, g).view(N, 3).to(f.dtype))
    rx, ry = role
    # X is x of XY and XZ; Y is y of XY and x of YZ; Z is y of XZ and YZ
    return torch.stack([rx[:, 0] + rx[:, 1], ry[:, 0] + rx[:, 2], ry[:, 1] + ry[:, 2]], 1)


class _BilinearBag(torch.autograd.Function):
    """out[n] = sum_j w[n, j] * table[idx[n, j]] per point (sum) or per plane (concat).

    Inputs: table (3RR, C), f (N, 3) cell fractions, idx (N, 12); the bilinear weights
    ``w`` (N, 12) are made from ``f`` here, so that the gradient w.r.t. ``f`` needs
    a few more bags (weights d w / d f) instead of gathering 12N rows.
    """

    @staticmethod
    def forward(ctx, table, f, idx, resolution, concat, sparse):
        N, C = idx.shape[0], table.shape[1]
        # a detached table makes embedding_bag skip the bookkeeping of its own backward
        table = table.detach()
        pick_x, pick_y = _index_constants(resolution, f.device, f.dtype)[2:4]
        gf = torch.cat([1 - f, f], dim=1)  # the first 6 columns of _weight_columns(f)
        # weights[n, j] = gf[n, pick_x[j]] * gf[n, pick_y[j]]
        weights = gf.index_select(1, pick_x).mul_(gf.index_select(1, pick_y)).to(table.dtype)
        ctx.resolution, ctx.concat, ctx.sparse = resolution, concat, sparse
        ctx.save_for_backward(table, f, weights, idx)
        if concat:  # one bag of 4 corners per (point, plane)
            out = F.embedding_bag(
                idx.view(N * 3, 4), table, per_sample_weights=weights.view(N * 3, 4), mode="sum"
            )
            return out.view(N, 3 * C)
        return F.embedding_bag(idx, table, per_sample_weights=weights, mode="sum")

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        table, f, weights, idx = ctx.saved_tensors
        grad_out = grad_out.contiguous()
        grad_table = grad_f = None
        if ctx.needs_input_grad[0]:
            grad_table = _table_grad(grad_out, weights, idx, ctx.resolution, ctx.concat)
            if ctx.sparse:
                grad_table = _to_sparse(grad_table, idx)
        if ctx.needs_input_grad[1]:
            grad_f = _fraction_grad(grad_out, table, f, idx, ctx.resolution, ctx.concat)
        return grad_table, grad_f, None, None, None, None


def triplane_lookup(
    table: Tensor,
    points: Tensor,
    resolution: int,
    reduce: str = "sum",
    sparse: bool = False,
) -> Tensor:
    """Bilinear tri-plane features of points, read from a table with ``embedding_bag``.

    Same numbers as :func:`triplane_lookup_grid_sample` on ``table_to_planes(table)``.

    Args:
        table: (3*R*R, C) features, row ``p*R*R + y*R + x`` (see module docstring).
        points: (N, 3) canonical coordinates; ``[-1, 1]^3`` spans the planes, points
            outside are clamped to the border.
        resolution: R, texels per plane side (>= 2).
        reduce: ``"sum"`` -> (N, C); ``"concat"`` -> (N, 3C) ordered XY | XZ | YZ.
        sparse: give ``table`` a sparse COO gradient (rows touched by the points),
            for ``torch.optim.SparseAdam`` or SGD; dense otherwise.

    Returns:
        (N, C) or (N, 3C) features in ``table.dtype``.

    Gradients flow to ``table`` and to ``points`` (the latter computed only when
    ``points.requires_grad``, at about the cost of the forward): the bilinear derivative,
    zero along an axis where the point is outside ``[-1, 1]`` (clamped), as
    ``grid_sample``'s, except exactly on ``-1`` or ``+1`` where grid_sample gives zero
    and this gives the derivative from inside. No double backward.
    """
    _check_resolution(resolution)
    _check_table(table, resolution)
    _check_points(points)
    _check_reduce(reduce)
    if points.device != table.device:
        raise ValueError(f"points on {points.device} but table on {table.device}")
    idx, f = _corners(points, resolution)
    return _BilinearBag.apply(table, f, idx, resolution, reduce == "concat", bool(sparse))


def triplane_lookup_grid_sample(planes: Tensor, points: Tensor, reduce: str = "sum") -> Tensor:
    """Reference twin of :func:`triplane_lookup` with ``F.grid_sample``.

    Args:
        planes: (3, C, R, R) planes XY, XZ, YZ, ``planes[p, c, y, x]``.
        points: (N, 3) canonical coordinates (see :func:`triplane_lookup`).
        reduce: ``"sum"`` -> (N, C); ``"concat"`` -> (N, 3C) ordered XY | XZ | YZ.

    Returns:
        (N, C) or (N, 3C) features; differentiable w.r.t. ``planes`` and ``points``.
    """
    _check_planes(planes)
    _check_points(points)
    _check_reduce(reduce)
    N, C = points.shape[0], planes.shape[1]
    axes = torch.tensor(PLANE_AXES, device=points.device)  # (3, 2)
    # grid[p, 0, n] = (points[n, x-axis of p], points[n, y-axis of p]); grid[..., 0] -> width
    grid = points.to(planes.dtype)[:, axes].permute(1, 0, 2).unsqueeze(1)  # (3, 1, N, 2)
    out = F.grid_sample(planes, grid, mode="bilinear", padding_mode="border", align_corners=True)
    out = out[:, :, 0]  # (3, C, N)
    if reduce == "sum":
        return out.sum(0).T
    return out.permute(2, 0, 1).reshape(N, 3 * C)


def corner_weight_norms(points: Tensor, resolution: int) -> Tensor:
    """Sum of the squared bilinear corner weights of each point on each plane, (N, 3).

    For plane ``p`` over axes ``(a, b)`` (:data:`PLANE_AXES`) with cell fractions
    ``f_a, f_b``: ``((1 - f_a)^2 + f_a^2) ((1 - f_b)^2 + f_b^2)``, in [1/4, 1]. It is
    the squared norm of the lookup's derivative w.r.t. the four table rows a point
    reads, per output channel (used by the Fisher weights of :mod:`perennial.learn.fisher`).
    """
    with torch.no_grad():
        _, f = _corners(points, resolution)
        s = (1 - f).square() + f.square()  # (N, 3) per axis
        return torch.stack([s[:, a] * s[:, b] for a, b in PLANE_AXES], dim=1)
