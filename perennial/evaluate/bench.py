"""Benchmarks behind ``perennial bench``: each prints the figures it measures.

Timings are medians over repeats within one run (these machines are shared,
so compare ratios measured together, not figures from different runs).
"""

from __future__ import annotations

import functools
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from perennial.numerics import numeric_path
from perennial.util import median_ms


def _bench_weights(avatar, rotvec, translation, caster, repeats: int = 3) -> dict:
    """Deformer cost of the 256 px bench frame's samples: hit ("ray") vs closest-point ("point") weights."""
    import torch

    from perennial.avatar.field.render import shell_samples
    from perennial.render.camera import Camera

    cam = Camera.look_at([0.0, -3.0, 0.9], [0.0, 0.0, 0.85], 256, 256, fov_deg=36.0)
    dfm = avatar.deformer
    with torch.no_grad():
        body = avatar.pose(rotvec, translation)
        caster.update(body.vertices)
        o, d = cam.rays()
        hit = caster.cast(o, d)
        m = hit.mask
        t, _ = shell_samples(hit.depth[m], 16, avatar.render_config.margin, jitter=False)
        pts = o[m][:, None] + t[..., None] * d[m][:, None]

        def ray():
            return dfm.canonical_rays(pts, dfm.hit_weights(hit.face[m], hit.bary[m]), body.transforms)

        return {
            "deform_samples": int(pts.shape[0] * pts.shape[1]),
            "deform_ray_weights_ms": median_ms(ray, repeats),
            "deform_point_weights_ms": median_ms(lambda: dfm.canonical_points(pts.reshape(-1, 3), body), repeats),
        }


def _bench_samples(avatar, capture_path: str, appearance: str, max_views: int = 24) -> dict:
    """Held-out PSNR (frame and person box) and median render ms per samples-per-ray setting."""
    import dataclasses

    from perennial.capture import read_capture
    from perennial.evaluate.protocol import evaluate_avatar

    cap = read_capture(capture_path)
    keep = avatar.render_config
    out = {}
    try:
        for samples, stop in ((16, keep.stop_transmittance), (8, keep.stop_transmittance),
                              (6, keep.stop_transmittance), (6, 0.0)):  # fmt: skip
            avatar.render_config = dataclasses.replace(keep, samples=samples, stop_transmittance=stop)
            r = evaluate_avatar(avatar, cap, appearance, lpips_nets=(), max_views=max_views, progress=False)
            tag = f"s{samples}" + ("_no_stop" if stop == 0 else "")
            out[f"heldout_{tag}_psnr"] = r["mean"]["psnr"]
            out[f"heldout_{tag}_psnr_box"] = r["mean"]["psnr_bbox"]
            out[f"heldout_{tag}_render_ms"] = r["render_ms_median"]
    finally:
        avatar.render_config = keep
    out["heldout_views"] = r["mean"]["count"]
    return out


