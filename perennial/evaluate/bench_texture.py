"""Speed of the neural-texture avatar (``perennial.avatar.texture``): whole frames, stages, choices.

The frame is the one of ``bench_speed`` for the field avatar: the body in the widest
stride of the procedural walk, seen from the front at 3 m (fov 36 deg), filling the
frame's height. Timings are medians over repeats; variants compared in one function
are interleaved (this machine is shared: compare ratios measured together).

Run ``python -m perennial.evaluate.bench_texture`` to print every figure as JSON.
"""

from __future__ import annotations

import statistics
import time

__all__ = ["bench_attention_threads", "bench_generator_widths", "bench_texture_lookup", "bench_texture_raster",
           "bench_texture_speed", "bench_frame"]  # fmt: skip


def bench_frame(size: int, frame: int = 0):
    """(camera, rotvec (J, 3), translation (3,)) of the benchmark frame at ``size`` x ``size``
    (``frame`` of the 8-frame walk; 0 is its widest stride)."""
    import torch

    from perennial.motion.procedural import procedural_motion
    from perennial.render.camera import Camera

    rv, off = procedural_motion("walk", 8)
    cam = Camera.look_at([0.0, -3.0, 0.9], [0.0, 0.0, 0.85], size, size, fov_deg=36.0)
    return cam, rv[frame], off[frame] + torch.tensor([0.0, 0.0, 0.87])


