import subprocess
import sys


def run(*args):
    return subprocess.run([sys.executable, "-m", "perennial.cli", *args], capture_output=True, text=True)


def test_help_lists_commands():
    r = run("--help")
    assert r.returncode == 0
    for cmd in ("synth", "demo", "bench"):
        assert cmd in r.stdout
    r = run("synth", "--help")
    assert r.returncode == 0 and "--cameras" in r.stdout and "pixels" in r.stdout


def test_synth_cli_and_bad_input(tmp_path):
    out = tmp_path / "cap"
    r = run("synth", str(out), "--cameras", "2", "--frames", "1", "--size", "24", "--quiet", "--preview")
    assert r.returncode == 0, r.stderr
    assert (out / "capture.json").exists() and (out / "preview.png").exists()
    before = (out / "capture.json").read_bytes()
    r = run("synth", str(out), "--cameras", "2", "--frames", "1", "--size", "24", "--quiet")
    assert r.returncode == 2 and "not empty" in r.stderr and "Traceback" not in r.stderr
    assert (out / "capture.json").read_bytes() == before
    r = run("synth", str(tmp_path / "other"), "--motion", "dance", "--quiet")
    assert r.returncode == 2 and "unknown motion" in r.stderr


def test_synth_and_render_driven_by_a_clip(tmp_path):
    from perennial.motion.clip import MotionClip
    from perennial.motion.procedural import procedural_motion

    rv, off = procedural_motion("walk", 12)
    clip = MotionClip(rv, off + 0.87, fps=30.0, source="test walk")
    clip.translation[:, 0] += 5.0  # far from the origin: synth recentres it
    clip.save(tmp_path / "walk.npz")
    r = run("synth", str(tmp_path / "cap"), "--motion", str(tmp_path / "walk.npz"),
            "--cameras", "2", "--frames", "3", "--size", "24", "--quiet")  # fmt: skip
    assert r.returncode == 0, r.stderr
    from perennial.capture import read_capture

    cap = read_capture(tmp_path / "cap")
    assert cap.body.translation[:, 0].abs().max() < 0.5
    assert all(cap.load_mask(v).mean() > 0.02 for v in cap.views)  # the person is in view
    r = run("synth", str(tmp_path / "cap2"), "--motion", str(tmp_path / "walk.npz"), "--frames", "99", "--quiet")
    assert r.returncode == 2 and "fewer than the 99" in r.stderr
    r = run("motion", "render", str(tmp_path / "walk.npz"), "--out", str(tmp_path / "w.gif"), "--size", "32")
    assert r.returncode == 0, r.stderr
    from PIL import Image

    assert Image.open(tmp_path / "w.gif").n_frames == 12


def test_motion_import_cli(tmp_path):
    bad = tmp_path / "bad.bvh"
    bad.write_text("HIERARCHY\nROOT Hips\n{\n")
    r = run("motion", "import", str(bad), "--out", str(tmp_path / "bank.npz"), "--quiet")
    assert r.returncode == 2 and "nothing imported, no bank written" in r.stderr and "bad.bvh" in r.stderr
    assert "Traceback" not in r.stderr and list(tmp_path.iterdir()) == [bad]  # no empty bank, no leftovers
