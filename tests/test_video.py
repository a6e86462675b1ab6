import numpy as np
import pytest
from PIL import Image

from perennial.render.video import write_video


def frames(n=6, h=33, w=31):
    return [np.full((h, w, 3), 20 * i, np.uint8) for i in range(n)]


def test_mp4_round_trip(tmp_path):
    imageio = pytest.importorskip("imageio.v2")
    p = write_video(tmp_path / "v.mp4", frames(), fps=12)
    reader = imageio.get_reader(p)
    got = [f for f in reader]
    assert len(got) == 6 and got[0].shape == (34, 32, 3)  # padded to even sides
    assert abs(float(got[5][:33, :31].mean()) - 100) < 4  # H.264 keeps flat colours


def test_gif_and_errors(tmp_path):
    p = write_video(tmp_path / "v.gif", frames(), fps=10)
    assert Image.open(p).n_frames == 6
    with pytest.raises(ValueError, match=r"\.mp4 or \.gif"):
        write_video(tmp_path / "v.avi", frames())
    with pytest.raises(ValueError, match="no frames"):
        write_video(tmp_path / "e.gif", [])
