"""The web viewer (``perennial view``), its parts and the page in a real browser.

The browser tests drive Debian's Chromium (``/usr/bin/chromium``) with playwright
(never a downloaded browser). Outside the project's setup they are skipped, saying
what is missing; ``make test`` installs Chromium and sets ``PERENNIAL_BROWSER_TESTS=required``,
so there a missing browser fails instead.

``PERENNIAL_VIEWER_AVATAR=DIR`` runs the browser test on that avatar (at least two
appearances) instead of the tiny one it trains, and ``PERENNIAL_VIEWER_DOCS=FILE.png``
copies its final screenshot there (how docs/viewer.png is made).
"""

from __future__ import annotations

import io
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch

from perennial.errors import PerennialError
from perennial.viewer.camera import camera_from_view
from perennial.viewer.config import ViewerConfig, is_loopback
from perennial.viewer.motions import MotionLibrary, UploadError, parse_uploaded_bvh, safe_name
from perennial.viewer.render_loop import FrameStats, RenderJob, RenderWorker

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip
"""What Chromium needs on a closed network (no connections to Google's hosts at start)."""


def _chromium() -> str | None:
    for p in (shutil.which("chromium"), "/usr/bin/chromium"):
        if p and os.access(p, os.X_OK):
            return p
    return None


def _need_browser() -> str:
    missing = []
    for module in ("viser", "playwright.sync_api"):
        try:
            __import__(module)
        except ImportError:
            missing.append(f"the Python package {module.split('.')[0]!r}")
    path = _chromium()
    if path is None:
        missing.append("Debian's chromium (/usr/bin/chromium)")
    if missing:
        why = f"the viewer's browser test needs {' and '.join(missing)}; `make test` installs them"
        if os.environ.get("PERENNIAL_BROWSER_TESTS") == "required":
            pytest.fail(why)
        pytest.skip(why)
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(cond, timeout: float, what: str):
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        value = cond()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


# -- parts, no browser --------------------------------------------------------------------------


def test_camera_from_view_matches_look_at():
    """The browser's pose (camera-to-world quaternion, centre, vertical fov) gives perennial's camera."""
    from perennial.render.camera import Camera
    from perennial.viewer.camera import quat_to_matrix

    ref = Camera.look_at([0.7, -3.0, 1.4], [0.0, 0.0, 0.9], 200, 100, fov_deg=40.0)
    R_wc = ref.R.T.double().numpy()
    # the quaternion of R_wc (trace > 0 here), checked through quat_to_matrix
    w = np.sqrt(1 + np.trace(R_wc)) / 2
    q = np.array([w, (R_wc[2, 1] - R_wc[1, 2]) / (4 * w), (R_wc[0, 2] - R_wc[2, 0]) / (4 * w),
                  (R_wc[1, 0] - R_wc[0, 1]) / (4 * w)])  # fmt: skip
    assert np.allclose(quat_to_matrix(q), R_wc, atol=1e-6)
    try:  # the same convention as viser's own (w, x, y, z)
        from viser.transforms import SO3

        assert np.allclose(SO3(q).as_matrix(), R_wc, atol=1e-6)
    except ImportError:
        pass
    cam = camera_from_view(q, ref.center.numpy(), np.radians(40.0), 2.0, 100)
    assert (cam.width, cam.height) == (200, 100)
    for a, b in ((cam.K, ref.K), (cam.R, ref.R), (cam.t, ref.t)):
        assert torch.allclose(a, b, atol=1e-4)
    uv, depth = cam.project(torch.tensor([[0.0, 0.0, 0.9]]))  # the target is at the image centre
    assert torch.allclose(uv, torch.tensor([[99.5, 49.5]]), atol=1e-3) and depth.item() > 0


def test_host_check_warning_and_bad_options(tmp_path):
    from perennial.cli import main
    from perennial.cli_view import exposure_warning

    for host in ("127.0.0.1", "127.0.0.2", "localhost", "::1"):
        assert is_loopback(host) and exposure_warning(host) is None
    for host in ("0.0.0.0", "192.168.1.5", "::", "example.org"):
        assert not is_loopback(host)
        assert "anyone who can reach" in exposure_warning(host)
    assert ViewerConfig().host == "127.0.0.1" and not ViewerConfig().exposed
    for bad in ({"port": 70000}, {"size": 4}, {"max_upload_mb": 0.0}, {"jpeg_quality": 0}):
        with pytest.raises(PerennialError):
            ViewerConfig(**bad)
    assert main(["view", str(tmp_path / "nothing")]) == 2  # one line on stderr, exit code 2
    assert main(["view", str(tmp_path), "--port", "70000"]) == 2


