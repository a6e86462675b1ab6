"""``perennial pretrain``: a prior for field or texture avatars, trained across identities, in one or more processes."""

from __future__ import annotations

import argparse
import os
import sys

from perennial.config import add_options, options_given, override

OPTIONS = ["method", "steps", "batch", "rays_per_step", "samples", "seed", "lr_final", "checkpoint_every", "synthetic.count",
           "synthetic.cameras", "synthetic.frames", "synthetic.size"]  # fmt: skip
FLAGS = {"rays_per_step": "--rays", "synthetic.count": "--synthetic", "synthetic.cameras": "--synth-cameras",
         "synthetic.frames": "--synth-frames", "synthetic.size": "--synth-size"}  # fmt: skip


def _without_nproc(argv: list[str]) -> list[str]:
    out, skip = [], False
    for x in argv:
        if skip:
            skip = False
        elif x == "--nproc":
            skip = True
        elif not x.startswith("--nproc="):
            out.append(x)
    return out


def _cmd_pretrain(a: argparse.Namespace) -> int:
    from perennial.learn import distributed
    from perennial.learn.pretrain import PretrainConfig, pretrain

    if a.nproc is not None and a.nproc > 1 and "WORLD_SIZE" not in os.environ:
        argv = _without_nproc(sys.argv[1:] if a.argv is None else a.argv)
        return distributed.launch(a.nproc, argv)
    cfg = override(PretrainConfig(), options_given(a))
    dist = distributed.init(a.device)
    try:
        result, prov = pretrain(a.out, a.captures or [], cfg, dist, resume=a.resume, progress=not a.quiet)
    finally:
        distributed.shutdown(dist)
    if dist.writer and not a.quiet:
        print(f"wrote {a.out}/prior.safetensors and prior.json: {len(prov['identities'])} identities, "
              f"{result.steps_run} steps on {dist.world} process(es) in {result.seconds:.0f} s, "
              f"{prov['samples_per_s']:.2f} identities/s, training PSNR on the body {result.train_psnr:.2f} dB")  # fmt: skip
    return 0


def add_pretrain_commands(sub) -> None:
    from perennial.learn.pretrain import PretrainConfig

    p = sub.add_parser("pretrain", help="train a prior for field or texture avatars across many identities (torch DDP)",
                       description="Train the shared parts of an avatar method across many identities "
                                   "(synthetic people with phenotypes from Anny's shape distribution, own outfits "
                                   "and motions, rendered into OUT/cache; plus --captures), each with its own "
                                   "appearance: the pose corrector and shared MLP of field avatars, or the "
                                   "generator and face encoder of texture avatars (--method texture). Writes "
                                   "OUT/prior.safetensors + prior.json; 'perennial create AV --capture CAP "
                                   "[--method texture] --prior OUT' starts from it (--prior default: the one "
                                   "shipped). Distributed: "
                                   "--nproc N, or 'torchrun --nproc-per-node N -m perennial.cli pretrain ...' "
                                   "(gloo on CPU; several nodes: torchrun's --nnodes/--node-rank/--rdzv-endpoint, "
                                   "not tested).")  # fmt: skip
    p.add_argument("out", help="output folder of the prior (its cache/ holds the synthetic captures)")
    p.add_argument("--captures", nargs="+", metavar="DIR", help="real or synthetic captures, one identity each")
    add_options(p, PretrainConfig(), OPTIONS, FLAGS)
    p.add_argument("--nproc", type=int, help="processes on this machine (runs torchrun; default: 1)")
    p.add_argument("--device", default="cpu", help="cpu (default); pretraining runs on the CPU in this version")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run from OUT/checkpoint")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=_cmd_pretrain, argv=None)
