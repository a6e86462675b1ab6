"""``perennial view``: the web viewer of an avatar (:mod:`perennial.viewer`).

Options come from :class:`perennial.viewer.config.ViewerConfig`. The viewer binds
127.0.0.1 unless ``--host`` says otherwise, and then warns: anyone who can reach the
address can watch the avatar and upload BVH files (size-limited, parsed strictly).
"""

from __future__ import annotations

import argparse
import sys
import threading

from perennial.config import add_options, options_given, override
from perennial.errors import PerennialError

VIEW_OPTIONS = ["host", "port", "size", "fps", "max_upload_mb", "jpeg_quality", "autoplay", "align"]


def exposure_warning(host: str) -> str | None:
    """The warning printed when the viewer listens beyond this machine, else None."""
    from perennial.viewer.config import is_loopback

    if is_loopback(host):
        return None
    return (f"warning: listening on {host}: anyone who can reach this address can watch the avatar and "
            "upload BVH files; there is no login. Use the default 127.0.0.1 (with an SSH tunnel) "
            "unless the network is trusted.")  # fmt: skip


def _cmd_view(a: argparse.Namespace, stop: threading.Event | None = None) -> int:
    from perennial.avatar.io import load_avatar
    from perennial.viewer.config import ViewerConfig

    config = override(ViewerConfig(), options_given(a))
    try:
        import viser  # noqa: F401
    except ImportError:
        raise PerennialError("the viewer needs the 'viser' package: pip install 'perennial-avatar[viewer]'") from None
    avatar, version, poses = load_avatar(a.avatar)
    from perennial.viewer.server import Viewer

    warning = exposure_warning(config.host)
    if warning:
        print(warning, file=sys.stderr)
    viewer = Viewer(avatar, config, poses, a.motion, title=f"{a.avatar} (version {version.number})")
    print(f"perennial view: {a.avatar} version {version.number}, appearances "
          f"{', '.join(avatar.appearance_names)}; open {viewer.url} (Ctrl-C stops)", flush=True)  # fmt: skip
    try:
        (stop or threading.Event()).wait()
    except KeyboardInterrupt:
        pass
    finally:
        viewer.stop()
    print("perennial view: stopped")
    return 0


def add_view_commands(sub) -> None:
    """Register ``view`` on the main parser's subcommands."""
    from perennial.viewer.config import ViewerConfig

    v = sub.add_parser("view", help="web viewer: pick an outfit, drive it with a motion, orbit it in the browser",
                       description="Serve a page that shows the avatar rendered on this machine from the "
                                   "browser's camera (drag to orbit, scroll to zoom), with an appearance "
                                   "picker, built-in motions, a clip or bank (--motion) or an uploaded BVH, "
                                   "play/pause/scrub, resolution, facial actions (texture avatars) and frames "
                                   "per second with per-stage times. Several tabs may connect.")  # fmt: skip
    v.add_argument("avatar", help="avatar folder")
    v.add_argument("--motion", help="a .bvh/.amc/.npz clip or a motion bank (folder or .npz) to offer first")
    add_options(v, ViewerConfig(), VIEW_OPTIONS)
    v.set_defaults(func=_cmd_view)