def bench_body(repeats: int = 10) -> dict:
    """Body template: cold/warm construction, forward time at B=1 and B=64, posing a cached rest body."""
    import torch

    from perennial.body.anny import AnnyTemplate, _cache_file

    res: dict = {}
    if not _cache_file().exists():
        t0 = time.perf_counter()
        AnnyTemplate()
        res["cold_construction_s"] = time.perf_counter() - t0
    # warm construction in a fresh process, imports included and excluded
    code = (
        "import time;t0=time.perf_counter();import torch;t1=time.perf_counter();"
        "import anny.models.phenotype;from perennial._warp import warp;warp();"
        "from perennial.body.anny import AnnyTemplate;t2=time.perf_counter();"
        "AnnyTemplate();t3=time.perf_counter();print(t1-t0,t2-t1,t3-t2)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    t_torch, t_imports, construct = map(float, out.stdout.split())
    res["import_torch_s"] = t_torch
    res["import_anny_and_warp_s"] = t_imports
    res["warm_construction_s"] = construct  # from the cached float32 file, imports done
    template = AnnyTemplate()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for B in (1, 64):
            rv = torch.randn(B, template.num_bones, 3, generator=g) * 0.2
            tr = torch.zeros(B, 3)
            res[f"forward_B{B}_ms"] = median_ms(lambda rv=rv, tr=tr: template(rv, tr), repeats)
        # what the field avatar pays per frame: FK + skinning of a cached rest body
        rest = template.rest_state()
        rv, tr = torch.randn(1, template.num_bones, 3, generator=g) * 0.2, torch.zeros(1, 3)
        res["pose_rest_B1_ms"] = median_ms(lambda: template.pose_rest(rv, tr, rest), repeats)
        res["pose_rest_B1_no_vertices_ms"] = median_ms(lambda: template.pose_rest(rv, tr, rest, vertices=False), repeats)
    return res


def bench_raycast(sizes=(256, 512), repeats: int = 10) -> dict:
    """Ray casting the posed body: warp BVH vs the torch z-buffer twin, median ms."""
    import torch

    from perennial.body.anny import load_template

    template = load_template()
    rv, tr = template.rest_pose(1)
    tr[:, 2] = 0.9
    with torch.no_grad():
        v = template(rv, tr).vertices[0]
    return bench_raycast_mesh(v, template.faces, sizes=sizes, repeats=repeats)


def bench_raycast_mesh(
    vertices, faces, sizes: tuple[int, ...] = (256, 512), repeats: int = 10
) -> dict[str, dict[int, float]]:
    """Median wall time of one frame of each ray-casting backend at each image size.

    The camera frames the mesh (:func:`framing_camera`). Warp is timed as a
    per-frame refit plus the cast (its BVH is built once, its rays precomputed,
    as a renderer with fixed cameras would); torch as a full rasterisation. One
    untimed warm-up call per case absorbs kernel compilation; on a machine with
    CUDA every call ends with a synchronisation.

    Args:
        vertices: (V, 3) world metres.
        faces: (F, 3) integer vertex indices.
        sizes: square image sizes in pixels.
        repeats: timed calls per case.

    Returns:
        ``{"warp": {size: ms}, "torch": {size: ms}}`` medians in milliseconds.
    """
    import torch

    from perennial.render.hit import check_mesh
    from perennial.render.rasterize import rasterize_torch
    from perennial.render.raycast import WarpMeshCaster

    check_mesh(vertices, faces)
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")

    def synced(fn: Callable[[], object]) -> Callable[[], None]:
        def run() -> None:
            fn()
            if torch.cuda.is_available():
                torch.cuda.synchronize()

        return run

    caster = WarpMeshCaster(vertices, faces)
    out: dict[str, dict[int, float]] = {"warp": {}, "torch": {}}
    for size in sizes:
        cam = framing_camera(vertices, int(size)).to(vertices.device)
        origins, dirs = cam.rays()
        warp_frame = functools.partial(caster, vertices, origins, dirs)
        torch_frame = functools.partial(rasterize_torch, vertices, faces, cam)
        out["warp"][int(size)] = median_ms(synced(warp_frame), repeats)
        out["torch"][int(size)] = median_ms(synced(torch_frame), repeats)
    return out


def framing_camera(vertices, size: int, fov_deg: float = 40.0):
    """A square camera looking at the mesh's bounding box from -Y (the front of Anny).

    Args:
        vertices: (V, 3) world metres.
        size: image width and height in pixels.
        fov_deg: vertical field of view in degrees.

    Returns:
        A :class:`~perennial.render.camera.Camera` whose view holds the bounding
        sphere of the mesh.
    """
    import torch

    from perennial.render.camera import Camera

    v = vertices.detach().float().cpu()
    lo, hi = v.amin(0), v.amax(0)
    centre = (lo + hi) / 2
    radius = float((hi - lo).norm()) / 2
    dist = radius / math.sin(math.radians(fov_deg) / 2) * 1.05
    eye = centre + torch.tensor([0.0, -dist, 0.0])
    return Camera.look_at(eye, centre, size, size, fov_deg=fov_deg)


def bench_synth(cameras: int = 8, frames: int = 30, size: int = 256) -> dict:
    """Wall time of ``perennial synth OUT --cameras 8 --frames 30 --size 256`` (warm cache)."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "perennial.cli", "synth", str(Path(tmp) / "cap"),
               "--cameras", str(cameras), "--frames", str(frames), "--size", str(size), "--quiet"]  # fmt: skip
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"})
        return {"synth_wall_s": time.perf_counter() - t0, "views": cameras * frames, "size": size}


def default_bvh_samples() -> list[str]:
    """The CMU sample clips shipped beside the repository (``shared/data/motion/cmu``)."""
    here = Path(__file__).resolve()
    for root in [Path.cwd(), *here.parents]:
        d = root.parent / "shared" / "data" / "motion" / "cmu"
        if d.is_dir():
            return sorted(str(p) for p in d.glob("*.bvh"))
    return []


def bench_motion(paths: list[str] | None = None, strip: str | None = None) -> dict:
    """Retargeting figures per clip (joint error, floor, flips) and bank import speed."""
    from perennial.motion.evaluate import bench_motion as _bench

    paths = paths or default_bvh_samples()
    if not paths:
        raise FileNotFoundError("no BVH files given (--bvh) and shared/data/motion/cmu not found")
    res = _bench(paths, strip=strip)
    flat: dict = {}
    for c in res["clips"]:
        name = Path(c.get("source", c.get("path", "clip"))).stem
        for k, v in c.items():
            if isinstance(v, (int, float)):
                flat[f"{name}.{k}"] = v
    for k, v in res["import"].items():
        if isinstance(v, (int, float)):
            flat[f"import.{k}"] = v
    if res.get("strip"):
        flat["strip"] = res["strip"]
    return flat


def bench_speed(avatar_path: str | None = None, sizes=(256, 512), repeats: int = 10, train_steps: int = 30,
                capture_path: str | None = None) -> dict:  # fmt: skip
    """Field avatar: median render time of a full-body frame per size, and training steps/s.

    Uses the avatar at ``avatar_path`` (its first appearance, its render settings) or a
    fresh one. The cost depends on the weights through early ray termination: a fresh
    avatar's faint density lets no ray stop early, so time a trained avatar for the
    figure a user sees. The body stands in a walking pose and fills the frame's height,
    seen from the front. With ``capture_path`` (the avatar's capture), also the held-out
    quality and render time at 16, 8 and 6 samples per ray, and 6 without early termination.
    """
    import torch

    from perennial.avatar.field.model import FieldAvatar
    from perennial.avatar.field.render import render_image
    from perennial.body.anny import load_template
    from perennial.motion.procedural import procedural_motion
    from perennial.render.camera import Camera
    from perennial.render.raycast import WarpMeshCaster

    template = load_template()
    if avatar_path:
        from perennial.avatar.field_io import load_field_avatar
        from perennial.avatar.store import AvatarStore

        avatar, _, _ = load_field_avatar(AvatarStore(avatar_path), template=template)
    else:
        avatar = FieldAvatar(template, {}, ["a"])
    name = avatar.appearance_names[0]
    rv, off = procedural_motion("walk", 8)
    rotvec, translation = rv[0], off[0] + torch.tensor([0.0, 0.0, 0.87])  # widest stride
    caster = WarpMeshCaster(avatar.deformer.rest_vertices, avatar.deformer.faces)
    cfg = avatar.render_config
    res: dict = {
        "threads": torch.get_num_threads(),
        "avatar": str(avatar_path) if avatar_path else "fresh (untrained)",
        "numeric_path": numeric_path(avatar.config.autocast),
        "samples_per_ray": cfg.samples,
        "stop_transmittance": cfg.stop_transmittance,
    }
    for size in sizes:
        cam = Camera.look_at([0.0, -3.0, 0.9], [0.0, 0.0, 0.85], size, size, fov_deg=36.0)
        out = render_image(avatar, cam, rotvec, translation, name, caster=caster)
        res[f"render_{size}_ms"] = median_ms(lambda cam=cam: render_image(avatar, cam, rotvec, translation, name, caster=caster), repeats)
        res[f"render_{size}_fps"] = 1000.0 / res[f"render_{size}_ms"]
        res[f"render_{size}_body_pixels"] = int(out.hit.sum())
    res.update(_bench_weights(avatar, rotvec, translation, caster, repeats=3))
    if capture_path:
        res.update(_bench_samples(avatar, capture_path, name))
    # training: the same step as `perennial create` on a small synthetic capture
    import tempfile

    from perennial.capture.synth import SynthConfig, synthesize
    from perennial.learn.methods import fit, preset

    with tempfile.TemporaryDirectory() as tmp:
        cap = synthesize(Path(tmp) / "cap", SynthConfig(cameras=4, frames=2, size=256, supersample=1), progress=False)
        fresh = FieldAvatar(template, cap.body_info["phenotype"], [cap.appearance])
        fit(fresh, cap, preset("field", "create", steps=5, checkpoint_every=0))  # warm-up
        cfg = preset("field", "create", steps=train_steps, checkpoint_every=0)
        t = fit(fresh, cap, cfg)
    res["train_steps_per_s"] = t.steps_per_s
    res["train_rays_per_step"] = cfg.rays_per_step
    return res


def bench_triplane(
    N: int = 200_000, C: int = 16, R: int = 128, repeats: int = 10, reduce: str = "sum"
) -> dict:
    """Time the embedding-bag lookup against the grid_sample twin on CPU.

    Keys ``{impl}_{phase}_ms_{T}t`` for impl in ``embedding_bag``, ``grid_sample``;
    phase ``forward`` (no grad), ``forward_backward`` (gradient to the table) and
    ``forward_backward_points`` (to the table and the points); T threads = 1 and the
    thread count on entry; ``speedup_{phase}_{T}t`` = grid_sample / embedding_bag.
    Wall-clock medians over ``repeats`` in milliseconds (a busy machine shifts them:
    compare the ratios of one run). The field avatar's own setting is about
    ``N=181_000, C=8, R=64, reduce="concat"``.
    """
    import torch

    from perennial.avatar.field.triplane_ops import (
        planes_to_table,
        triplane_lookup,
        triplane_lookup_grid_sample,
    )

    if reduce not in ("sum", "concat"):
        raise ValueError(f"reduce must be 'sum' or 'concat', got {reduce!r}")
    g = torch.Generator().manual_seed(0)
    planes = (torch.randn(3, C, R, R, generator=g) * 0.1).requires_grad_()
    table = planes_to_table(planes.detach()).requires_grad_()
    points = torch.rand(N, 3, generator=g) * 2.2 - 1.1  # ~25% of points outside on some axis
    points_g = points.clone().requires_grad_()
    impls = {
        "embedding_bag": lambda p: triplane_lookup(table, p, R, reduce),
        "grid_sample": lambda p: triplane_lookup_grid_sample(planes, p, reduce),
    }

    def step(lookup, p):
        def run():
            table.grad = planes.grad = points_g.grad = None
            lookup(p).square().sum().backward()

        return run

    res: dict = {"N": N, "C": C, "R": R, "reduce": reduce}
    default_threads = torch.get_num_threads()
    try:
        for threads in sorted({1, default_threads}):
            torch.set_num_threads(threads)
            for impl, lookup in impls.items():
                with torch.no_grad():
                    fwd = median_ms(lambda lookup=lookup: lookup(points), repeats)
                res[f"{impl}_forward_ms_{threads}t"] = fwd
                res[f"{impl}_forward_backward_ms_{threads}t"] = median_ms(
                    step(lookup, points), repeats
                )
                res[f"{impl}_forward_backward_points_ms_{threads}t"] = median_ms(
                    step(lookup, points_g), repeats
                )
            for phase in ("forward", "forward_backward", "forward_backward_points"):
                res[f"speedup_{phase}_{threads}t"] = (
                    res[f"grid_sample_{phase}_ms_{threads}t"]
                    / res[f"embedding_bag_{phase}_ms_{threads}t"]
                )
    finally:
        torch.set_num_threads(default_threads)
    return res
