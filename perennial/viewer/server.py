"""The web viewer: an avatar rendered on the server for each browser tab, shown by viser's client.

viser (a maintained library with a browser client) serves the page, its WebSocket,
the orbit and zoom camera controls and the control panel; perennial renders each tab's
view with the avatar protocol (``render_image``) and sends it as the tab's background
image. viser serves only its own client files (no file browsing; ``..`` is refused) and
the frames; the share button, which would open a public tunnel, is hidden.
"""

from __future__ import annotations

import math
import sys
import threading
from pathlib import Path

from perennial.viewer.config import ViewerConfig
from perennial.viewer.motions import MotionLibrary, standing_root
from perennial.viewer.session import Shared, TabSession

__all__ = ["Viewer"]

INITIAL_DISTANCE_M = 3.2
INITIAL_FOV_DEG = 36.0


class Viewer:
    """A running viewer of one avatar (started by the constructor; :meth:`stop` ends it).

    Args:
        avatar: any avatar of the protocol in :mod:`perennial.avatar.io`.
        config: address, sizes, limits.
        poses: the avatar's training poses per appearance (from ``load_avatar``): where the
            body stands, and a "training poses" motion.
        motion: a clip file or a bank (folder or ``.npz``) offered first, or None.
        title: shown at the top of the control panel (e.g. the avatar folder).

    Raises:
        PerennialError: ``motion`` cannot be read.
    """

    def __init__(self, avatar, config: ViewerConfig | None = None, poses: dict | None = None,
                 motion: str | Path | None = None, title: str = "avatar") -> None:  # fmt: skip
        import viser

        self.config = c = config or ViewerConfig()
        poses = poses or {}
        base = standing_root(poses)
        first = poses.get(avatar.appearance_names[0]) if avatar.appearance_names else None
        motions = MotionLibrary(base, c.fps, first, motion)
        self.shared = Shared(avatar=avatar, lock=threading.Lock(), motions=motions, config=c, title=title,
                             poses={k: v for k, v in poses.items() if "rotvec" in v})  # fmt: skip
        self.sessions: dict[int, TabSession] = {}
        self._sessions_lock = threading.Lock()
        self.server = viser.ViserServer(host=c.host, port=c.port, label="perennial", verbose=False)
        self.server.gui.configure_theme(show_share_button=False, control_width="large")
        self.server.gui.main_panel.dock_right()
        self.server.scene.set_up_direction("+z")
        bx, by, bz = (float(v) for v in base)
        cam = self.server.initial_camera
        cam.position = (bx, by - INITIAL_DISTANCE_M, bz + 0.15)
        cam.look_at = (bx, by, bz)
        cam.up = (0.0, 0.0, 1.0)
        cam.fov = math.radians(INITIAL_FOV_DEG)
        self.server.on_client_connect(self._connect)
        self.server.on_client_disconnect(self._disconnect)

    @property
    def port(self) -> int:
        """The port actually listened on (the next free one when the asked one was busy)."""
        return self.server.get_port()

    @property
    def url(self) -> str:
        host = self.config.host
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}/"

    def _connect(self, client) -> None:
        try:
            session = TabSession(client, self.shared)
        except Exception as e:  # a tab that cannot be set up must not end the server
            print(f"perennial view: tab {client.client_id}: {type(e).__name__}: {e}", file=sys.stderr)
            raise
        with self._sessions_lock:
            self.sessions[client.client_id] = session

    def _disconnect(self, client) -> None:
        with self._sessions_lock:
            session = self.sessions.pop(client.client_id, None)
        if session is not None:
            session.close()

    def stop(self) -> None:
        """Stop every tab's rendering and the server."""
        with self._sessions_lock:
            sessions, self.sessions = list(self.sessions.values()), {}
        for s in sessions:
            s.close()
        self.server.stop()

