"""`perennial learn` killed with SIGKILL at random moments never costs the avatar (20 trials)."""

import os
import random
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

from perennial.avatar.field.render import render_image
from perennial.avatar.field_io import load_field_avatar
from perennial.avatar.store import AvatarBusy, AvatarStore
from perennial.capture.synth import SynthConfig, synthesize
from perennial.learn.create import create_avatar
from perennial.learn.methods import preset

STEPS = ["--steps", "40", "--quiet"]

# `perennial learn` that kills itself with SIGKILL at an exact point of the version write
WRAPPER = r"""
import os, signal, sys
at = os.environ.get("KILL_AT", "")
die = lambda: os.kill(os.getpid(), signal.SIGKILL)
import perennial.avatar.store as s
if at == "weights":  # inside the new version's temporary folder, weights half written
    real_write = s._write_file
    def write(p, d):
        if p.name == "weights.safetensors":
            with open(p, "wb") as f:
                f.write(d[: len(d) // 2])
            die()
        real_write(p, d)
    s._write_file = write
elif at == "switch":  # version complete and in place, `current` not yet switched
    real_replace = os.replace
    def replace(a, b):
        if ".current-" in str(a):
            die()
        real_replace(a, b)
    os.replace = replace
from perennial.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.fixture(scope="module")
def setup(tmp_path_factory, template):
    root = tmp_path_factory.mktemp("crash")
    a = synthesize(root / "a", SynthConfig(appearance="outfit-a", cameras=3, frames=2, size=32, supersample=1,
                                           test_camera_every=3, test_frame_every=0), progress=False)  # fmt: skip
    b = synthesize(root / "b", SynthConfig(appearance="outfit-b", cameras=5, frames=1, size=32, supersample=1,
                                           test_camera_every=0, test_frame_every=0), progress=False)  # fmt: skip
    base = root / "base"
    create_avatar(base, a, preset("field", "create", meta=None, steps=20, rays_per_step=256), progress=False, template=template)
    avatar, _, _ = load_field_avatar(AvatarStore(base), template=template)
    view = a.views[0]
    rv, tr, _ = a.body_params(view.frame)
    reference = render_image(avatar, a.cameras[view.camera], rv, tr, "outfit-a").rgb
    # how long a whole learn takes, to spread the random kills over it
    t0 = time.monotonic()
    full = root / "full"
    shutil.copytree(base, full, symlinks=True)
    r = subprocess.run([sys.executable, "-m", "perennial.cli", "learn", str(full), "--capture", str(b.root), *STEPS],
                       capture_output=True, text=True)  # fmt: skip
    assert r.returncode == 0, r.stderr
    return {"a": a, "b": b, "base": base, "view": view, "reference": reference, "seconds": time.monotonic() - t0}


def test_sigkill_learn_20_times(tmp_path, setup, template):
    rng = random.Random(7)
    trials = ["weights"] * 3 + ["switch"] * 3 + [rng.uniform(0.2, 1.1) for _ in range(14)]
    outcomes = []
    for i, trial in enumerate(trials):
        av = shutil.copytree(setup["base"], tmp_path / f"k{i}", symlinks=True)
        env = {**os.environ, "KILL_AT": trial if isinstance(trial, str) else "", "OMP_NUM_THREADS": "1"}
        p = subprocess.Popen([sys.executable, "-c", WRAPPER, "learn", str(av), "--capture", str(setup["b"].root), *STEPS],
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
        if not isinstance(trial, str):
            time.sleep(trial * setup["seconds"])
            p.send_signal(signal.SIGKILL)
        p.communicate(timeout=300)
        store = AvatarStore(av)
        current = store.current_number()
        assert current in (1, 2), (trial, current)
        avatar, version, _ = load_field_avatar(store, template=template)  # loads, strictly
        if current == 1:
            v = setup["view"]
            rv, tr, _ = setup["a"].body_params(v.frame)
            img = render_image(avatar, setup["a"].cameras[v.camera], rv, tr, "outfit-a").rgb
            assert torch.equal(img, setup["reference"]), trial  # renders identically to before
        else:
            assert [r["name"] for r in version.state["appearances"]] == ["outfit-a", "outfit-b"]
        outcomes.append((trial if isinstance(trial, str) else "random", p.returncode, current))
        # the next update cleans leftovers and succeeds
        if i % 5 == 0:
            r = subprocess.run([sys.executable, "-m", "perennial.cli", "learn", str(av), "--capture", str(setup["b"].root),
                                "--name", "outfit-b2", *STEPS], capture_output=True, text=True)  # fmt: skip
            assert r.returncode == 0, r.stderr
            assert not list((av / "versions").glob(".tmp-*"))
    kinds = {(k, cur) for k, _, cur in outcomes}
    assert ("weights", 1) in kinds and ("switch", 1) in kinds  # killed before the switch: previous version
    assert len(outcomes) == 20


def test_sigint_learn_stops_cleanly(tmp_path, setup):
    av = shutil.copytree(setup["base"], tmp_path / "int", symlinks=True)
    p = subprocess.Popen([sys.executable, "-m", "perennial.cli", "learn", str(av), "--capture", str(setup["b"].root),
                          "--steps", "100000", "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    time.sleep(max(4.0, 0.6 * setup["seconds"]))
    p.send_signal(signal.SIGINT)
    try:
        _, err = p.communicate(timeout=120)
    finally:
        p.kill()  # never leave a 100,000-step learn running behind a failed test
    assert p.returncode == 130 and "interrupted" in err and "Traceback" not in err
    assert AvatarStore(av).current_number() == 1


def test_second_writer_is_refused(tmp_path, setup):
    av = shutil.copytree(setup["base"], tmp_path / "busy", symlinks=True)
    p = subprocess.Popen([sys.executable, "-m", "perennial.cli", "learn", str(av), "--capture", str(setup["b"].root),
                          "--steps", "100000", "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # wait until the first writer holds the lock
            try:
                with AvatarStore(av).lock():
                    pass
            except AvatarBusy:
                break
            time.sleep(0.05)
        r = subprocess.run([sys.executable, "-m", "perennial.cli", "learn", str(av), "--capture", str(setup["b"].root),
                            "--name", "other", "--quiet"], capture_output=True, text=True, timeout=60)  # fmt: skip
        assert r.returncode == 2 and "busy, being updated by pid" in r.stderr
    finally:
        p.kill()
        p.communicate()
