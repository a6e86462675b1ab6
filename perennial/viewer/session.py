"""One browser tab of the viewer: its controls, its state and its render worker.

Every tab has its own camera (viser's orbit and zoom controls), appearance, motion,
playback clock, resolution and facial actions; the controls only change this state
and wake the tab's :class:`~perennial.viewer.render_loop.RenderWorker`, which renders
the newest state and sends it as the tab's background image.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from perennial.errors import PerennialError
from perennial.motion.clip import MotionClip
from perennial.viewer.camera import camera_from_view
from perennial.viewer.config import SIZES, ViewerConfig
from perennial.viewer.motions import REST, MotionLibrary, parse_uploaded_bvh, placed, safe_name
from perennial.viewer.render_loop import FrameStats, RenderJob, RenderWorker, render_job

__all__ = ["EXPRESSIVE_ACTIONS", "Shared", "TabSession", "facial_action_names"]

EXPRESSIVE_ACTIONS = ("jawOpen", "mouthSmileLeft", "mouthSmileRight", "eyeBlinkLeft", "eyeBlinkRight",
                      "browInnerUp", "mouthPucker", "cheekPuff")  # fmt: skip
"""ARKit facial actions offered as sliders for avatars that model the face."""
MAX_UPLOADS = 8
"""Uploaded clips a tab keeps (the oldest is dropped)."""
SLIDER_UPDATE_S = 0.2
"""While playing, the frame slider and the statistics follow at most this often, seconds."""


def facial_action_names(avatar) -> tuple[str, ...] | None:
    """The template's facial-action names when the avatar renders facial actions (texture
    avatars), else None (the field avatar ignores them)."""
    names = getattr(getattr(avatar, "template", None), "facial_action_names", None)
    return tuple(names) if names else None


@dataclass
class Shared:
    """What every tab of one viewer shares: the avatar (behind ``lock``), its motions, settings."""

    avatar: object
    lock: threading.Lock
    motions: MotionLibrary
    config: ViewerConfig
    title: str
    poses: dict = field(default_factory=dict)
    """The avatar's training poses per appearance (what Motion Distribution Align aligns to)."""