SMALL_BVH = """HIERARCHY
ROOT hip
{
  OFFSET 0 0 0
  CHANNELS 6 Xposition Yposition Zposition Zrotation Xrotation Yrotation
  End Site
  {
    OFFSET 0 10 0
  }
}
MOTION
Frames: 2
Frame Time: 0.033333
0 0 0 0 0 0
0 0 0 0 0 0
"""


def test_upload_is_size_limited_and_parsed_strictly():
    with pytest.raises(UploadError, match="over the limit"):
        parse_uploaded_bvh("big.bvh", b"x" * 2001, max_bytes=2000, fps=30.0)
    with pytest.raises(UploadError, match="only .bvh"):
        parse_uploaded_bvh("../../etc/passwd", b"root:x:0:0", max_bytes=2000, fps=30.0)
    with pytest.raises(UploadError, match="not a text file"):
        parse_uploaded_bvh("a.bvh", b"HIERARCHY\n\xff\xfe", max_bytes=2000, fps=30.0)
    with pytest.raises(UploadError, match="empty"):
        parse_uploaded_bvh("a.bvh", b"", max_bytes=2000, fps=30.0)
    assert safe_name("../../x/<b>y.bvh") == "_b_y.bvh" and safe_name("C:\\a\\z.bvh") == "z.bvh"
    bad = SMALL_BVH.replace("Frames: 2", "Frames: 3").encode()
    with pytest.raises(PerennialError, match=r"a\.bvh.*line"):  # the strict reader names the line
        parse_uploaded_bvh("a.bvh", bad, max_bytes=2000, fps=30.0)


def test_motion_library_builtins_clip_and_bank(tmp_path):
    from perennial.motion.clip import MotionClip
    from perennial.motion.procedural import procedural_motion

    base = torch.tensor([0.5, -0.2, 0.9])
    rv, off = procedural_motion("walk", 10)
    clip_path = MotionClip(rv, off + torch.tensor([3.0, 4.0, 0.9]), 10.0, "test").save(tmp_path / "walk.npz")
    lib = MotionLibrary(base, 30.0, {"rotvec": rv, "translation": off + base}, clip_path)
    assert lib.names[0] == "walk.npz" and {"walk", "wave", "squat", "turn", "training poses"} <= set(lib.names)
    clip = lib.get("walk.npz")  # resampled to 30 frames/s, placed over the standing root
    assert clip.fps == 30.0 and clip.num_frames == 30
    assert torch.allclose(clip.translation[0, :2], base[:2]) and abs(clip.translation[0, 2].item() - 0.9 - off[0, 2].item()) < 1e-5  # height kept
    walk = lib.get("walk")
    assert walk.num_frames == 60 and torch.allclose(walk.translation[0, :2], base[:2])
    with pytest.raises(PerennialError):
        lib.get("moonwalk")
    np.savez(tmp_path / "bank.npz", format=np.array("perennial-motion-bank-npz"), version=np.array(1),
             fps=np.array(10.0), bones=np.array(clip.bones), rotvec=torch.cat([rv, rv[:4]]).numpy(),
             translation=torch.cat([off, off[:4]]).numpy(), clip=np.array([0] * 10 + [1] * 4),
             clip_names=np.array(["a", "b"]), clip_sources=np.array(["", ""]))  # fmt: skip
    bank = MotionLibrary(base, 10.0, None, tmp_path / "bank.npz")
    assert bank.names[:2] == ["a", "b"] and bank.get("b").num_frames == 4
    with pytest.raises(PerennialError):
        MotionLibrary(base, 30.0, None, tmp_path / "missing.bvh")


