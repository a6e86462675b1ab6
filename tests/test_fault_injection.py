"""SIGKILL at every fsync, rename and symlink of `perennial learn`: the avatar always survives.

The wrapper counts the calls of ``os.fsync``, ``os.rename``, ``os.replace`` and
``os.symlink`` made by a learn (two checkpoints, the version, the switch) and kills
the process right before call k, for every k. After each kill the avatar opens
strictly at version 1 or 2, its writer lock is free, and ``learn --resume``
finishes the job (adopting a version that was written but not yet current).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from perennial.avatar.field_io import load_field_avatar
from perennial.avatar.store import AvatarStore
from perennial.capture import read_capture
from perennial.capture.synth import SynthConfig, synthesize
from perennial.learn.continual import learn_appearance
from perennial.learn.create import create_avatar
from perennial.learn.methods import preset

ARGS = ["--steps", "10", "--rays", "64", "--checkpoint-every", "4", "--strategy", "finetune", "--quiet"]
WRAPPER = r"""
import os, signal, sys
kill_at, count = int(os.environ["KILL_AT"]), [0]
def wrap(name):
    real = getattr(os, name)
    def call(*a, **k):
        count[0] += 1
        if count[0] == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        return real(*a, **k)
    setattr(os, name, call)
for name in ("fsync", "rename", "replace", "symlink"):
    wrap(name)
from perennial.cli import main
rc = main(sys.argv[1:])
with open(os.environ["COUNT_TO"], "w") as fh:
    fh.write(str(count[0]))
sys.exit(rc)
"""


@pytest.fixture(scope="module")
def setup(tmp_path_factory, template):
    root = tmp_path_factory.mktemp("faults")
    a = synthesize(root / "a", SynthConfig(cameras=3, frames=2, size=32, supersample=1), progress=False)
    b = synthesize(root / "b", SynthConfig(appearance="outfit-b", cameras=3, frames=1, size=32, supersample=1,
                                           test_camera_every=0, test_frame_every=0), progress=False)  # fmt: skip
    create_avatar(root / "base", a, preset("field", "create", meta=None, steps=10, rays_per_step=64), progress=False,
                  template=template)  # fmt: skip
    return root, b


def learn(av, cap, kill_at, count_to):
    env = {**os.environ, "KILL_AT": str(kill_at), "COUNT_TO": str(count_to), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-c", WRAPPER, "learn", str(av), "--capture", str(cap), *ARGS]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, check=False)


def test_kill_at_every_fsync_rename_and_symlink(tmp_path, setup, template):
    root, b = setup
    full = shutil.copytree(root / "base", tmp_path / "full", symlinks=True)
    r = learn(full, b.root, 0, tmp_path / "count")
    assert r.returncode == 0, r.stderr
    calls = int((tmp_path / "count").read_text())
    print(f"{calls} fsync/rename/replace/symlink calls, each killed once")
    assert calls >= 8  # 2 checkpoints (rename each), the version (fsyncs, rename), the switch (fsync, symlink, replace)
    outcomes = set()
    for k in range(1, calls + 1):
        av = shutil.copytree(root / "base", tmp_path / f"k{k}", symlinks=True)
        r = learn(av, b.root, k, tmp_path / "unused")
        assert r.returncode == -9, (k, r.returncode, r.stderr[-300:])
        store = AvatarStore(av)
        with store.lock():  # the killed writer's lock is free
            pass
        current = store.current_number()
        assert current in (1, 2), k
        avatar, _, _ = load_field_avatar(store, template=template)  # opens strictly
        assert avatar.appearance_names == (["outfit-a"] if current == 1 else ["outfit-a", "outfit-b"])
        outcomes.add(current)
        if current == 1:  # the update is finished by --resume, from its checkpoint or its written version
            v = learn_appearance(av, read_capture(b.root), "finetune", preset("field", "finetune", steps=10,
                                 rays_per_step=64, checkpoint_every=4), progress=False, template=template,
                                 resume=True)  # fmt: skip
            assert v.number == 2 and store.current_number() == 2, k
            assert not list((av / "versions").glob(".tmp-*")) and not (av / "checkpoint").exists(), k
    assert outcomes == {1, 2}, outcomes