class TabSession:
    """The controls and render worker of one connected tab (a ``viser.ClientHandle``)."""

    def __init__(self, client, shared: Shared) -> None:
        self.client, self.shared = client, shared
        c = shared.config
        self._state = threading.Lock()
        self.appearance = shared.avatar.appearance_names[0]
        self.size = c.size
        self.follow = True
        self.align = c.align and bool(shared.poses)
        self._aligned: dict[int, torch.Tensor] = {}  # id(clip) -> its aligned poses
        self._uploads: dict[str, MotionClip] = {}
        self.motion_name, self.clip, problem = self._first_motion()
        self.playing = c.autoplay and self.clip.num_frames > 1
        self._clock = (time.perf_counter(), 0.0)  # (wall time, frame) when playback last (re)started
        self._camera_at: float | None = None  # time.time() of a camera change not yet answered
        self._have_camera = False
        self._last_ui = 0.0
        self._carried: tuple[tuple, object] | None = None  # (key, state) of the last frame of a temporal avatar
        self.stats = FrameStats()
        self.face_names = facial_action_names(shared.avatar)
        self.face = torch.zeros(len(self.face_names)) if self.face_names else None
        self.worker = RenderWorker(self._next_job, lambda job: render_job(shared.avatar, job, shared.lock),
                                   self._deliver, lambda: self.playing, c.fps, self._render_failed,
                                   name=f"perennial-render-{client.client_id}")  # fmt: skip
        self._build_gui()
        if problem:
            self._message(problem, error=True)
        client.camera.on_update(self._camera_moved)
        self.worker.start()

    def _first_motion(self) -> tuple[str, MotionClip, str]:
        """The first motion that loads (a bank's clip may be unreadable), and what went wrong before it."""
        motions = self.shared.motions
        try:
            return motions.names[0], motions.get(motions.names[0]), ""
        except PerennialError as e:
            return REST, motions.get(REST), f"{motions.names[0]}: {e}"

    # -- the controls --------------------------------------------------------------------------

    def _build_gui(self) -> None:
        gui, sh = self.client.gui, self.shared
        gui.add_markdown(f"**perennial** · {sh.title}")
        self.stats_md = gui.add_markdown("waiting for the first frame ...")
        self.appearance_dd = gui.add_dropdown("Appearance", tuple(sh.avatar.appearance_names), initial_value=self.appearance)
        self.appearance_dd.on_update(self._on_appearance)
        with gui.add_folder("Motion"):
            self.motion_dd = gui.add_dropdown("Motion", tuple(sh.motions.names), initial_value=self.motion_name)
            self.motion_dd.on_update(self._on_motion)
            self.play_btn = gui.add_button("Pause" if self.playing else "Play")
            self.play_btn.on_click(self._on_play)
            self.frame_sl = gui.add_slider("Frame", 0, max(self.clip.num_frames - 1, 1), 1, 0)
            self.frame_sl.on_update(self._on_scrub)
            self.follow_cb = gui.add_checkbox("Keep in place", self.follow, hint="pin the body's horizontal position")
            self.follow_cb.on_update(self._on_follow)
            self.align_cb = gui.add_checkbox("Align to training poses", self.align, disabled=not sh.poses,
                                             hint="Motion Distribution Align: each bone kept within the range "
                                                  "the avatar was trained with (root and path unchanged)")  # fmt: skip
            self.align_cb.on_update(self._on_align)
            mb = sh.config.max_upload_mb
            self.upload_btn = gui.add_upload_button(f"Upload BVH (max {mb:g} MB)", mime_type=".bvh")
            self.upload_btn.on_upload(self._on_upload)
            self.motion_md = gui.add_markdown("")
        with gui.add_folder("View"):
            sizes = sorted({*SIZES, sh.config.size})
            self.size_dd = gui.add_dropdown("Resolution", tuple(str(s) for s in sizes), initial_value=str(self.size),
                                            hint="render height in pixels; the width follows the window")  # fmt: skip
            self.size_dd.on_update(self._on_size)
        self.face_sl = []
        if self.face_names:
            with gui.add_folder("Face"):
                for name in (n for n in EXPRESSIVE_ACTIONS if n in self.face_names):
                    sl = gui.add_slider(name, 0.0, 1.0, 0.05, 0.0)
                    sl.on_update(lambda e, i=self.face_names.index(name): self._on_face(i, e.target.value))
                    self.face_sl.append(sl)
                gui.add_button("Neutral face").on_click(self._on_neutral)

    def _on_appearance(self, event) -> None:
        self.appearance = str(event.target.value)
        self.worker.changed()

    def _on_motion(self, event) -> None:
        name = str(event.target.value)
        try:
            clip = self._uploads[name] if name in self._uploads else self.shared.motions.get(name)
        except Exception as e:  # an unreadable bank clip: say so, keep serving
            self._message(f"{name}: {e}", error=True)
            return
        self._set_clip(name, clip)

    def _set_clip(self, name: str, clip: MotionClip) -> None:
        with self._state:
            self.motion_name, self.clip = name, clip
            self._clock = (time.perf_counter(), 0.0)
            self.playing = self.playing and clip.num_frames > 1
        self.frame_sl.max = max(clip.num_frames - 1, 1)
        self.frame_sl.value = 0
        self.play_btn.label = "Pause" if self.playing else "Play"
        self._message(f"{name}: {clip.num_frames} frames, {clip.duration:.1f} s")
        self.worker.changed()

    def _on_play(self, _event) -> None:
        with self._state:
            frame = self._frame_now()
            self.playing = not self.playing and self.clip.num_frames > 1
            self._clock = (time.perf_counter(), frame)
        self.play_btn.label = "Pause" if self.playing else "Play"
        self.worker.changed()

    def _on_scrub(self, event) -> None:
        if event.client is None:  # set by the playback itself
            return
        with self._state:
            self._clock = (time.perf_counter(), float(event.target.value))
        self.worker.changed()

    def _on_follow(self, event) -> None:
        self.follow = bool(event.target.value)
        self.worker.changed()

    def _on_align(self, event) -> None:
        self.align = bool(event.target.value) and bool(self.shared.poses)
        self.worker.changed()

    def pose_at(self, clip: MotionClip, frame: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(rotvec (J, 3), translation (3,)) of ``clip`` at ``frame`` as this tab shows it: aligned to the
        training poses when the tab asks for it, pinned in place when it follows."""
        rotvec = clip.rotvec
        if self.align:
            if id(clip) not in self._aligned:  # clips are kept by the library and the tab: ids stay theirs
                from perennial.avatar.drive import align_poses

                self._aligned[id(clip)] = align_poses(self.shared.poses, clip.rotvec)
            rotvec = self._aligned[id(clip)]
        translation = clip.translation[frame].clone()
        if self.follow:
            translation[:2] = self.shared.motions.base[:2]
        return rotvec[frame], translation

    def _on_size(self, event) -> None:
        self.size = int(event.target.value)
        self.worker.changed()

    def _on_face(self, index: int, value: float) -> None:
        with self._state:
            self.face[index] = float(value)
        self.worker.changed()

    def _on_neutral(self, _event) -> None:
        for sl in self.face_sl:
            sl.value = 0.0
        with self._state:
            self.face.zero_()
        self.worker.changed()

    def _on_upload(self, event) -> None:
        f = event.target.value
        try:
            clip = placed(parse_uploaded_bvh(f.name, f.content, self.shared.config.max_upload_bytes,
                                             self.shared.config.fps), self.shared.motions.base)  # fmt: skip
        except PerennialError as e:
            self._message(f"upload refused: {e}", error=True)
            return
        except Exception as e:  # never let a file end the server; the page says what happened
            self._message(f"upload failed: {type(e).__name__}: {e}", error=True)
            return
        name = f"upload: {safe_name(f.name)}"
        self._uploads.pop(name, None)
        self._uploads[name] = clip
        while len(self._uploads) > MAX_UPLOADS:
            self._uploads.pop(next(iter(self._uploads)))
        self.motion_dd.options = (*self.shared.motions.names, *self._uploads)
        self.motion_dd.value = name  # its callback selects the clip

    def _message(self, text: str, error: bool = False) -> None:
        self.motion_md.content = text
        if error:
            self.client.add_notification("perennial", text, color="red", auto_close_seconds=8.0)

    def _render_failed(self, message: str) -> None:
        with self._state:
            self.playing = False
        self.play_btn.label = "Play"
        self._message(f"render failed: {message}", error=True)

    # -- what the worker renders ---------------------------------------------------------------

    def _camera_moved(self, camera) -> None:
        self._have_camera = True
        if self._camera_at is None:
            self._camera_at = camera.update_timestamp  # time.time() when the server received it
        self.worker.changed()

    def _frame_now(self) -> float:
        """The motion frame shown now (fractional), from the playback clock."""
        start, frame = self._clock
        n = self.clip.num_frames
        if self.playing and n > 1:
            frame += (time.perf_counter() - start) * self.clip.fps
        return frame % n

    def _camera_ready(self) -> bool:
        """True once the tab has reported its camera (viser's camera properties fail before that)."""
        if not self._have_camera:
            try:
                self._have_camera = self.client.camera.update_timestamp > 0
            except AssertionError:
                return False
        return self._have_camera

    def _next_job(self) -> RenderJob | None:
        if not self._camera_ready():
            return None
        cam = self.client.camera
        camera = camera_from_view(cam.wxyz, cam.position, cam.fov, cam.aspect, self.size)
        moved_at, self._camera_at = self._camera_at, None
        with self._state:
            f = int(self._frame_now())
            clip = self.clip
            face = None if self.face is None else self.face.clone()
        rotvec, translation = self.pose_at(clip, f)
        job = RenderJob(camera, rotvec, translation, self.appearance, face, moved_at)
        if getattr(self.shared.avatar, "temporal", False):
            job.key, job.previous = self._previous(clip, f, face)
        return job

    def _previous(self, clip: MotionClip, f: int, face) -> tuple[tuple, object]:
        """(key, previous) of frame ``f`` for an avatar with temporal attention. While a clip plays the
        tab renders at its own rate and skips frames: the frame before is the last one rendered when it
        was one of the 3 before ``f`` of the same clip, shown the same way (its carried state: no second
        pose); otherwise (a jump, a paused frame rendered again) the motion's frame ``f - 1``, so a paused
        frame looks the same however it was reached. Frame 0 is a still frame."""
        key = (id(clip), self.align, self.follow, self.appearance)
        if self._carried is not None:
            (last_key, last_f), state = self._carried
            if last_key == key and 0 < f - last_f <= 3:
                return (key, f), state
        if f == 0:
            return (key, f), None
        return (key, f), (*self.pose_at(clip, f - 1), face)

    def _deliver(self, job: RenderJob, rgb: np.ndarray, timings: dict[str, float]) -> None:
        if job.key is not None:
            self._carried = (job.key, job.state)
        t0 = time.perf_counter()
        self.client.scene.set_background_image(rgb, format="jpeg", jpeg_quality=self.shared.config.jpeg_quality)
        now = time.perf_counter()
        timings["send"] = (now - t0) * 1000.0
        if job.camera_moved_at is not None:
            self.stats.latency_ms = (time.time() - job.camera_moved_at) * 1000.0
        self.stats.add(timings, now)
        if now - self._last_ui >= SLIDER_UPDATE_S or not self.playing:
            self._last_ui = now
            self.stats_md.content = self.stats.summary(job.camera.width, job.camera.height)
            if self.playing:
                self.frame_sl.value = int(self._frame_now())

    def close(self) -> None:
        """Stop rendering for this tab (it disconnected)."""
        self.worker.stop()
