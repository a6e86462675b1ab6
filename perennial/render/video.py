"""Writing frame sequences as MP4 (imageio-ffmpeg ships its own ffmpeg) or GIF."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np

from perennial.errors import ConfigError


def write_video(path: str | Path, frames: Iterable[np.ndarray], fps: float = 30.0) -> Path:
    """Write uint8 RGB frames (H, W, 3) to ``path``.

    ``.mp4`` uses H.264 through imageio-ffmpeg (frame sides are padded to even
    sizes); ``.gif`` uses Pillow. If imageio-ffmpeg is missing, an ``.mp4``
    request fails with a message that names the package and the GIF fallback.

    Returns:
        The path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix.lower()
    if suffix == ".gif":
        from PIL import Image

        imgs = [Image.fromarray(f) for f in frames]
        if not imgs:
            raise ValueError("write_video: no frames")
        imgs[0].save(path, save_all=True, append_images=imgs[1:], duration=round(1000 / fps), loop=0)
        return path
    if suffix != ".mp4":
        raise ConfigError(f"{path}: video must end in .mp4 or .gif")
    try:
        import imageio.v2 as imageio
        import imageio_ffmpeg  # noqa: F401  (the ffmpeg binary)
    except ImportError as e:
        raise ValueError(
            f"{path}: writing MP4 needs 'imageio' and 'imageio-ffmpeg' "
            "(pip install 'perennial-avatar[video]'), or ask for a .gif"
        ) from e
    count = 0
    # imageio-ffmpeg writes yuv420p by default, which every player reads
    with imageio.get_writer(path, fps=fps, codec="libx264", quality=8, macro_block_size=1) as writer:
        for f in frames:
            h, w = f.shape[:2]
            writer.append_data(np.pad(f, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge"))
            count += 1
    if count == 0:
        raise ValueError("write_video: no frames")
    return path