def test_render_worker_drops_frames_instead_of_queueing():
    """Changes that arrive while a frame renders fold into one next frame showing the newest state."""
    state = {"v": 0}
    rendered, delivered = [], []

    def render(job):
        rendered.append(job.appearance)
        time.sleep(0.15)
        return np.zeros((2, 2, 3), np.uint8), {}

    def next_job():
        from perennial.render.camera import Camera

        cam = Camera.look_at([0, -3, 1], [0, 0, 1], 2, 2)
        return RenderJob(cam, torch.zeros(1, 3), torch.zeros(3), str(state["v"]))

    w = RenderWorker(next_job, render, lambda job, rgb, t: delivered.append(job.appearance), lambda: False, 1000.0)
    w.start()
    try:
        for i in range(1, 41):  # 40 changes in ~0.4 s
            state["v"] = i
            w.changed()
            time.sleep(0.01)
        _wait(lambda: delivered and delivered[-1] == "40", 5, "the newest state to be shown")
        time.sleep(0.3)
    finally:
        w.stop()
    assert len(rendered) <= 6, rendered  # not 40: the frames in between were dropped
    assert delivered[-1] == "40"


def test_frame_stats():
    s = FrameStats(window_s=2.0)
    for i in range(11):
        s.add({"render": 40.0, "send": 2.0}, now=100.0 + 0.1 * i)
    assert s.fps(now=101.0) == pytest.approx(10.0)
    s.latency_ms = 80.0
    line = s.summary(256, 256, now=101.0)
    assert "10.0 FPS" in line and "render 40 ms" in line and "camera to frame 80 ms" in line


# -- the page in a real browser -----------------------------------------------------------------


@pytest.fixture(scope="module")
def avatar_dir(tmp_path_factory, template):
    """A tiny field avatar with two appearances that render differently (~10 s), or $PERENNIAL_VIEWER_AVATAR."""
    if os.environ.get("PERENNIAL_VIEWER_AVATAR"):
        return Path(os.environ["PERENNIAL_VIEWER_AVATAR"])
    from perennial.capture.synth import SynthConfig, synthesize
    from perennial.learn.continual import learn_appearance
    from perennial.learn.create import create_avatar
    from perennial.learn.methods import preset

    root = tmp_path_factory.mktemp("viewer")
    caps = [synthesize(root / name, SynthConfig(appearance=name, cameras=2, frames=2, size=48, supersample=1,
                                                test_camera_every=0, test_frame_every=0), progress=False)
            for name in ("outfit-a", "outfit-h")]  # fmt: skip
    create_avatar(root / "av", caps[0], preset("field", "create", meta=None, steps=150, rays_per_step=256, checkpoint_every=0),
                  progress=False, template=template)  # fmt: skip
    learn_appearance(root / "av", caps[1], "finetune", preset("field", "finetune", steps=150, rays_per_step=256,
                                                               checkpoint_every=0), progress=False, template=template)  # fmt: skip
    return root / "av"


def _canvas(page) -> np.ndarray:
    """The 3D canvas as the page shows it, (H, W, 3) float 0-255."""
    from PIL import Image

    boxes = [c.bounding_box() for c in page.locator("canvas").all()]
    box = max((b for b in boxes if b), key=lambda b: b["width"] * b["height"])
    return np.asarray(Image.open(io.BytesIO(page.screenshot(clip=box))).convert("RGB"), dtype=np.float32)


def _settled(page, timeout: float = 60) -> np.ndarray:
    """The canvas once two screenshots 0.3 s apart agree (the newest frame is on screen)."""
    prev = _canvas(page)
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        time.sleep(0.3)
        cur = _canvas(page)
        if np.abs(cur - prev).mean() < 0.02 and cur.max() > 0:
            return cur
        prev = cur
    raise AssertionError("the canvas did not settle")


def _changed(page, before: np.ndarray, timeout: float = 60, min_diff: float = 0.3) -> tuple[np.ndarray, float]:
    """Wait until the canvas differs from ``before``; (image, seconds it took)."""
    t0 = time.perf_counter()
    diff = 0.0
    while time.perf_counter() - t0 < timeout:
        img = _canvas(page)
        diff = float(np.abs(img - before).mean())
        if diff > min_diff:
            return img, time.perf_counter() - t0
        time.sleep(0.02)
    raise AssertionError(f"the shown image did not change in {timeout:.0f} s (mean difference {diff:.3f})")


