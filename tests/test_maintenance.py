"""Versions (history / rollback / prune), bad input that must change nothing, and crash safety of create.

Most commands run in-process through ``perennial.cli.main`` (an exception escaping
``main`` would be a Traceback for the user, so pytest failing on it is the check);
the kill and Ctrl-C tests run ``perennial create`` in a subprocess.
"""

import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import safetensors.torch
import torch

import perennial.avatar.store as store_module
from perennial.avatar.field_io import load_field_avatar, save_field_avatar
from perennial.avatar.maintenance import check_capture_for_avatar, format_history, history
from perennial.avatar.store import AvatarError, AvatarStore, AvatarWriteError
from perennial.capture import read_capture
from perennial.capture.synth import SynthConfig, synthesize
from perennial.cli import main
from perennial.learn.checkpoint import CheckpointError
from perennial.learn.create import create_avatar
from perennial.learn.methods import preset

STEPS = ["--steps", "30", "--rays", "128", "--meta-iterations", "0", "--quiet"]  # create only
CHECKPOINT = ["--checkpoint-every", "5"]


@pytest.fixture(scope="module")
def cap(tmp_path_factory, template):
    root = tmp_path_factory.mktemp("cap") / "tiny"
    synthesize(root, SynthConfig(cameras=3, frames=2, size=32, supersample=1), progress=False)
    return root


@pytest.fixture(scope="module")
def made(tmp_path_factory, cap, template):
    """A created avatar (version 1), its test renders, and how long the create took in-process."""
    base = tmp_path_factory.mktemp("made")
    t0 = time.perf_counter()
    assert main(["create", str(base / "av"), "--capture", str(cap), *STEPS]) == 0
    seconds = time.perf_counter() - t0
    assert main(["render", str(base / "av"), "--appearance", "outfit-a", "--capture", str(cap),
                 "--out", str(base / "v1png"), "--quiet"]) == 0  # fmt: skip
    return {"av": base / "av", "png": pngs(base / "v1png"), "seconds": seconds}


def pngs(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(Path(folder).rglob("*.png"))}


def cli(capsys, *args):
    capsys.readouterr()
    rc = main([str(a) for a in args])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return rc, out, err


def snapshot(root):
    """Every file's bytes, every link's target and every directory, except the lock's content."""
    snap = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            p = os.path.join(dirpath, name)
            rel = os.path.relpath(p, root)
            if os.path.islink(p):
                snap[rel] = ("link", os.readlink(p))
            elif os.path.isdir(p):
                snap[rel] = ("dir",)
            elif name != "lock":
                snap[rel] = ("file", Path(p).read_bytes())
    return snap


def copy_avatar(made, tmp_path, name="av"):
    dst = tmp_path / name
    shutil.copytree(made["av"], dst, symlinks=True)
    return dst


def write_second_version(path, template, bump=0.3):
    """A second version as 'learn' would write it: same appearance, changed appearance parameters."""
    store = AvatarStore(path)
    avatar, version, replay = load_field_avatar(store, template=template)
    with torch.no_grad():
        for p in avatar.field.appearance("outfit-a").parameters():
            p.add_(bump)
    entry = {"action": "learn", "appearance": "outfit-a", "strategy": "finetune", "seconds": 1.0}
    metrics = {"train": {"train_psnr_body": 11.5, "steps_run": 3}, "eval": {"outfit-a": {"psnr": 12.25}}}
    with store.lock():
        return save_field_avatar(store, avatar, version.state["appearances"], replay, entry, metrics)


def render(capsys, av, cap, out):
    rc, _, err = cli(capsys, "render", av, "--appearance", "outfit-a", "--capture", cap, "--out", out, "--quiet")
    assert rc == 0, err
    return pngs(out)


# ---------------------------------------------------------------------------- versions