def _interleaved(fns: dict, repeats: int) -> dict[str, float]:
    """Median ms of each callable, called in turn ``repeats`` times after one warm-up each."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[k].append((time.perf_counter() - t0) * 1000.0)
    return {k: statistics.median(v) for k, v in times.items()}


def bench_texture_speed(avatar=None, sizes=(256, 512), repeats: int = 10, modes=None, config=None) -> dict:
    """Median time of a whole ``render_image`` frame and of its stages, per size and numeric path.

    An avatar with temporal attention renders the frame as the next frame of a clip: it gets
    the previous walk frame's :class:`~perennial.avatar.texture.dual.ClipState` without its
    map, so the previous low-res map is rasterised as in a causal render of a moving body.

    Args:
        avatar: a :class:`~perennial.avatar.texture.model.TextureAvatar` (its first appearance);
            default: an untrained one on the Anny template with ``config`` (default: the default config).
        sizes: square image sizes, pixels.
        repeats: frames timed per size and path.
        modes: autocast modes of the generator to time (default: the avatar's own, and for the
            default avatar both ``"off"`` and ``"on"`` so the faster can be seen).

    Returns:
        dict: ``numeric_path`` (of the avatar's own mode), ``fastest``, ``shared_MB``,
        ``appearance_MB``, and per mode ``m`` and size ``s``: ``{m}_{s}_ms``, ``{m}_{s}_fps``,
        ``{m}_{s}_{stage}_ms`` (median per stage; the stages' medians need not add up to the
        frame's), ``{m}_{s}_window`` (generator window w x h) and ``{m}_{s}_covered`` (pixels).
    """
    import torch

    from perennial.avatar.texture.dual import ClipState
    from perennial.avatar.texture.model import STAGES, TextureAvatar
    from perennial.body.anny import load_template
    from perennial.numerics import numeric_path

    own = avatar is None
    if own:
        torch.manual_seed(0)
        avatar = TextureAvatar(load_template(), {}, ["a"], config)
    avatar.eval()
    name = avatar.appearance_names[0]
    gen = avatar.generator
    keep = gen.autocast_mode
    modes = tuple(modes or (("off", "on") if own else (keep,)))
    res: dict = {"threads": torch.get_num_threads(), "numeric_path": numeric_path(keep),
                 "paths": {m: numeric_path(m) for m in modes},
                 "shared_MB": avatar.shared_bytes() / 1e6,
                 "appearance_MB": avatar.appearance(name).nbytes() / 1e6,
                 "widths": list(avatar.config.widths), "raster": avatar.config.raster,
                 "attention": {"spatial": avatar.config.spatial_attention, "temporal": avatar.config.temporal_attention,
                               "reduction": avatar.config.attention_reduction}}  # fmt: skip
    try:
        for size in sizes:
            cam, rv, tr = bench_frame(int(size))
            fa = torch.full((52,), 0.2)
            runs: dict[str, list[dict]] = {m: [] for m in modes}
            previous = None
            if avatar.temporal:  # the walk's previous frame, as a causal clip render carries it
                prv, ptr = bench_frame(int(size), frame=7)[1:]
                previous = ClipState(avatar.pose(prv, ptr, fa)[0])

            def frame(m: str, cam=cam, rv=rv, tr=tr, fa=fa) -> None:
                gen.autocast_mode = m
                t0 = time.perf_counter()
                out = avatar.render_image(cam, rv, tr, name, fa, timings=True, previous=previous)
                out.timings["frame"] = (time.perf_counter() - t0) * 1000.0
                runs[m].append(out.timings)

            for m in modes:  # warm-up
                frame(m)
                runs[m].clear()
            for _ in range(repeats):
                for m in modes:
                    frame(m)
            full = avatar(cam, rv, tr, name, fa, previous=previous)
            for m in modes:
                key = f"{m}_{size}"
                res[f"{key}_ms"] = statistics.median(t["frame"] for t in runs[m])
                res[f"{key}_fps"] = 1000.0 / res[f"{key}_ms"]
                for s in STAGES:
                    res[f"{key}_{s}_ms"] = statistics.median(t[s] for t in runs[m])
                res[f"{key}_window"] = f"{full['window'][2]}x{full['window'][3]}"
                res[f"{key}_covered"] = int(full["mask"].sum())
    finally:
        gen.autocast_mode = keep
    res["fastest"] = {s: min(modes, key=lambda m: res[f"{m}_{s}_ms"]) for s in sizes}
    return res


def _covered(size: int):
    """The benchmark frame's surface raster (warp) and the default avatar."""
    from perennial.avatar.texture.model import TextureAvatar
    from perennial.body.anny import load_template

    av = TextureAvatar(load_template(), {}, ["a"])
    cam, rv, tr = bench_frame(size)
    verts, _, _ = av.pose(rv, tr)
    return av, verts, cam


def bench_texture_raster(sizes=(256, 512), repeats: int = 20) -> dict:
    """Surface raster of the benchmark frame: warp (body box) against the torch twin, median ms."""
    res: dict = {}
    for size in sizes:
        av, verts, cam = _covered(int(size))
        rast = av.rasterizer
        t = _interleaved({b: (lambda b=b: rast(verts, cam, backend=b)) for b in ("warp", "torch")}, repeats)
        res.update({f"{b}_{size}_ms": v for b, v in t.items()})
        res[f"covered_{size}"] = len(rast(verts, cam))
    return res


def bench_texture_lookup(sizes=(256, 512), repeats: int = 30, channels: int = 16, atlas: int = 256,
                         triplane: int = 128) -> dict:  # fmt: skip
    """UV atlas (grid_sample) against tri-plane (embedding bag) at the frame's covered pixels.

    Forward without gradients and forward + backward (gradient to the texture), median ms.
    """
    import torch

    from perennial.avatar.texture.texture import NeuralTexture

    res: dict = {"channels": channels, "atlas": atlas, "triplane": triplane}
    for size in sizes:
        av, verts, cam = _covered(int(size))
        r = av.rasterizer(verts, cam)
        pts = (r.canonical - av.center) / av.half_extent
        tex = {"uv": NeuralTexture("uv", channels, atlas), "triplane": NeuralTexture("triplane", channels, triplane)}

        def fwd(k):
            with torch.no_grad():
                tex[k](r.uv, pts)

        def fwd_bwd(k):
            tex[k].zero_grad()
            tex[k](r.uv, pts).square().sum().backward()

        fns = {}
        for k in tex:
            fns[f"{k}_forward_{size}_ms"] = lambda k=k: fwd(k)
            fns[f"{k}_forward_backward_{size}_ms"] = lambda k=k: fwd_bwd(k)
        res.update(_interleaved(fns, repeats))
        res[f"covered_{size}"] = len(r)
        res.update({f"{k}_MB": t.nbytes() / 1e6 for k, t in tex.items()})
    return res


def bench_generator_widths(widths=((16, 32, 48, 64), (8, 32, 48, 64), (8, 16, 32, 64)), sizes=(256, 512),
                           repeats: int = 7, modes=("off", "on")) -> dict:  # fmt: skip
    """The generator alone on the benchmark frame's window, per width setting and numeric path, median ms."""
    import torch

    from perennial.avatar.texture.generator import StyleUNet
    from perennial.avatar.texture.model import TextureConfig

    cfg = TextureConfig()
    res: dict = {}
    for size in sizes:
        av, verts, cam = _covered(int(size))
        x0, y0, w, h = av._window(av.rasterizer(verts, cam).box(), size, size)
        x = torch.randn(1, cfg.in_channels, h, w)
        z = torch.randn(cfg.latent_dim)
        nets = {(wd, m): StyleUNet(cfg.in_channels, cfg.latent_dim, wd, autocast_mode=m).eval()
                for wd in widths for m in modes}  # fmt: skip
        with torch.no_grad():
            t = _interleaved({f"{'-'.join(map(str, wd))}_{m}_{size}_ms": (lambda n=n: n(x, z))
                              for (wd, m), n in nets.items()}, repeats)  # fmt: skip
        res.update(t)
        res[f"window_{size}"] = f"{w}x{h}"
    for wd in widths:
        res[f"{'-'.join(map(str, wd))}_params"] = sum(
            p.numel() for p in StyleUNet(cfg.in_channels, cfg.latent_dim, wd).parameters())
    return res


def bench_attention_threads(repeats: int = 200) -> dict:
    """Median ms of the dual attention module (both parts) on the 256^2 window's 13 x 30 cells, on every
    intra-op thread and inside :func:`~perennial.numerics.one_thread` (what rendering uses), interleaved."""
    import torch

    from perennial.avatar.texture.attention import DualAttention
    from perennial.numerics import one_thread

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        att = DualAttention(17, 8).eval()
        body, expanded, previous = (torch.randn(1, 17, 13, 30) for _ in range(3))

    def run() -> None:
        with torch.no_grad():
            att(body, expanded, previous)

    def single() -> None:
        with one_thread():
            run()

    t = _interleaved({f"{torch.get_num_threads()}_threads_ms": run, "one_thread_ms": single}, repeats)
    return {**t, "cells": "13x30"}


if __name__ == "__main__":  # pragma: no cover
    import json
    import os

    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch is imported (lazily, above)
    out = {"speed": bench_texture_speed(), "raster": bench_texture_raster(),
           "lookup": bench_texture_lookup(), "generator": bench_generator_widths(),
           "attention_threads": bench_attention_threads()}  # fmt: skip
    print(json.dumps(out, indent=1))