def _bvh_sample(tmp_path: Path) -> Path | None:
    """The first 40 frames of a CMU sample clip (shared/data/motion/cmu), or None when absent."""
    from perennial.evaluate.bench import default_bvh_samples

    samples = default_bvh_samples()
    if not samples:
        return None
    lines = Path(samples[0]).read_text().splitlines()
    at = next(i for i, ln in enumerate(lines) if ln.startswith("Frames:"))
    lines[at] = "Frames: 40"
    out = tmp_path / "walk.bvh"
    out.write_text("\n".join(lines[: at + 2 + 40]) + "\n")
    return out


def _slider(page, label: str):
    """The thumb of the page's slider called ``label`` (keys move it: End, Home, arrows)."""
    for_id = page.locator("label", has_text=re.compile(f"^{label}$")).get_attribute("for")
    return page.locator(f"[id='{for_id}'] [role=slider]")


def _pick_appearance_orbit_zoom(page, session, name: str, figures: dict) -> None:
    first = _settled(page)
    assert first.max() > 50, "the avatar is not on screen"
    assert np.abs(_canvas(page) - first).mean() < 0.02  # nothing changes by itself when paused
    page.get_by_label("Appearance").click()
    page.get_by_role("option", name=name, exact=True).click()
    _changed(page, first)
    assert session.appearance == name
    switched = _settled(page)
    # orbit: a drag in the canvas moves this tab's camera and the view
    cam = session.client.camera
    pos0 = cam.position.copy()
    box = page.locator("canvas").first.bounding_box()
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(cx, cy)
    page.mouse.down()
    page.mouse.move(cx + 160, cy + 20, steps=8)
    page.mouse.up()
    _, figures["drag_to_frame_s"] = _changed(page, switched)
    assert np.linalg.norm(cam.position - pos0) > 0.1
    orbited = _settled(page)
    # zoom: scrolling brings the camera closer to its target
    dist0 = np.linalg.norm(cam.position - cam.look_at)
    page.mouse.move(cx, cy)
    page.mouse.wheel(0, -250)
    _, figures["scroll_to_frame_s"] = _changed(page, orbited)
    _wait(lambda: np.linalg.norm(cam.position - cam.look_at) < 0.95 * dist0, 10, "the zoom")
    assert "FPS" in page.get_by_text(re.compile(r"\d+\.\d FPS")).first.inner_text()


def _play_pause_scrub(page, session, ws_frames: list, figures: dict) -> None:
    page.get_by_role("button", name="Play").click()
    _wait(lambda: session.playing, 10, "playback")
    page.wait_for_timeout(500)  # (playwright hands over the page's events while it waits)
    n0, t0 = len(ws_frames), time.perf_counter()
    page.wait_for_timeout(4000)
    images = [t for t, size in ws_frames[n0:] if size > 1500]  # messages that carry a frame
    figures["browser_fps"] = len(images) / (time.perf_counter() - t0)
    figures["server_fps"] = session.stats.fps()
    t_click = time.perf_counter()
    page.get_by_role("button", name="Pause").click()  # the page answers while frames stream
    page.get_by_role("button", name="Play").wait_for(timeout=5000)
    figures["pause_answer_s"] = time.perf_counter() - t_click
    assert not session.playing and len(images) >= 3
    before = _settled(page)
    _slider(page, "Frame").press("Home")
    _wait(lambda: int(session._frame_now()) == 0, 10, "the scrub to frame 0")
    _changed(page, before)


def _align(page, session, poses: dict) -> None:
    """The page's MDA checkbox: the tab then renders the clip's poses aligned to the training poses."""
    from perennial.avatar.drive import align_poses

    clip, frames = session.clip, session.stats.frames
    aligned = align_poses(poses, clip.rotvec)
    assert not torch.equal(aligned, clip.rotvec)  # the clip leaves the 4 training poses' range
    box = page.get_by_label("Align to training poses")
    box.check()
    _wait(lambda: session.align, 10, "alignment on")
    _wait(lambda: session.stats.frames > frames, 30, "a frame rendered aligned")
    assert torch.equal(session.pose_at(clip, 0)[0], aligned[0])
    box.uncheck()
    _wait(lambda: not session.align, 10, "alignment off")
    assert torch.equal(session.pose_at(clip, 0)[0], clip.rotvec[0])