def test_history_rollback_prune(tmp_path, made, cap, template, capsys):
    av = copy_avatar(made, tmp_path)
    write_second_version(av, template)
    rc, out, _ = cli(capsys, "history", av)
    assert rc == 0
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["version", "written", "action"]
    assert "create" in lines[1] and "create" in lines[1].split("create", 1)[1] and "train PSNR" in lines[1]
    assert lines[2].startswith("*") and "learn" in lines[2] and "finetune" in lines[2] and "12.25" in lines[2]
    rc, out, _ = cli(capsys, "history", av, "--json")
    rows = json.loads(out)
    assert [(r["number"], r["current"], r["action"]) for r in rows] == [(1, False, "create"), (2, True, "learn")]
    assert rows[1]["appearances"] == ["outfit-a"] and rows[1]["key_metrics"]["eval.outfit-a.psnr"] == 12.25

    v2 = render(capsys, av, cap, tmp_path / "v2png")
    assert v2.keys() == made["png"].keys() and v2 != made["png"]

    rc, out, _ = cli(capsys, "rollback", av, "--to", 1)
    assert rc == 0 and "current is now version 1 (was 2)" in out and "later versions [2] are kept" in out
    store = AvatarStore(av)
    assert store.current_number() == 1 and store.version_numbers() == [1, 2]
    assert render(capsys, av, cap, tmp_path / "back") == made["png"]  # identical to before version 2
    rc, _, err = cli(capsys, "rollback", av, "--to", 7)
    assert rc == 2 and "no version 7 (versions: 1, 2)" in err and store.current_number() == 1

    # prune never deletes the current version, even an old one
    rc, out, _ = cli(capsys, "prune", av, "--keep", 1)
    assert rc == 0 and "no versions deleted" in out and store.version_numbers() == [1, 2]
    # roll forward, then prune; leftovers of interrupted writes go too
    assert cli(capsys, "rollback", av, "--to", 2)[0] == 0
    (av / "versions" / ".tmp-3-deadbeef").mkdir()
    (av / "versions" / ".tmp-3-deadbeef" / "weights.safetensors").write_bytes(b"half")
    os.symlink("versions/1", av / ".current-deadbeef")
    rc, out, _ = cli(capsys, "prune", av, "--keep", 1)
    assert rc == 0 and "deleted versions [1]" in out and "removed 2 leftovers" in out
    assert store.version_numbers() == [2] and store.current_number() == 2
    assert sorted(p.name for p in av.iterdir()) == ["avatar.json", "current", "lock", "switches", "versions"]
    assert [p.name for p in (av / "versions").iterdir()] == ["2"]
    assert render(capsys, av, cap, tmp_path / "after") == v2
    rc, _, err = cli(capsys, "prune", av, "--keep", 0)
    assert rc == 2 and "--keep must be at least 1" in err
    rc, _, err = cli(capsys, "rollback", av, "--to", 1)
    assert rc == 2 and "no version 1 (versions: 2)" in err


def test_rollback_refuses_busy_and_damaged(tmp_path, made, template, capsys):
    av = copy_avatar(made, tmp_path)
    write_second_version(av, template)
    before = snapshot(av)
    store = AvatarStore(av)
    with store.lock():  # another writer (a second open file description conflicts like another process)
        rc, _, err = cli(capsys, "rollback", av, "--to", 1)
        assert rc == 2 and "busy, being updated by pid" in err
        rc, _, err = cli(capsys, "prune", av, "--keep", 1)
        assert rc == 2 and "busy" in err
    w = av / "versions" / "1" / "weights.safetensors"
    w.write_bytes(w.read_bytes()[:-100])
    before = snapshot(av)
    rc, _, err = cli(capsys, "rollback", av, "--to", 1)
    assert rc == 2 and f"{w}: checksum differs from state.json" in err and "cannot be made current" in err
    assert snapshot(av) == before and store.current_number() == 2
    # a version with unreadable JSON is listed, not fatal
    (av / "versions" / "1" / "metrics.json").write_text("{")
    rows = history(store)
    assert "not valid JSON" in rows[0]["error"] and rows[1]["current"]
    assert "unreadable" in format_history(rows)


# ---------------------------------------------------------------------------- bad input


def edited_capture(cap, tmp_path, name, edit):
    dst = tmp_path / name
    shutil.copytree(cap, dst)
    doc = json.loads((dst / "capture.json").read_text())
    edit(doc)
    (dst / "capture.json").write_text(json.dumps(doc))
    return dst


