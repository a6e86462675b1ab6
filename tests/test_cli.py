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
