"""Rendering apart from the page: one worker thread per browser tab, newest request only.

A tab's worker renders what the tab shows *now* (its camera, the motion frame of the
playback clock, appearance, size, facial actions) and sends it; whatever changed
while it rendered is folded into the next request, so frames are dropped, never
queued: a slow avatar shows fewer frames per second, not older ones, and the page's
controls stay responsive because no callback waits for a render. Renders of all tabs
take turns on one lock around the avatar (its ray caster and buffers are shared).
"""

from __future__ import annotations

import inspect
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from perennial.render.camera import Camera

__all__ = ["FrameStats", "RenderJob", "RenderWorker", "render_job"]


@dataclass
class RenderJob:
    """One frame to render.

    Attributes:
        camera: world-to-camera, OpenCV, metres; its size is the render size.
        rotvec: (J, 3) pose, radians (Anny ``local-ref``).
        translation: (3,) root position, world metres.
        appearance: appearance name.
        facial_actions: (52,) ARKit weights in [0, 1], or None.
        camera_moved_at: ``time.time()`` when the server received the camera change this
            frame is the first answer to, or None.
        previous: for an avatar with temporal attention (``avatar.temporal``), the frame before:
            the ``state`` of an earlier render, or the pose ``(rotvec, translation, facial_actions)``
            of the motion's previous frame; None: a still frame.
        key: what the tab needs to know whether this frame's ``state`` can serve a later frame.
        state: set by :func:`render_job`: what the next frame of the clip needs (temporal avatars).
    """

    camera: Camera
    rotvec: Tensor
    translation: Tensor
    appearance: str
    facial_actions: Tensor | None = None
    camera_moved_at: float | None = None
    previous: object | None = None
    key: tuple | None = None
    state: object | None = None


@dataclass
class FrameStats:
    """Frames delivered to one tab: rate over a sliding window and the last frame's timings.

    Attributes:
        window_s: seconds of history the rate is measured over.
        timings: stage -> ms of the last frame (the avatar's own stages, ``render``
            (all of the avatar's work) and ``send`` (JPEG encoding and queueing)).
        latency_ms: the last delay from a camera change to its frame being sent, ms.
    """

    window_s: float = 2.0
    timings: dict[str, float] = field(default_factory=dict)
    latency_ms: float | None = None
    frames: int = 0
    _sent: deque = field(default_factory=deque)

    def add(self, timings: dict[str, float], now: float | None = None) -> None:
        now = time.perf_counter() if now is None else now
        self._sent.append(now)
        self.frames += 1
        while self._sent and now - self._sent[0] > self.window_s:
            self._sent.popleft()
        self.timings = dict(timings)

    def fps(self, now: float | None = None) -> float:
        """Frames per second delivered over the window (0 with fewer than two frames in it)."""
        now = time.perf_counter() if now is None else now
        recent = [t for t in self._sent if now - t <= self.window_s]
        if len(recent) < 2:
            return 0.0
        return (len(recent) - 1) / max(recent[-1] - recent[0], 1e-6)

    def summary(self, width: int, height: int, now: float | None = None) -> str:
        """One line for the page: rate, size, total render and per-stage times, send time, latency."""
        t = self.timings
        stages = [k for k in t if k not in ("render", "send")]
        parts = [f"{self.fps(now):.1f} FPS", f"{width}x{height}", f"render {t.get('render', 0):.0f} ms"]
        if stages:
            parts.append("(" + ", ".join(f"{k} {t[k]:.0f}" for k in stages) + ")")
        parts.append(f"send {t.get('send', 0):.0f} ms")
        if self.latency_ms is not None:
            parts.append(f"camera to frame {self.latency_ms:.0f} ms")
        return " · ".join(parts)


def _takes_timings(avatar) -> bool:
    try:
        return "timings" in inspect.signature(avatar.render_image).parameters
    except (TypeError, ValueError):
        return False


def render_job(avatar, job: RenderJob, lock: threading.Lock) -> tuple[np.ndarray, dict[str, float]]:
    """Render ``job`` under ``lock``: (H, W, 3) uint8 RGB and stage -> ms.

    Texture avatars report their stages (``render_image(timings=True)``); every avatar
    reports ``render``, the whole call.
    """
    timed = _takes_timings(avatar)
    with lock, torch.no_grad():
        t0 = time.perf_counter()
        if getattr(avatar, "temporal", False):  # causal: the frame before is part of the input
            out = avatar.render_image(job.camera, job.rotvec, job.translation, job.appearance, job.facial_actions,
                                      timings=True, previous=job.previous)  # fmt: skip
            job.state = out.state
        elif timed:
            out = avatar.render_image(job.camera, job.rotvec, job.translation, job.appearance, job.facial_actions,
                                      timings=True)  # fmt: skip
        else:
            out = avatar.render_image(job.camera, job.rotvec, job.translation, job.appearance, job.facial_actions)
        rgb = out.rgb.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8).cpu().numpy()
        total = (time.perf_counter() - t0) * 1000.0
    timings = dict(getattr(out, "timings", None) or {}) if timed else {}
    timings["render"] = total
    return rgb, timings


class RenderWorker:
    """The render thread of one tab.

    Args:
        next_job: returns the frame the tab should show now, or None when there is
            nothing to show yet; called on the worker thread.
        render: ``job -> (rgb uint8 (H, W, 3), timings)``.
        deliver: sends a rendered frame to the tab (called on the worker thread).
        playing: True while a motion plays (the worker then renders continuously).
        max_fps: frames per second never exceeded, frames/s.
        on_error: receives the message of a render that failed (the worker then waits
            for the next change instead of dying).
    """

    def __init__(self, next_job: Callable[[], RenderJob | None],
                 render: Callable[[RenderJob], tuple[np.ndarray, dict[str, float]]],
                 deliver: Callable[[RenderJob, np.ndarray, dict[str, float]], None],
                 playing: Callable[[], bool], max_fps: float,
                 on_error: Callable[[str], None] | None = None, name: str = "perennial-render") -> None:  # fmt: skip
        self._next_job, self._render, self._deliver, self._playing = next_job, render, deliver, playing
        self._on_error = on_error
        self._period = 1.0 / max_fps
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._version = 0
        self._vlock = threading.Lock()
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self.thread.start()

    def changed(self) -> None:
        """Something the tab shows changed: render again (once, however many changes arrive)."""
        with self._vlock:
            self._version += 1
        self._wake.set()

    def stop(self, timeout: float | None = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        if self.thread.is_alive() and threading.current_thread() is not self.thread:
            self.thread.join(timeout)

    def _run(self) -> None:
        done = -1  # the version last rendered
        last_start = 0.0
        while not self._stop.is_set():
            with self._vlock:
                version = self._version
            if version == done and not self._playing():
                self._wake.wait(0.25)
                self._wake.clear()
                continue
            wait = last_start + self._period - time.perf_counter()
            if wait > 0:
                self._stop.wait(wait)
                continue
            last_start = time.perf_counter()
            try:
                job = self._next_job()
                if job is None:
                    self._wake.wait(0.1)
                    continue
                done = version
                rgb, timings = self._render(job)
                if not self._stop.is_set():
                    self._deliver(job, rgb, timings)
            except Exception as e:  # a failed frame must not end the tab's rendering
                done = version
                if self._on_error is not None:
                    self._on_error(f"{type(e).__name__}: {e}")
                traceback.print_exc()
