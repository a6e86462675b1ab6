import json
import multiprocessing as mp
import os

import pytest
import torch

from perennial.avatar.store import AvatarBusy, AvatarError, AvatarStore

BODY = {"template": "anny", "rig": "anny", "phenotype": {"height": 0.5}}


def state(name):
    """The fields every version's state.json has (see perennial.avatar.schema)."""
    cam = {"K": [[30, 0, 16], [0, 30, 16], [0, 0, 1]], "R": [[1, 0, 0], [0, 1, 0], [0, 0, 1]], "t": [0, 0, 3],
           "width": 32, "height": 32}  # fmt: skip
    record = {"name": name, "capture": {"path": "/cap", "sha256": "0" * 64}, "cameras": {"c": cam}, "frames": [0]}
    return {"appearances": [record], "history_entry": {"action": "learn", "appearance": name}}


def make(tmp_path, versions=2):
    s = AvatarStore(tmp_path / "av")
    with s.lock():
        s.initialise(BODY, "field")
        for i in range(versions):
            s.write_version({"w": torch.full((3, 2), float(i))}, state(f"a{i}"), {"psnr": 20.0 + i})
    return s


def expected():
    return {"w": ((3, 2), torch.float32)}


def snapshot(root):
    out = {}
    for dirpath, _, files in os.walk(root):
        for f in files:
            p = os.path.join(dirpath, f)
            if f != "lock":
                out[p] = open(p, "rb").read()
    out["current"] = os.readlink(os.path.join(root, "current"))
    return out


def test_versions_switch_and_load(tmp_path):
    s = make(tmp_path)
    assert s.version_numbers() == [1, 2] and s.current_number() == 2
    v = s.version()
    assert v.state["appearances"][0]["name"] == "a1" and v.metrics["psnr"] == 21.0
    assert v.state["parent"] == 1 and v.state["schema"] == 2
    assert torch.equal(s.load_weights(v, expected())["w"], torch.ones(3, 2))
    s.switch(1)  # rollback keeps later versions
    assert s.current_number() == 1 and s.version_numbers() == [1, 2]
    assert s.prune(keep=1) == ([], [])  # version 1 is current, version 2 is newest
    s.switch(2)
    assert s.prune(keep=1) == ([1], []) and s.version_numbers() == [2]


def test_bad_weights_are_refused(tmp_path):
    s = make(tmp_path)
    v = s.version()
    w = v.path / "weights.safetensors"
    data = w.read_bytes()
    w.write_bytes(data[: len(data) // 2])
    with pytest.raises(AvatarError, match="weights.safetensors: checksum"):
        s.load_weights(v)
    w.write_bytes(data[:-4] + b"\x00\x00\x80\x7f")  # same size, edited value
    with pytest.raises(AvatarError, match="checksum"):
        s.load_weights(v)
    w.write_bytes(data)
    with pytest.raises(AvatarError, match="'w' is \\(3, 2\\) torch.float32, expected \\(4, 2\\)"):
        s.load_weights(v, {"w": ((4, 2), torch.float32)})
    with pytest.raises(AvatarError, match="names differ"):
        s.load_weights(v, {"w": ((3, 2), torch.float32), "b": ((1,), torch.float32)})
    with pytest.raises(AvatarError, match="expected \\(3, 2\\) torch.float16"):
        s.load_weights(v, {"w": ((3, 2), torch.float16)})
    # deleting the checksum does not turn verification off: the version is refused
    doc = json.loads((v.path / "state.json").read_text())
    del doc["weights_sha256"]
    (v.path / "state.json").write_text(json.dumps(doc))
    with pytest.raises(AvatarError, match="state.json: weights_sha256: missing"):
        s.version()


def test_unknown_schema_version(tmp_path):
    s = make(tmp_path, versions=1)
    doc = json.loads(s.meta_path.read_text())
    doc["version"] = 99
    s.meta_path.write_text(json.dumps(doc))
    with pytest.raises(AvatarError, match="avatar.json: version 99 is not supported"):
        s.version()


def _hold_lock(root, ready, release):
    with AvatarStore(root).lock():
        ready.set()
        release.wait(10)


def test_one_writer_at_a_time(tmp_path):
    s = make(tmp_path, versions=1)
    ctx = mp.get_context("fork")
    ready, release = ctx.Event(), ctx.Event()
    p = ctx.Process(target=_hold_lock, args=(s.root, ready, release))
    p.start()
    assert ready.wait(10)
    with pytest.raises(AvatarBusy, match="busy, being updated by pid"), s.lock():
        pass
    p.kill()  # a killed writer does not leave the avatar locked
    p.join()
    with s.lock():
        pass


def test_failed_write_changes_nothing(tmp_path, monkeypatch):
    s = make(tmp_path)
    before = snapshot(s.root)

    def disk_full(path, data):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("perennial.avatar.store._write_file", disk_full)
    with pytest.raises(OSError, match="No space"), s.lock():
        s.write_version({"w": torch.zeros(3, 2)}, state("x"), {})
    assert snapshot(s.root) == before
    assert not list((s.root / "versions").glob(".tmp-*"))