def _uploads(page, session, config: ViewerConfig, tmp_path: Path) -> None:
    upload = page.locator("input[type=file]")
    big = tmp_path / "big.bvh"
    big.write_bytes(b"HIERARCHY\n" + b" " * config.max_upload_bytes)  # over the default limit, 5 MB
    upload.set_input_files(str(big))
    page.get_by_text("over the limit").first.wait_for(timeout=20000)
    broken = tmp_path / "broken.bvh"
    broken.write_text(SMALL_BVH.replace("Frames: 2", "Frames: 3"))
    upload.set_input_files(str(broken))
    page.get_by_text(re.compile(r"broken\.bvh.*line")).first.wait_for(timeout=20000)
    sample = _bvh_sample(tmp_path)
    if sample is not None:  # a real clip plays (resampled to the viewer's rate, same duration)
        upload.set_input_files(str(sample))
        _wait(lambda: session.motion_name == "upload: walk.bvh", 60, "the uploaded clip")
        frame_time = float(re.search(r"Frame Time:\s*(\S+)", sample.read_text()).group(1))
        assert session.clip.fps == config.fps and abs(session.clip.duration - 40 * frame_time) <= 1 / config.fps


def test_viewer_in_browser(avatar_dir, template, tmp_path):
    """Open the page in headless Chromium: pick an appearance, orbit, zoom, a second tab, play, pause,
    scrub, uploads; save a screenshot."""
    chromium = _need_browser()
    from playwright.sync_api import sync_playwright

    from perennial.avatar.io import load_avatar
    from perennial.viewer.server import Viewer

    t_start = time.perf_counter()
    avatar, version, poses = load_avatar(avatar_dir, template=template)
    assert len(avatar.appearance_names) >= 2
    config = ViewerConfig(port=_free_port(), size=int(os.environ.get("PERENNIAL_VIEWER_SIZE", "128")), autoplay=False)
    viewer = Viewer(avatar, config, poses, title=f"{avatar_dir.name} (version {version.number})")
    figures: dict = {}
    try:
        with sync_playwright() as p:
            # playwright gives each launch a fresh temporary profile (--user-data-dir)
            browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
            page = browser.new_page(viewport={"width": 1100, "height": 700})
            ws_frames: list[tuple[float, int]] = []
            page.on("websocket", lambda ws: ws.on("framereceived", lambda data: ws_frames.append(
                (time.perf_counter(), len(data)))))  # fmt: skip
            page.goto(viewer.url)
            session = _wait(lambda: next(iter(viewer.sessions.values()), None), 30, "the tab's session")
            _wait(lambda: session.stats.frames >= 1, 60, "the first frame")
            _pick_appearance_orbit_zoom(page, session, avatar.appearance_names[1], figures)
            for button in page.locator(".mantine-Notification-root button").all():
                button.click()  # (viser's note that WebGL runs in software here)
            _settled(page)
            shot = tmp_path / "viewer.png"
            page.screenshot(path=str(shot))
            assert shot.stat().st_size > 10_000
            if os.environ.get("PERENNIAL_VIEWER_DOCS"):
                shutil.copyfile(shot, os.environ["PERENNIAL_VIEWER_DOCS"])

            page2 = browser.new_page(viewport={"width": 900, "height": 600})  # its own camera and frames
            page2.goto(viewer.url)
            _wait(lambda: len(viewer.sessions) == 2, 30, "the second tab")
            other = next(s for s in viewer.sessions.values() if s is not session)
            _wait(lambda: other.stats.frames >= 1, 60, "the second tab's first frame")
            assert np.linalg.norm(other.client.camera.position - session.client.camera.position) > 0.1
            page2.close()
            _wait(lambda: len(viewer.sessions) == 1, 30, "the second tab's session to end")

            _play_pause_scrub(page, session, ws_frames, figures)
            _align(page, session, poses)
            _uploads(page, session, config, tmp_path)
            assert viewer.server.get_port() == config.port  # still serving
            page.screenshot(path=str(tmp_path / "viewer-uploads.png"))
            browser.close()
    finally:
        viewer.stop()
    figures["test_s"] = time.perf_counter() - t_start
    print("viewer figures:", figures)


