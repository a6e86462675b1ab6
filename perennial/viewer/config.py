"""Settings of the web viewer (``perennial view``), one dataclass whose fields become options."""

from __future__ import annotations

import ipaddress
import math
from dataclasses import dataclass

from perennial.errors import ConfigError

__all__ = ["SIZES", "ViewerConfig", "is_loopback"]

SIZES = (64, 128, 192, 256, 384, 512, 768, 1024)
"""Render heights offered in the page's resolution picker, pixels."""


def is_loopback(host: str) -> bool:
    """True when ``host`` only accepts connections from this machine (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(kw_only=True)
class ViewerConfig:
    """What ``perennial view`` serves and how."""

    host: str = "127.0.0.1"
    """Address to listen on; anything but a loopback address exposes the viewer to the network."""
    port: int = 8080
    """TCP port of the page and its WebSocket; the next free port is taken when it is busy."""
    size: int = 256
    """Render height in pixels (the width follows the browser window's aspect); changeable in the page."""
    fps: float = 30.0
    """Frame rate of the motions, frames/s (clips are resampled to it) and the most frames/s sent to a tab."""
    max_upload_mb: float = 5.0
    """Largest BVH file a page may upload, megabytes; larger ones are refused before parsing."""
    jpeg_quality: int = 90
    """JPEG quality of the frames sent to the browser, 1-100."""
    autoplay: bool = True
    """Start playing the motion when a tab connects (off: paused on its first frame)."""
    align: bool = False
    """Start with Motion Distribution Align on (each bone kept within its training range; a checkbox in the page)."""

    def __post_init__(self) -> None:
        if not isinstance(self.port, int) or not 1 <= self.port <= 65535:
            raise ConfigError(f"--port must be 1 to 65535, got {self.port}")
        if not isinstance(self.size, int) or not 8 <= self.size <= 4096:
            raise ConfigError(f"--size must be 8 to 4096 pixels, got {self.size}")
        if not (math.isfinite(self.fps) and 0 < self.fps <= 240):
            raise ConfigError(f"--fps must be in (0, 240] frames/s, got {self.fps:g}")
        if not (math.isfinite(self.max_upload_mb) and 0 < self.max_upload_mb <= 1024):
            raise ConfigError(f"--max-upload-mb must be in (0, 1024] MB, got {self.max_upload_mb:g}")
        if not 1 <= self.jpeg_quality <= 100:
            raise ConfigError(f"--jpeg-quality must be 1 to 100, got {self.jpeg_quality}")
        if not self.host:
            raise ConfigError("--host must not be empty")

    @property
    def exposed(self) -> bool:
        """True when the viewer listens beyond this machine."""
        return not is_loopback(self.host)

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)
