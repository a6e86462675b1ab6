"""``perennial bench ood``: driving avatars with motions unlike their training motion.

The training capture is narrow: Anny standing and waving (the built-in ``wave``, with the
seeded face and finger animation). The test motions are not: walking and squatting (built-in)
and CMU clips (hop, dance), each rendered by ``synth`` in the same outfit with ground truth.
For field and texture avatars, trained with and without retrieval-augmented training (RAF,
:mod:`perennial.learn.retrieval`; ``variants`` picks which), it measures:

- PSNR / LPIPS-alex against ground truth on the training capture's held-out views (in
  distribution) and on the test motions (out of distribution, poses as given);
- FID / KID (:mod:`perennial.evaluate.fid`) of the out-of-distribution renders against the
  ground-truth renders, with the poses as given and aligned by Motion Distribution Align
  (:mod:`perennial.motion.align`: alignment changes the pose, so it is compared by distribution),
  at the default alignment margin and at the ``align_margins``;
- with ``aligned_truth``: ground truth of the aligned motions, rendered by ``synth`` like the test
  motions, and PSNR / LPIPS / FID / KID of the aligned renders against it: how well the avatar
  renders the poses MDA drives it with (the figure above also counts the pose change itself);
- per test motion, independent of the avatar (:mod:`perennial.evaluate.align_figures`): the
  distance of the driving poses to the training poses (mean over frames of the nearest training
  pose's Euclidean distance over the body bones' rotation vectors, radians) before and after
  alignment; the jerk before and after (m/s^3); the semantic preservation: the correlation over
  time between aligned and original coordinates of the degrees of freedom the training poses
  cover, and, for comparison, of the root-frame joint positions of the joints they move;
- the retrieval index: build time and per-query latency of every installed library on the
  bank's whole-body descriptors (and recall against exact search);
- the pose prior's held-out reconstruction error (from its training record).

Writes ``ood.json`` and ``ood.md`` to ``--out`` (default ``out/bench-ood``).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from perennial.evaluate.align_figures import motion_figures, semantic_preservation
from perennial.numerics import numeric_path

__all__ = [
    "OodBenchConfig",
    "bench_cli",
    "motion_figures",
    "run_ood_bench",
    "semantic_preservation",
]


@dataclass(kw_only=True)
class OodBenchConfig:
    """Size of the out-of-distribution benchmark."""

    size: int = 128
    """Image size of every capture, pixels."""
    cameras: int = 6
    """Cameras of the training capture."""
    train_frames: int = 40
    """Frames of the training capture (standing and waving)."""
    test_cameras: int = 3
    """Cameras of each test-motion capture."""
    test_frames: int = 16
    """Frames of each test motion."""
    motions: tuple[str, ...] = ("walk", "squat@15", "cmu/131_03.bvh@60", "cmu-cc/005/005_02.bvh@90")
    """Test motions: built-in names (one cycle in 2 s) or files under shared/data/motion, with an optional
    @start frame (30 frames/s)."""
    steps: dict[str, int] = field(default_factory=lambda: {"field": 2000, "texture": 1500})
    """Create steps per method."""
    retrieval: float = 0.5
    """The RAF fraction of the ``+raf`` variants."""
    fid: bool = True
    """Compute FID/KID (needs the Inception file; null with the reason otherwise)."""
    variants: tuple[str, ...] = ("field", "field+raf", "texture", "texture+raf")
    """Avatars to train and measure: a method of ``steps``, with ``+raf`` for retrieval-augmented training."""
    aligned_truth: bool = True
    """Also render ground truth of the aligned motions (default margin) and measure the aligned renders
    against it: PSNR / LPIPS and FID / KID, the quality of what the avatar shows when MDA drives it."""
    align_margins: tuple[float, ...] = (0.15, 0.3, 0.6)
    """Alignment margins (radians, :class:`~perennial.motion.align.AlignConfig`) measured besides the
    default one (its figures are the plain ``aligned`` ones; these are ``aligned@margin``)."""

    def __post_init__(self) -> None:
        from perennial.errors import ConfigError

        for v in self.variants:
            if v.removesuffix("+raf") not in self.steps:
                raise ConfigError(
                    f"variant {v!r}: the method must be one of {', '.join(self.steps)}"
                )

    @classmethod
    def quick(cls) -> OodBenchConfig:
        return cls(size=96, cameras=4, train_frames=20, test_cameras=2, test_frames=8,
                   motions=("walk", "squat@15", "cmu/131_03.bvh@60"), steps={"field": 300, "texture": 200})  # fmt: skip


def _shared_motion() -> Path:
    here = Path(__file__).resolve()
    for root in [Path.cwd(), *here.parents]:
        d = root.parent / "shared" / "data" / "motion"
        if d.is_dir():
            return d
    from perennial.errors import PerennialError

    raise PerennialError(
        "bench ood: shared/data/motion not found (needed for the CMU test motions)"
    )


def _motion_arg(spec: str, frames: int, work: Path) -> str:
    """A synth --motion: a clip slice written as .npz (a built-in motion as one cycle in 2 s at 30 frames/s:
    synth would play a whole cycle in however few frames it is given)."""
    from perennial.motion.clip import MotionClip
    from perennial.motion.load import load_motion
    from perennial.motion.procedural import MOTIONS, procedural_motion

    name, _, start = spec.partition("@")
    if name in MOTIONS:
        from perennial.body.anny import load_template
        from perennial.capture.synth import SynthConfig

        t = load_template("anny")
        with torch.no_grad():
            floor = -float(
                t(*t.rest_pose(1), phenotype=SynthConfig().phenotype).vertices[0, :, 2].min()
            )
        rv, off = procedural_motion(name, 60)
        clip = MotionClip(rv, off + torch.tensor([0.0, 0.0, floor]), 30.0, name)
    else:
        clip = load_motion(_shared_motion() / name, fps=30.0)
    s = min(int(start or 0), max(clip.num_frames - frames, 0))
    path = work / f"{Path(name).stem}-{s}.npz"
    clip.slice(s, s + frames).save(path)
    return str(path)


def _images(avatar, capture, appearance, views, rotvecs=None):
    """(N, 3, H, W) renders of views (poses replaced by ``rotvecs[frame row]`` when given) and truths."""
    pred, gt = [], []
    for v in views:
        rv, tr, fa = capture.body_params(v.frame)
        if rotvecs is not None:
            rv = rotvecs[capture.frame_row(v.frame)]
        pred.append(
            avatar.render_image(capture.cameras[v.camera], rv, tr, appearance, fa).rgb.permute(
                2, 0, 1
            )
        )
        gt.append(capture.load_image(v).permute(2, 0, 1))
    return torch.stack(pred).clamp(0, 1), torch.stack(gt)


def _quality(pred, gt) -> dict[str, float]:
    from perennial.evaluate.metrics import lpips, psnr

    with torch.no_grad():
        return {
            "psnr": float(psnr(pred, gt).mean()),
            "lpips": float(lpips(pred, gt, "alex").mean()),
        }


def _fid(features, real_f, fake) -> dict:
    from perennial.evaluate.fid import fid_kid_from_features

    r = fid_kid_from_features(real_f, features(fake))
    return {"fid": r["fid"], "kid": r["kid"], "kid_std": r["kid_std"], "n": r["n_fake"]}


def run_ood_bench(
    out: str | Path, config: OodBenchConfig | None = None, progress: bool = True
) -> dict:
    """Run the benchmark into ``out``; returns the result tree (also written as ``ood.json``)."""
    from perennial.body.anny import load_template
    from perennial.capture.synth import SynthConfig, synthesize
    from perennial.learn.methods import fit, get_method, preset
    from perennial.motion.prior import default_prior

    c = config or OodBenchConfig()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    res: dict = {
        "config": asdict(c),
        "numeric_path": numeric_path(),
        "prior": default_prior().info.get("heldout"),
    }
    train = synthesize(out / "train", SynthConfig(appearance="ood", motion="wave", cameras=c.cameras, frames=c.train_frames,
                                                  size=c.size, seed=3), overwrite=True, progress=False)  # fmt: skip
    tests = {}
    for spec in c.motions:
        name = spec.split("/")[-1].split(".")[0].split("@")[0]
        cfg = SynthConfig(appearance="ood", motion=_motion_arg(spec, c.test_frames, out), cameras=c.test_cameras,
                          frames=c.test_frames, size=c.size, seed=3, test_camera_every=0, test_frame_every=0)  # fmt: skip
        tests[name] = synthesize(out / f"test-{name}", cfg, overwrite=True, progress=False)
    train_poses = train.body.rotvec[
        [train.frame_row(f) for f in sorted({v.frame for v in train.views_of("train")})]
    ]
    from perennial.motion.align import AlignConfig, aligner_for

    margins = {"": AlignConfig()} | {f"@{m:g}": AlignConfig(margin=m) for m in c.align_margins}
    res["motions"] = {n: motion_figures(train_poses, cap.body.rotvec) for n, cap in tests.items()}
    res["align_sweep"] = {k: {n: motion_figures(train_poses, cap.body.rotvec, align=a) for n, cap in tests.items()}
                          for k, a in margins.items() if k}  # fmt: skip
    aligned = {k: {n: aligner_for(train_poses, config=a).align(cap.body.rotvec) for n, cap in tests.items()}
               for k, a in margins.items()}  # fmt: skip
    truths = {}  # ground truth of the aligned (default margin) motions, rendered like the test motions
    if c.aligned_truth:
        from perennial.motion.clip import MotionClip

        for n, cap in tests.items():
            path = MotionClip(aligned[""][n], cap.body.translation, 30.0, f"{n} aligned").save(
                out / f"{n}-aligned.npz"
            )
            cfg = SynthConfig(appearance="ood", motion=str(path), cameras=c.test_cameras, frames=c.test_frames,
                              size=c.size, seed=3, test_camera_every=0, test_frame_every=0)  # fmt: skip
            truths[n] = synthesize(out / f"test-{n}-aligned", cfg, overwrite=True, progress=False)
    real_al = None
    features = real_f = None
    if c.fid:
        try:
            from perennial.evaluate.fid import load_inception

            features = load_inception()
        except Exception as e:  # the Inception file missing (InceptionNotFound) or fid.py absent
            res["fid_unavailable"] = f"{type(e).__name__}: {e}"
    template = load_template("anny")
    res["avatars"] = {}
    for label in c.variants:
        method = label.removesuffix("+raf")
        raf = c.retrieval if label.endswith("+raf") else 0.0
        m = get_method(method)
        cfg = preset(m, "create", **{"engine.steps": c.steps[method], "checkpoint_every": 0,
                                     "retrieval.fraction": raf})  # fmt: skip
        cfg.meta = None
        avatar = m.new(template, train, cfg)
        t1 = time.perf_counter()
        fit(avatar, train, cfg, method=method, progress=progress)
        r = {"train_s": time.perf_counter() - t1}
        r["id"] = _quality(*_images(avatar, train, "ood", train.views_of("test")))
        preds, gts, preds_al = [], [], {k: [] for k in aligned}
        for n, cap in tests.items():
            p, g = _images(avatar, cap, "ood", cap.views)
            r[f"ood.{n}"] = _quality(p, g)
            preds.append(p)
            gts.append(g)
            for k in aligned:
                preds_al[k].append(_images(avatar, cap, "ood", cap.views, aligned[k][n])[0])
        p, g = torch.cat(preds), torch.cat(gts)
        r["ood"] = _quality(p, g)
        if features is not None:
            if real_f is None:
                real_f = features(g)
            r["fid_ood"] = _fid(features, real_f, p)
            for k in aligned:
                r[f"fid_ood_aligned{k}"] = _fid(features, real_f, torch.cat(preds_al[k]))
        if truths:
            pa, ga = zip(*(_images(avatar, acap, "ood", acap.views) for acap in truths.values()))
            r["aligned"] = _quality(torch.cat(pa), torch.cat(ga))
            if features is not None:
                real_al = features(torch.cat(ga)) if real_al is None else real_al
                r["fid_aligned_truth"] = _fid(features, real_al, torch.cat(pa))
        res["avatars"][label] = r
        if progress:
            print(f"{label}: {json.dumps(r)}")
    res["retrieval"] = retrieval_figures()
    res["seconds"] = time.perf_counter() - t0
    (out / "ood.json").write_text(json.dumps(res, indent=1) + "\n")
    (out / "ood.md").write_text(format_summary(res) + "\n")
    return res


def retrieval_figures(queries: int = 200) -> dict[str, float]:
    """Build and query time of every installed index library on the shipped bank's body descriptors,
    and the build time of the whole retrieval bank (every part) with the default library."""
    import numpy as np

    from perennial.motion.retrieval import RetrievalBank, descriptor, measure_backends

    bank = RetrievalBank.load(None, "faiss")
    x = descriptor("body", bank.rotvec)
    q = x[np.linspace(0, len(x) - 1, queries).astype(int)] + 0.01
    out = {
        "bank_poses": float(len(x)),
        "bank_faces": float(bank.facial.shape[0]),
        "bank_build_ms": bank.build_s * 1000,
    }
    return out | measure_backends(x, q)


def format_summary(res: dict) -> str:
    """Markdown tables of the result."""
    lines = [f"numeric path: {res['numeric_path']}", "",
             "| avatar | ID PSNR | ID LPIPS | OOD PSNR | OOD LPIPS | OOD FID | OOD KID | aligned FID | aligned KID |",
             "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip

    def f(x, k):
        return "null" if x is None or x.get(k) is None else f"{x[k]:.4g}"

    for label, r in res["avatars"].items():
        lines.append(f"| {label} | {r['id']['psnr']:.2f} | {r['id']['lpips']:.4f} | {r['ood']['psnr']:.2f} | "
                     f"{r['ood']['lpips']:.4f} | {f(r.get('fid_ood'), 'fid')} | {f(r.get('fid_ood'), 'kid')} | "
                     f"{f(r.get('fid_ood_aligned'), 'fid')} | {f(r.get('fid_ood_aligned'), 'kid')} |")  # fmt: skip
    if "fid_unavailable" in res:
        lines.append(f"\nFID/KID null: {res['fid_unavailable']}")
    if any("aligned" in r for r in res["avatars"].values()):
        lines += ["", "against ground truth of the aligned poses (the test motions' renders, poses aligned at the default "
                  "margin, rendered by synth): how well the avatar renders what MDA drives it with", "",
                  "| avatar | OOD PSNR | OOD LPIPS | aligned PSNR | aligned LPIPS | OOD FID / KID | aligned FID / KID |",
                  "|---|---|---|---|---|---|---|"]  # fmt: skip
        for label, r in res["avatars"].items():
            if "aligned" in r:
                lines.append(f"| {label} | {r['ood']['psnr']:.2f} | {r['ood']['lpips']:.4f} | {r['aligned']['psnr']:.2f} | "
                             f"{r['aligned']['lpips']:.4f} | {f(r.get('fid_ood'), 'fid')} / {f(r.get('fid_ood'), 'kid')} | "
                             f"{f(r.get('fid_aligned_truth'), 'fid')} / {f(r.get('fid_aligned_truth'), 'kid')} |")  # fmt: skip
    sweep = list(res.get("align_sweep", {}))
    if sweep and res["avatars"]:
        lines += [
            "",
            "aligned FID / KID by alignment margin (radians; the default's are the table's above):",
            "",
            "| avatar | " + " | ".join(f"margin {k[1:]}" for k in sweep) + " |",
            "|---" * (len(sweep) + 1) + "|",
        ]
        for label, r in res["avatars"].items():
            cells = [
                f"{f(r.get(f'fid_ood_aligned{k}'), 'fid')} / {f(r.get(f'fid_ood_aligned{k}'), 'kid')}"
                for k in sweep
            ]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")  # fmt: skip
    lines += ["", "| motion | margin | pose dist before | after (rad) | jerk before | after (m/s^3) | correlation "
              "(covered DOFs) | body DOFs | root-frame joints (old) |", "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    rows = [("default", res["motions"])] + [(k[1:], res["align_sweep"][k]) for k in sweep]
    for margin, motions in rows:
        for n, m in motions.items():
            lines.append(f"| {n} | {margin} | {m['dist_before']:.3f} | {m['dist_after']:.3f} | {m['jerk_before']:.1f} | "
                         f"{m['jerk_after']:.1f} | {m['correlation']:.3f} ({m['dofs']}) | {m['correlation_body']:.3f} "
                         f"({m['dofs_body']}) | {m['correlation_joints']:.3f} ({m['covered_joints']}) |")  # fmt: skip
    return "\n".join(lines)


def _flat(res: dict) -> dict:
    out: dict = {"numeric_path": res["numeric_path"]}
    aligned = [
        "fid_ood",
        "fid_ood_aligned",
        *(f"fid_ood_aligned{k}" for k in res.get("align_sweep", {})),
    ]
    aligned += ["fid_aligned_truth"] if res["config"].get("aligned_truth") else []
    for label, r in res["avatars"].items():
        for k, v in r.items():
            if isinstance(v, dict):
                out |= {f"{label}.{k}.{kk}": vv for kk, vv in v.items()}
            else:
                out[f"{label}.{k}"] = v
        for k in aligned:
            if k not in r:
                out[f"{label}.{k}"] = None
    out |= {f"motion.{n}.{k}": v for n, m in res["motions"].items() for k, v in m.items()}
    for a, motions in res.get("align_sweep", {}).items():
        out |= {f"motion{a}.{n}.{k}": v for n, m in motions.items() for k, v in m.items()}
    out |= {f"retrieval.{k}": v for k, v in res["retrieval"].items()}
    if res.get("prior"):
        out |= {f"prior.heldout.{k}": v for k, v in res["prior"].items()}
    if "fid_unavailable" in res:
        out["fid_unavailable"] = res["fid_unavailable"]
    out["seconds"] = res["seconds"]
    return {
        k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in out.items()
    }


def bench_cli(args) -> dict:
    """``perennial bench ood [--quick] [--variants LABEL ...] [--out DIR] [--json FILE]``: flat figures (the
    CLI prints them)."""
    cfg = OodBenchConfig.quick() if args.quick else OodBenchConfig()
    if getattr(args, "variants", None):
        cfg = replace(cfg, variants=tuple(args.variants))
    out = args.out or "out/bench-ood"
    res = run_ood_bench(out, cfg)
    print(format_summary(res))
    print(f"wrote {out}/ood.json, ood.md")
    return _flat(res)