def test_texture_avatar_face_sliders_in_browser(template):
    """A texture avatar (untrained: only its controls are checked) gets facial-action sliders and
    per-stage timings on screen; a slider moved in the page reaches the render."""
    chromium = _need_browser()
    from playwright.sync_api import sync_playwright

    from perennial.avatar.texture.dual import ClipState
    from perennial.avatar.texture.model import TextureAvatar, TextureConfig
    from perennial.viewer.server import Viewer
    from perennial.viewer.session import EXPRESSIVE_ACTIONS

    avatar = TextureAvatar(template, appearances=["plain"], config=TextureConfig(temporal_attention=True)).eval()
    viewer = Viewer(avatar, ViewerConfig(port=_free_port(), size=96, autoplay=False), None, title="texture")
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
            page = browser.new_page(viewport={"width": 1000, "height": 800})
            page.goto(viewer.url)
            session = _wait(lambda: next(iter(viewer.sessions.values()), None), 30, "the tab's session")
            _wait(lambda: session.stats.frames >= 1, 60, "the first frame")
            for name in EXPRESSIVE_ACTIONS:
                page.locator("label", has_text=re.compile(f"^{name}$")).wait_for(timeout=10000)
            stats = page.get_by_text(re.compile(r"FPS .*generator \d+")).first
            stats.wait_for(timeout=20000)
            for stage in ("pose", "raster", "texture", "face", "hands", "attention", "generator", "send"):
                assert stage in stats.inner_text()
            # temporal attention: every frame hands its state to the next
            assert isinstance(session._carried[1], ClipState)
            frames = session.stats.frames
            _slider(page, "jawOpen").press("End")
            jaw = session.face_names.index("jawOpen")
            _wait(lambda: session.face[jaw].item() == 1.0, 10, "jawOpen to reach the server")
            _wait(lambda: session.stats.frames > frames, 30, "a frame with the jaw open")
            browser.close()
    finally:
        viewer.stop()


def test_tab_gives_a_temporal_avatar_the_frame_before():
    """While a clip plays, frame f sees the last frame rendered (its carried state) when that was one of
    the 3 before it, shown the same way; otherwise the motion's frame f - 1; frame 0 is a still frame."""
    from types import SimpleNamespace

    from perennial.motion.clip import MotionClip
    from perennial.viewer.session import TabSession

    clip = MotionClip(rotvec=torch.arange(10.0)[:, None, None].expand(10, 2, 3).contiguous(),
                      translation=torch.zeros(10, 3), fps=30.0, bones=("a", "b"))  # fmt: skip
    tab = SimpleNamespace(_carried=None, align=False, follow=True, appearance="a",
                          pose_at=lambda c, f: (c.rotvec[f], c.translation[f]))  # fmt: skip
    face = torch.zeros(52)
    key, previous = TabSession._previous(tab, clip, 5, face)
    assert torch.equal(previous[0], clip.rotvec[4]) and previous[2] is face  # nothing carried yet
    assert TabSession._previous(tab, clip, 0, face)[1] is None
    state = object()
    tab._carried = (key, state)  # frame 5 was rendered
    assert TabSession._previous(tab, clip, 7, face)[1] is state  # two frames skipped while playing
    assert TabSession._previous(tab, clip, 9, face)[1] is not state  # a jump: the motion's frame 8
    assert torch.equal(TabSession._previous(tab, clip, 9, face)[1][0], clip.rotvec[8])
    assert TabSession._previous(tab, clip, 5, face)[1] is not state  # frame 5 again (paused): frame 4
    tab.appearance = "b"
    assert TabSession._previous(tab, clip, 6, face)[1] is not state  # shown otherwise since


def test_view_command_serves_only_the_page(avatar_dir):
    """``perennial view`` binds 127.0.0.1, serves its page, refuses paths outside it and stops on Ctrl-C."""
    port = _free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "perennial.cli", "view", str(avatar_dir), "--port", str(port),
                             "--no-autoplay"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)  # fmt: skip
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True).start()
    try:
        _wait(lambda: any("open http://127.0.0.1:" in ln for ln in lines), 120, "the viewer to start")
        assert not any("warning" in ln for ln in lines)
        page = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10).read().decode()
        assert "<html" in page.lower()
        for path in ("/../pyproject.toml", "/%2e%2e/%2e%2e/setup.py", "/..%2f..%2fREADME.md", "/_viser.py"):
            with pytest.raises(urllib.error.HTTPError) as e:
                urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10)
            assert e.value.code == 404
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert any("stopped" in ln for ln in lines)