def test_bad_captures_change_nothing(tmp_path, made, cap, capsys):
    av = copy_avatar(made, tmp_path)
    before = snapshot(av)
    new = tmp_path / "new"
    (tmp_path / "empty").mkdir()
    cases = [
        (tmp_path / "nowhere", "nowhere: not a perennial capture (directory does not exist)"),
        (tmp_path / "empty", "empty: not a perennial capture (no capture.json)"),
        (edited_capture(cap, tmp_path, "smplx", lambda d: d["body"].update(template="smplx")),
         "capture.json: body.template 'smplx' is unknown (known: anny)"),
    ]  # fmt: skip
    for capture, msg in cases:
        for args in (["create", new, "--capture", capture, *STEPS],
                     ["eval", av, "--capture", capture, "--quiet"],
                     ["render", av, "--appearance", "outfit-a", "--capture", capture, "--out", tmp_path / "o"]):  # fmt: skip
            rc, _, err = cli(capsys, *args)
            assert rc == 2 and msg in err and err.startswith(f"perennial {args[0]}: error:"), (args, err)
            assert not new.exists() and not (tmp_path / "o").exists()
    # create on the existing avatar: refused before anything is read
    rc, _, err = cli(capsys, "create", av, "--capture", cap, *STEPS)
    assert rc == 2 and "an avatar exists already" in err
    assert snapshot(av) == before


def test_capture_of_another_phenotype(tmp_path, made, cap, capsys):
    other = edited_capture(cap, tmp_path, "tall", lambda d: d["body"]["phenotype"].update(height=0.9))
    store = AvatarStore(copy_avatar(made, tmp_path))
    with pytest.raises(AvatarError) as e:
        check_capture_for_avatar(store, read_capture(other))
    assert f"{other / 'capture.json'}: the capture's body differs from the avatar's ({store.meta_path})" in str(e.value)
    assert "phenotype.height 0.9 vs 0.5" in str(e.value)
    c = read_capture(cap)
    c.body_info = {**c.body_info, "template": "smplx"}
    with pytest.raises(AvatarError, match="template 'smplx' vs 'anny'"):
        check_capture_for_avatar(store, c)
    # an interrupted create resumed with the wrong body: refused, nothing changes
    av = tmp_path / "half"
    av.mkdir()
    (av / "versions").mkdir()
    shutil.copy(store.meta_path, av / "avatar.json")
    before = snapshot(av)
    rc, _, err = cli(capsys, "create", av, "--capture", other, "--resume", *STEPS)
    assert rc == 2 and "phenotype.height 0.9 vs 0.5" in err and str(av / "avatar.json") in err
    assert snapshot(av) == before


