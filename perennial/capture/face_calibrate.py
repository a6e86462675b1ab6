"""Where MediaPipe's 478 face-mesh points lie on Anny's surface: found once by running the detector on Anny.

The face mesh has no published correspondence with Anny, so it is measured: Anny's neutral head is
rendered from the front in a procedural outfit (the same renderer as ``perennial synth``), the
detector finds its 478 points, and each point takes the triangle and barycentric weights of the
surface under its pixel. The result ships as ``capture/data/facemesh_on_anny.npz`` and the fitter
moves Anny's facial actions so that those surface points land on each frame's face mesh.
``python -m perennial.capture.face_calibrate`` remakes it (needs the ``.venv-mp`` detector).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

DATA = Path(__file__).with_name("data") / "facemesh_on_anny.npz"


def calibrate(out: Path = DATA, size: int = 512) -> dict:
    """Measure the correspondence and write it to ``out``; returns what was written."""
    from PIL import Image

    from perennial.body.anny import load_template
    from perennial.capture.detect import detect
    from perennial.capture.outfit import Outfit
    from perennial.capture.synth import BodyPainter
    from perennial.render.camera import Camera
    from perennial.render.raycast import render_hits

    template = load_template("anny")
    with torch.no_grad():
        posed = template(*template.rest_pose(1))
    verts, rest = posed.vertices[0], posed.rest_vertices[0]
    eyes = posed.joints[0, [template.bone_names.index("eye.L"), template.bone_names.index("eye.R")]].mean(0)
    centre = eyes + torch.tensor([0.0, 0.0, -0.03])
    cam = Camera.look_at([0.0, -0.55, float(centre[2])], centre.tolist(), size, size, fov_deg=28.0)
    painter = BodyPainter(template, Outfit.from_name("calibration", 0), rest, supersample=2)
    rgb, _ = painter.render(verts, cam)
    hit = render_hits(verts, template.faces, cam)
    with tempfile.TemporaryDirectory() as tmp:
        Image.fromarray(rgb).save(Path(tmp) / "face.png")
        det = detect(Path(tmp), Path(tmp) / "det", size=size, progress=False)
        face = np.load(det / "landmarks.npz")["face"][0]
    if not np.isfinite(face).all():
        raise RuntimeError("the face-mesh detector found no face on Anny's frontal render")
    uv = np.clip(np.round(face[:, :2]).astype(int), 0, size - 1)
    pix = uv[:, 1] * size + uv[:, 0]
    valid = hit.mask[pix].numpy()
    tri = template.faces[hit.face[pix].clamp_min(0)].numpy().astype(np.int32)
    bary = hit.bary[pix].numpy().astype(np.float32)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, vertices=tri, bary=bary, valid=valid)
    return {"vertices": tri, "bary": bary, "valid": valid}


def load_face_correspondence() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(478, 3) vertex ids, (478, 3) barycentric weights and (478,) validity of the shipped correspondence."""
    d = np.load(DATA)
    return torch.from_numpy(d["vertices"]).long(), torch.from_numpy(d["bary"]).float(), torch.from_numpy(d["valid"])


if __name__ == "__main__":
    res = calibrate()
    print(f"wrote {DATA}: {int(res['valid'].sum())} of 478 face-mesh points on Anny's surface")
    sys.exit(0)