def test_corrupt_png(tmp_path, made, cap, capsys):
    bad = tmp_path / "badpng"
    shutil.copytree(cap, bad)
    c = read_capture(bad)
    train, test = c.views_of("train")[1], c.views_of("test")
    data = (bad / train.image).read_bytes()
    (bad / train.image).write_bytes(data[: len(data) // 2])  # header intact: only decoding finds it
    for v in test:
        (bad / v.image).write_bytes((bad / v.image).read_bytes()[:60])
    new = tmp_path / "new"
    rc, _, err = cli(capsys, "create", new, "--capture", bad, *STEPS)
    assert rc == 2 and f"{bad}/{train.image}: corrupt or truncated PNG" in err and err.count("\n") == 1
    assert not new.exists()  # nothing was written
    av = copy_avatar(made, tmp_path)
    before = snapshot(av)
    rc, _, err = cli(capsys, "eval", av, "--capture", bad, "--quiet")
    assert rc == 2 and "corrupt or truncated PNG" in err and any(v.image in err for v in test)
    # not a PNG at all: the reader refuses it from the header
    (bad / train.image).write_bytes(b"GIF89a" + data[6:])
    rc, _, err = cli(capsys, "create", av, "--capture", bad, "--resume", *STEPS)
    assert rc == 2 and f"{train.image}: " in err
    assert snapshot(av) == before and not new.exists()


def test_damaged_avatar_files(tmp_path, made, cap, capsys):
    av = copy_avatar(made, tmp_path)
    w = av / "versions" / "1" / "weights.safetensors"
    good = w.read_bytes()

    def refused(msg, commands=("render", "eval")):
        before = snapshot(av)
        for cmd in commands:
            args = {"render": ["render", av, "--appearance", "outfit-a", "--capture", cap, "--out", tmp_path / "o"],
                    "eval": ["eval", av, "--capture", cap, "--quiet"],
                    "history": ["history", av], "prune": ["prune", av, "--keep", 1]}[cmd]  # fmt: skip
            rc, _, err = cli(capsys, *args)
            assert rc == 2 and msg in err, (cmd, err)
        assert snapshot(av) == before and not (tmp_path / "o").exists()

    w.write_bytes(good[: len(good) - 1000])  # truncated
    refused(f"{w}: checksum differs from state.json (the file was truncated or edited)")
    edited = bytearray(good)
    edited[-5] ^= 0xFF
    w.write_bytes(bytes(edited))  # same size, one value edited
    refused(f"{w}: checksum differs from state.json")

    # a tensor of the wrong shape, with a matching checksum: the shape check refuses it
    w.write_bytes(good)
    tensors = safetensors.torch.load_file(w)
    name = next(k for k, v in tensors.items() if v.ndim == 2 and not k.startswith("replay."))
    shape = tuple(tensors[name].shape)
    tensors[name] = torch.cat([tensors[name], tensors[name][:1]])
    blob = safetensors.torch.save(tensors)
    w.write_bytes(blob)
    st = json.loads((w.parent / "state.json").read_text())
    st["weights_sha256"] = hashlib.sha256(blob).hexdigest()
    (w.parent / "state.json").write_text(json.dumps(st, indent=1))
    wrong = (shape[0] + 1, *shape[1:])
    refused(f"{w}: tensor {name!r} is {wrong} torch.float32, expected {shape} torch.float32")

    # avatar.json of an unknown schema version: every command refuses it
    w.write_bytes(good)
    st["weights_sha256"] = hashlib.sha256(good).hexdigest()
    (w.parent / "state.json").write_text(json.dumps(st, indent=1))
    meta = json.loads((av / "avatar.json").read_text())
    (av / "avatar.json").write_text(json.dumps({**meta, "version": 99}))
    refused(f"{av / 'avatar.json'}: version 99 is not supported (this perennial reads version 1)",
            ("render", "eval", "history", "prune"))  # fmt: skip


def test_disk_full(tmp_path, made, cap, template, capsys, monkeypatch):
    def disk_full(path, data):
        raise OSError(28, "No space left on device")

    # a new version of an existing avatar (what learn does)
    av = copy_avatar(made, tmp_path)
    before = snapshot(av)
    with monkeypatch.context() as m:
        m.setattr("perennial.avatar.store._write_file", disk_full)
        with pytest.raises(AvatarWriteError, match="versions/2: cannot write \\(No space left on device\\)"):
            write_second_version(av, template)
    assert snapshot(av) == before

    # create: disk full on avatar.json, or on the version, leaves no avatar folder
    new = tmp_path / "new"
    with monkeypatch.context() as m:
        m.setattr("perennial.avatar.store._write_file", disk_full)
        rc, _, err = cli(capsys, "create", new, "--capture", cap, *STEPS)
    assert rc == 2 and f"{new / 'avatar.json'}: cannot write (No space left on device)" in err
    assert not new.exists()
    real = store_module._write_file
    new.mkdir()  # an empty folder that was there before is left as it was
    with monkeypatch.context() as m:
        m.setattr("perennial.avatar.store._write_file",
                  lambda p, d: real(p, d) if p.name.startswith(".avatar.json") or p.name == "switches" else disk_full(p, d))  # fmt: skip
        rc, _, err = cli(capsys, "create", new, "--capture", cap, *STEPS)
    assert rc == 2 and f"{new / 'versions' / '1'}: cannot write (No space left on device)" in err
    assert list(new.iterdir()) == []
    # disk full while writing a checkpoint of a resumed create: a clear error, the previous checkpoint stays
    cfg = preset("field", "create", meta=None, steps=12, rays_per_step=64, checkpoint_every=5)
    from perennial.learn import engine

    real_ckpt = engine.save_checkpoint

    def stop_after_first(*args, **kw):
        real_ckpt(*args, **kw)
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(engine, "save_checkpoint", stop_after_first)
        with pytest.raises(KeyboardInterrupt):
            create_avatar(new, read_capture(cap), cfg, progress=False, template=template)
    def second_fails(tensors, path, *args, **kw):  # the next checkpoint (step 10) finds the disk full
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as m:
        m.setattr("safetensors.torch.save_file", second_fails)
        with pytest.raises(CheckpointError, match="checkpoint: cannot write a checkpoint \\(No space left on device\\)"):
            create_avatar(new, read_capture(cap), cfg, resume=True, progress=False, template=template)
    assert json.loads((new / "checkpoint" / "state.json").read_text())["step"] == 5
    rc, _, err = cli(capsys, "create", new, "--capture", cap, "--resume", *STEPS)
    assert rc == 0, err
    assert AvatarStore(new).current_number() == 1


# ---------------------------------------------------------------------------- crash safety

# `perennial create` (checkpoints every 5 steps: CHECKPOINT below); KILL_AT stops it with SIGKILL at an exact point.
WRAPPER = r"""
import os, signal, sys
at = os.environ.get("KILL_AT", "")
die = lambda: os.kill(os.getpid(), signal.SIGKILL)
if at == "checkpoint":  # second checkpoint: old one moved away, new one not yet in place
    real_rename = os.rename
    def rename(a, b):
        real_rename(a, b)
        if ".checkpoint.old-" in str(b):
            die()
    os.rename = rename
elif at == "version":  # weights of the new version written, state.json not yet
    import perennial.avatar.store as s
    real_write = s._write_file
    def write(p, d):
        if p.name == "state.json":
            die()
        real_write(p, d)
    s._write_file = write
elif at == "switch":  # version complete and renamed into place, `current` not yet switched
    real_replace = os.replace
    def replace(a, b):
        if ".current-" in str(a):
            die()
        real_replace(a, b)
    os.replace = replace
from perennial.cli import main
sys.exit(main(sys.argv[1:]))
"""


def start_create(av, cap, kill_at=""):
    env = {**os.environ, "KILL_AT": kill_at, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-c", WRAPPER, "create", str(av), "--capture", str(cap), *STEPS, *CHECKPOINT]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(path, proc, timeout=60.0):
    t0 = time.monotonic()
    while not path.exists() and proc.poll() is None and time.monotonic() - t0 < timeout:
        time.sleep(0.01)


def test_sigkill_create_then_resume(tmp_path, made, cap, template, capsys):
    rng = random.Random(20240)
    trials = [("checkpoint", None), ("version", None), ("switch", None)]
    trials += [("", rng.uniform(0.0, 1.3) * made["seconds"]) for _ in range(2)]  # random moments in training
    outcomes = []
    for i, (at, delay) in enumerate(trials):
        av = tmp_path / f"k{i}"
        p = start_create(av, cap, at)
        if delay is not None:
            wait_for(av / "checkpoint", p)  # training has started
            time.sleep(delay)
            p.send_signal(signal.SIGKILL)
        p.communicate(timeout=120)
        store = AvatarStore(av)
        cur = store.current_number() if store.root.exists() else None
        if cur is not None:  # complete: version 1, loads
            assert cur == 1 and store.version_numbers() == [1]
            load_field_avatar(store, template=template)
            outcomes.append((at or f"{delay:.2f}s", p.returncode, "version 1"))
        else:
            if store.exists():
                rc, _, err = cli(capsys, "render", av, "--appearance", "outfit-a", "--capture", cap, "--out", tmp_path / "o")
                assert rc == 2 and "no complete version yet" in err
            rc, out, err = cli(capsys, "create", av, "--capture", cap, "--resume", *STEPS)
            assert rc == 0, err
            v = store.version()
            assert v.number == 1 and store.version_numbers() == [1]
            load_field_avatar(store, template=template)
            outcomes.append((at or f"{delay:.2f}s", p.returncode, f"resumed: {out.split(': ')[1].split(',')[0]}"))
        assert not [q for q in av.rglob(".*")], "leftovers of the interrupted write"
        assert not (av / "checkpoint").exists()
    print("kill trials:", outcomes)
    assert all(rc == -signal.SIGKILL or rc == 0 for _, rc, _ in outcomes)
    by = {name: res for name, _, res in outcomes}
    assert by["checkpoint"] == "resumed: 25 steps" and by["version"] == "resumed: 0 steps"  # from step 5 / 30
    assert by["switch"] == "resumed: 30 steps"  # the killed run's version, only switched to


def test_ctrl_c_stops_cleanly(tmp_path, cap, capsys, template):
    av = tmp_path / "av"
    p = start_create(av, cap)
    wait_for(av / "checkpoint", p)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 130, err
    assert "interrupted" in err and "--resume" in err and "Traceback" not in err
    store = AvatarStore(av)
    assert store.current_number() is None
    rc, _, err = cli(capsys, "create", av, "--capture", cap, "--resume", *STEPS)
    assert rc == 0, err
    assert store.current_number() == 1 and not (av / "checkpoint").exists()
