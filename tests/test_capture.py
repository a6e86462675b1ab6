"""Tests of the in-memory Capture and the perennial-capture v1 reader and writer.

Every capture is built here with the writer: 2 cameras, 2 frames, 24x16 px images,
the real Anny bone list and zero rotations. Failure tests break one thing on disk
and check that the one CaptureError names the file and the field.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from perennial.body.rig import bone_names
from perennial.capture import (
    BodyParams,
    Capture,
    CaptureError,
    ViewData,
    read_capture,
    write_capture,
)
from perennial.render.camera import Camera

W, H = 24, 16  # pixels; not square, so a swapped width/height is caught
PHENOTYPE = {"gender": 0.5, "age": 0.6, "muscle": 0.5, "weight": 0.5, "height": 0.5,
             "proportions": 0.5}  # fmt: skip


def _cameras() -> dict[str, Camera]:
    return {
        "cam00": Camera.look_at([0.0, -3.0, 1.0], [0.0, 0.0, 1.0], W, H),
        "cam01": Camera.look_at([3.0, 0.0, 1.2], [0.0, 0.0, 1.0], W, H, fov_deg=30.0),
    }


def _body(frames: int = 2, facial: bool = False) -> BodyParams:
    bones = list(bone_names("anny"))
    translation = torch.tensor([[0.0, 0.0, 1.0], [0.1, 0.0, 1.0]])[:frames]
    if not facial:
        return BodyParams(bones, torch.zeros(frames, len(bones), 3), translation)
    weights = torch.linspace(0, 1, frames * 52).reshape(frames, 52)
    labels = [f"action{i:02d}" for i in range(52)]
    return BodyParams(bones, torch.zeros(frames, len(bones), 3), translation, weights, labels)


def _views(seed: int = 0) -> list[ViewData]:
    """cam00: frames 0, 1 train; cam01: frame 0 train, frame 1 test without mask."""
    rng = np.random.default_rng(seed)
    out = []
    for cam, frame, split in [("cam00", 0, "train"), ("cam00", 1, "train"),
                              ("cam01", 0, "train"), ("cam01", 1, "test")]:  # fmt: skip
        image = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
        mask = None if split == "test" else rng.integers(0, 2, (H, W), dtype=np.uint8) * 255
        out.append(ViewData(cam, frame, split, image, mask))
    return out


def _write(root: Path, **overrides) -> Capture:
    kwargs = dict(
        appearance="outfit-a",
        body_info={"template": "anny", "rig": "anny", "phenotype": PHENOTYPE},
        cameras=_cameras(),
        frames=[{"index": 0, "time": 0.0}, {"index": 1, "time": 1 / 30}],
        views_with_arrays=_views(),
        body=_body(),
    )
    kwargs.update(overrides)
    return write_capture(root, **kwargs)


@pytest.fixture
def cap_dir(tmp_path: Path) -> Path:
    root = tmp_path / "cap"
    _write(root)
    return root


def _edit_json(root: Path, edit) -> None:
    doc = json.loads((root / "capture.json").read_text())
    edit(doc)
    (root / "capture.json").write_text(json.dumps(doc))


def _edit_npz(root: Path, **changes) -> None:
    """Replace (or, with value None, drop) arrays of body.npz."""
    with np.load(root / "body.npz", allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    for key, value in changes.items():
        if value is None:
            arrays.pop(key)
        else:
            arrays[key] = value
    np.savez(root / "body.npz", **arrays)


def _raises(root: Path, message: str):
    """Assert that reading ``root`` fails with a message matching ``message`` (a regex)."""
    with pytest.raises(CaptureError, match=message) as info:
        read_capture(root)
    assert isinstance(info.value, ValueError)
    return info


# ----------------------------------------------------------------------------- round trip


def test_round_trip(tmp_path: Path) -> None:
    root = tmp_path / "cap"
    views = _views()
    written = _write(root, views_with_arrays=views)
    cap = read_capture(root)

    assert cap.root == root and written.root == root
    assert cap.appearance == "outfit-a"
    assert cap.body_info == {"template": "anny", "rig": "anny", "phenotype": PHENOTYPE}
    assert cap.frames == [{"index": 0, "time": 0.0}, {"index": 1, "time": 1 / 30}]
    for name, cam in _cameras().items():
        got = cap.cameras[name]
        assert (got.width, got.height) == (W, H)
        for a, b in [(got.K, cam.K), (got.R, cam.R), (got.t, cam.t)]:
            torch.testing.assert_close(a, b, rtol=0, atol=0)

    body = _body()
    assert cap.body.bones == list(bone_names("anny"))
    torch.testing.assert_close(cap.body.rotvec, body.rotvec)
    torch.testing.assert_close(cap.body.translation, body.translation)
    assert cap.body.rotvec.dtype == torch.float32 and cap.body.facial_actions is None

    assert [(v.camera, v.frame, v.split) for v in cap.views] == [
        (v.camera, v.frame, v.split) for v in views
    ]
    assert cap.views[0].image == "images/cam00/000000.png"
    assert cap.views[0].mask == "masks/cam00/000000.png"
    assert cap.views[3].mask is None
    assert len(cap.views_of("train")) == 3 and len(cap.views_of("test")) == 1
    for view, data in zip(cap.views, views):
        image = cap.load_image(view)
        assert image.shape == (H, W, 3) and image.dtype == torch.float32
        assert torch.equal((image * 255).round().to(torch.uint8), torch.from_numpy(data.image))
        mask = cap.load_mask(view)
        if data.mask is None:
            assert mask is None
        else:
            assert mask.shape == (H, W) and set(mask.unique().tolist()) <= {0.0, 1.0}
            assert torch.equal((mask * 255).to(torch.uint8), torch.from_numpy(data.mask))

    assert cap.frame_row(1) == 1
    rotvec, translation, facial = cap.body_params(1)
    assert rotvec.shape == (len(bone_names("anny")), 3) and facial is None
    torch.testing.assert_close(translation, torch.tensor([0.1, 0.0, 1.0]))
    with pytest.raises(KeyError):
        cap.frame_row(7)
    with pytest.raises(ValueError):
        cap.views_of("val")


def test_round_trip_facial_actions_float_images_and_frame_indices(tmp_path: Path) -> None:
    """Frame indices need not be rows; float [0, 1] pixels are stored as 8 bit."""
    image = torch.rand(H, W, 3)
    views = [ViewData("cam00", 10, "train", image, torch.ones(H, W)),
             ViewData("cam01", 20, "test", image.numpy())]  # fmt: skip
    frames = [{"index": 10, "time": 0.0}, {"index": 20, "time": 0.5}]
    cap = _write(tmp_path / "c", views_with_arrays=views, frames=frames, body=_body(facial=True))
    assert cap.views[0].image == "images/cam00/000010.png"
    assert cap.frame_row(20) == 1
    _, _, facial = cap.body_params(20)
    torch.testing.assert_close(facial, _body(facial=True).facial_actions[1])
    assert cap.body.facial_action_labels[0] == "action00"
    torch.testing.assert_close(cap.load_image(cap.views[0]), image, atol=0.5 / 255, rtol=0)
    assert torch.equal(cap.load_mask(cap.views[0]), torch.ones(H, W))


def test_content_hash_is_stable_and_sees_pixels(cap_dir: Path) -> None:
    first = read_capture(cap_dir).content_hash()
    assert re.fullmatch(r"[0-9a-f]{64}", first)
    assert read_capture(cap_dir).content_hash() == first
    path = cap_dir / "images/cam01/000001.png"
    pixels = np.array(Image.open(path))
    pixels[0, 0] ^= 1
    Image.fromarray(pixels).save(path)
    assert read_capture(cap_dir).content_hash() != first


# ----------------------------------------------------------------------------- writer


def test_writer_refuses_non_empty_root_unless_overwrite(cap_dir: Path) -> None:
    with pytest.raises(FileExistsError, match="not empty"):
        _write(cap_dir)
    cap = _write(cap_dir, appearance="outfit-b", overwrite=True)
    assert cap.appearance == "outfit-b" == read_capture(cap_dir).appearance
    assert sorted(p.name for p in cap_dir.parent.iterdir()) == ["cap"]  # no leftovers
    empty = cap_dir.parent / "empty"
    empty.mkdir()
    assert _write(empty).appearance == "outfit-a"


def test_writer_leaves_nothing_when_interrupted(tmp_path: Path, monkeypatch) -> None:
    from perennial.capture import writer as fmt

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(fmt, "_write_body", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _write(tmp_path / "cap")
    assert list(tmp_path.iterdir()) == []


def test_writer_validates_before_renaming(tmp_path: Path) -> None:
    cameras = _cameras()
    cameras["cam01"].R[0, 0] = float("nan")
    with pytest.raises(CaptureError, match=r"capture\.json: cameras\.cam01\.R contains NaN"):
        _write(tmp_path / "cap", cameras=cameras)
    assert list(tmp_path.iterdir()) == []
    bad_size = _views()
    bad_size[0].image = np.zeros((H + 1, W, 3), np.uint8)
    with pytest.raises(CaptureError, match=r"images/cam00/000000\.png: size 24x17 differs"):
        _write(tmp_path / "cap", views_with_arrays=bad_size)
    assert list(tmp_path.iterdir()) == []


def test_writer_reports_bad_body_info_as_capture_error(tmp_path: Path) -> None:
    with pytest.raises(CaptureError, match=r"capture\.json: missing required field body\.rig"):
        _write(tmp_path / "cap", body_info={"template": "anny", "phenotype": {}})
    assert list(tmp_path.iterdir()) == []


def test_writer_rejects_bad_arrays(tmp_path: Path) -> None:
    views = _views()
    views[0].image = np.zeros((H, W), np.uint8)
    with pytest.raises(ValueError, match="expected \\(H, W, 3\\)"):
        _write(tmp_path / "a", views_with_arrays=views)
    views = _views()
    views[0].mask = np.full((H, W), 2.0)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        _write(tmp_path / "b", views_with_arrays=views)
    views = _views()
    views[0].image = views[0].image.astype(np.int64)
    with pytest.raises(TypeError, match="int64"):
        _write(tmp_path / "c", views_with_arrays=views)
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- not a capture


def test_root_missing_file_or_without_capture_json(tmp_path: Path) -> None:
    _raises(tmp_path / "nope", "nope: not a perennial capture .directory does not exist")
    (tmp_path / "file").write_text("x")
    _raises(tmp_path / "file", "file: not a perennial capture .not a directory")
    (tmp_path / "empty").mkdir()
    _raises(tmp_path / "empty", "empty: not a perennial capture .no capture.json")


def test_invalid_json(cap_dir: Path) -> None:
    (cap_dir / "capture.json").write_text('{"format": "perennial-capture", ')
    _raises(cap_dir, r"capture\.json: invalid JSON at line 1")


def test_wrong_format(cap_dir: Path) -> None:
    _edit_json(cap_dir, lambda d: d.update(format="nerfstudio"))
    _raises(cap_dir, r"capture\.json: format is 'nerfstudio', expected 'perennial-capture'")


def test_unknown_version(cap_dir: Path) -> None:
    _edit_json(cap_dir, lambda d: d.update(version=2))
    _raises(cap_dir, r"capture\.json: version 2 is unknown")


@pytest.mark.parametrize(
    "drop, field",
    [
        (lambda d: d.pop("frames"), "frames"),
        (lambda d: d["cameras"]["cam00"].pop("K"), r"cameras\.cam00\.K"),
        (lambda d: d["views"][2].pop("image"), r"views\[2\]\.image"),
        (lambda d: d["body"].pop("rig"), r"body\.rig"),
        (lambda d: d["frames"][1].pop("time"), r"frames\[1\]\.time"),
    ],
)
def test_missing_required_field(cap_dir: Path, drop, field: str) -> None:
    _edit_json(cap_dir, drop)
    _raises(cap_dir, rf"capture\.json: missing required field {field}$")


def test_unknown_field(cap_dir: Path) -> None:
    _edit_json(cap_dir, lambda d: d["cameras"]["cam01"].update(distortion=[0, 0, 0, 0]))
    _raises(cap_dir, r"capture\.json: cameras\.cam01\.distortion is not a known field")


def test_missing_body_npz(cap_dir: Path) -> None:
    (cap_dir / "body.npz").unlink()
    _raises(cap_dir, r"body\.npz: file is missing")


# ----------------------------------------------------------------------------- cameras


@pytest.mark.parametrize(
    "key, value, shape",
    [
        ("K", [[300, 0, 12], [0, 300, 8]], r"\(2, 3\)"),
        ("R", [1, 0, 0, 0, 1, 0, 0, 0, 1], r"\(9,\)"),
        ("t", [0, 0, 3, 1], r"\(4,\)"),
        ("t", [[0, 0, 3]], r"\(1, 3\)"),
    ],
)
def test_camera_wrong_shape(cap_dir: Path, key: str, value, shape: str) -> None:
    _edit_json(cap_dir, lambda d: d["cameras"]["cam01"].update({key: value}))
    _raises(cap_dir, rf"capture\.json: cameras\.cam01\.{key} has shape {shape}, expected")


@pytest.mark.parametrize("key", ["K", "R", "t"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_camera_nan_or_inf(cap_dir: Path, key: str, bad: float) -> None:
    def edit(doc):
        value = doc["cameras"]["cam00"][key]
        if key == "t":
            value[1] = bad
        else:
            value[1][1] = bad

    _edit_json(cap_dir, edit)  # json writes NaN / Infinity tokens
    _raises(cap_dir, rf"capture\.json: cameras\.cam00\.{key} contains NaN or inf")


def test_camera_size_not_finite_or_not_integer(cap_dir: Path) -> None:
    _edit_json(cap_dir, lambda d: d["cameras"]["cam00"].update(width=24.5))
    _raises(cap_dir, r"capture\.json: cameras\.cam00\.width must be an integer >= 8, got 24\.5")
    _edit_json(cap_dir, lambda d: d["cameras"]["cam00"].update(width=1, height=1))  # 1x1 pixels teach nothing
    _raises(cap_dir, r"capture\.json: cameras\.cam00\.width must be an integer >= 8, got 1")


def test_appearance_name_follows_the_rule(cap_dir: Path) -> None:
    for bad in ("../../etc", "a/b", "two\nlines", " padded", "x" * 65):
        _edit_json(cap_dir, lambda d, bad=bad: d.update(appearance=bad))
        _raises(cap_dir, "capture\\.json: appearance .* breaks the name rule")
    _edit_json(cap_dir, lambda d: d.update(appearance="outfit.v2 (summer)"))
    assert read_capture(cap_dir).appearance == "outfit.v2 (summer)"


def test_frame_time_nan(cap_dir: Path) -> None:
    _edit_json(cap_dir, lambda d: d["frames"][1].update(time=float("nan")))
    _raises(cap_dir, r"capture\.json: frames\[1\]\.time is not finite")


def test_rotation_not_orthonormal(cap_dir: Path) -> None:
    def edit(doc):
        doc["cameras"]["cam01"]["R"][0][0] += 0.12

    _edit_json(cap_dir, edit)
    info = _raises(
        cap_dir, r"capture\.json: cameras\.cam01\.R is not orthonormal \(\|R R\^T - I\| = "
    )
    value = float(re.search(r"= ([0-9.e-]+)\)", str(info.value)).group(1))
    assert 0.1 < value < 0.4


def test_rotation_within_tolerance_is_accepted(cap_dir: Path) -> None:
    def edit(doc):
        doc["cameras"]["cam01"]["R"][0][0] += 2e-5  # below the 1e-4 tolerance

    _edit_json(cap_dir, edit)
    read_capture(cap_dir)


def test_rotation_with_negative_determinant(cap_dir: Path) -> None:
    def edit(doc):
        doc["cameras"]["cam00"]["R"][2] = [-x for x in doc["cameras"]["cam00"]["R"][2]]

    _edit_json(cap_dir, edit)
    _raises(cap_dir, r"capture\.json: cameras\.cam00\.R has det -1\.000, must be \+1")


def test_intrinsics_not_a_pinhole_matrix(cap_dir: Path) -> None:
    _edit_json(cap_dir, lambda d: d["cameras"]["cam00"]["K"].__setitem__(2, [0, 0, 2]))
    _raises(cap_dir, r"capture\.json: cameras\.cam00\.K must be \[\[fx, s, cx\]")


# ----------------------------------------------------------------------------- views and frames


def test_view_unknown_camera(cap_dir: Path) -> None:
    _edit_json(cap_dir, lambda d: d["views"][1].update(camera="cam07"))
    _raises(cap_dir, r"capture\.json: views\[1\]\.camera 'cam07' is not in cameras")


def test_view_frame_not_in_frames(cap_dir: Path) -> None:
    _edit_json(cap_dir, lambda d: d["views"][3].update(frame=5))
    _raises(cap_dir, r"capture\.json: views\[3\]\.frame 5 is not in frames")


def test_frame_without_body_row(cap_dir: Path) -> None:
    with np.load(cap_dir / "body.npz") as npz:
        rotvec, translation = npz["rotvec"], npz["translation"]
    _edit_npz(cap_dir, rotvec=rotvec[:1], translation=translation[:1])
    _raises(
        cap_dir,
        r"body\.npz: rotvec has 1 rows but capture\.json has 2 frames; "
        r"frame 1 \(frames\[1\]\) has no body parameters",
    )


def test_body_rows_without_frame(cap_dir: Path) -> None:
    _edit_json(cap_dir, lambda d: (d["frames"].pop(), d["views"].pop(), d["views"].pop(1)))
    _raises(cap_dir, r"body\.npz: rotvec has 2 rows but capture\.json has 1 frames")


def test_duplicate_frame_index(cap_dir: Path) -> None:
    _edit_json(cap_dir, lambda d: d["frames"][1].update(index=0))
    _raises(cap_dir, r"capture\.json: frames\[1\]\.index 0 appears twice")


@pytest.mark.parametrize("kind", ["image", "mask"])
def test_missing_image_or_mask_file(cap_dir: Path, kind: str) -> None:
    folder = "images" if kind == "image" else "masks"
    (cap_dir / folder / "cam01/000000.png").unlink()
    _raises(cap_dir, rf"^{folder}/cam01/000000\.png: file is missing$")


def test_image_size_differs_from_camera(cap_dir: Path) -> None:
    Image.new("RGB", (W, W)).save(cap_dir / "images/cam00/000001.png")
    _raises(
        cap_dir, rf"images/cam00/000001\.png: size {W}x{W} differs from camera cam00 \({W}x{H}\)"
    )


def test_mask_size_differs_from_camera(cap_dir: Path) -> None:
    Image.new("L", (W // 2, H // 2)).save(cap_dir / "masks/cam01/000000.png")
    _raises(cap_dir, rf"masks/cam01/000000\.png: size 12x8 differs from camera cam01 \({W}x{H}\)")


def test_image_or_mask_with_wrong_mode(cap_dir: Path) -> None:
    Image.new("RGB", (W, H)).save(cap_dir / "masks/cam00/000000.png")
    _raises(cap_dir, r"masks/cam00/000000\.png: mode RGB, expected 8-bit grayscale")
    Image.new("L", (W, H)).save(cap_dir / "masks/cam00/000000.png")
    Image.new("RGBA", (W, H)).save(cap_dir / "images/cam00/000000.png")
    _raises(cap_dir, r"images/cam00/000000\.png: mode RGBA, expected 8-bit RGB")


def test_image_that_is_not_a_png(cap_dir: Path) -> None:
    (cap_dir / "images/cam00/000000.png").write_bytes(b"not an image at all")
    _raises(cap_dir, r"images/cam00/000000\.png: cannot read PNG header")


def test_split_not_train_or_test(cap_dir: Path) -> None:
    _edit_json(cap_dir, lambda d: d["views"][0].update(split="val"))
    _raises(cap_dir, r"capture\.json: views\[0\]\.split is 'val', must be 'train' or 'test'")


def test_train_view_without_mask(cap_dir: Path) -> None:
    _edit_json(cap_dir, lambda d: d["views"][3].update(split="train"))
    _raises(cap_dir, r"capture\.json: views\[3\]\.mask is missing; a train view needs a mask")


def test_view_path_outside_capture(cap_dir: Path) -> None:
    _edit_json(cap_dir, lambda d: d["views"][0].update(image="../elsewhere.png"))
    _raises(
        cap_dir, r"capture\.json: views\[0\]\.image '\.\./elsewhere\.png' must be a relative path"
    )


def test_truncated_png_fails_at_load_naming_the_file(cap_dir: Path) -> None:
    path = cap_dir / "images/cam01/000001.png"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    cap = read_capture(cap_dir)  # the header is intact: validation passes
    with pytest.raises(CaptureError, match=r"^images/cam01/000001\.png: corrupt or truncated PNG"):
        cap.load_image(cap.views[3])


# ----------------------------------------------------------------------------- body


def test_unknown_body_template(cap_dir: Path) -> None:
    _edit_json(cap_dir, lambda d: d["body"].update(template="smplx"))
    _raises(cap_dir, r"capture\.json: body\.template 'smplx' is unknown \(known: anny\)")


def test_unknown_rig(cap_dir: Path) -> None:
    _edit_json(cap_dir, lambda d: d["body"].update(rig="no-such-rig"))
    _raises(cap_dir, r"capture\.json: body\.rig 'no-such-rig' is unknown")


def test_phenotype_out_of_range_or_unknown(cap_dir: Path) -> None:
    _edit_json(cap_dir, lambda d: d["body"]["phenotype"].update(age=1.5))
    _raises(cap_dir, r"capture\.json: body\.phenotype\.age is 1\.5, must be in \[0, 1\]")
    _edit_json(cap_dir, lambda d: d["body"]["phenotype"].update(age=0.5, wingspan=0.5))
    _raises(cap_dir, r"capture\.json: body\.phenotype\.wingspan is not a known phenotype")


def test_unknown_bone(cap_dir: Path) -> None:
    bones = list(bone_names("anny"))
    bones[3] = "tail01"
    _edit_npz(cap_dir, bones=np.array(bones))
    _raises(cap_dir, r"body\.npz: bones\[3\] 'tail01' is not a bone of rig anny")


def test_subset_of_bones_is_accepted(cap_dir: Path) -> None:
    bones = np.array(bone_names("anny")[:5])
    _edit_npz(cap_dir, bones=bones, rotvec=np.zeros((2, 5, 3), np.float32))
    assert read_capture(cap_dir).body.rotvec.shape == (2, 5, 3)


@pytest.mark.parametrize("shape", [(2, 7, 3), (2, 104, 4), (2, 312)])
def test_rotvec_wrong_shape(cap_dir: Path, shape) -> None:
    _edit_npz(cap_dir, rotvec=np.zeros(shape, np.float32))
    shape_text = ", ".join(map(str, shape))
    _raises(cap_dir, rf"body\.npz: rotvec has shape \({shape_text}\), expected \(F, J, 3\)")


@pytest.mark.parametrize("key", ["rotvec", "translation", "facial_actions"])
def test_body_arrays_nan_or_inf(tmp_path: Path, key: str) -> None:
    root = tmp_path / "cap"
    _write(root, body=_body(facial=True))
    with np.load(root / "body.npz") as npz:
        value = npz[key].copy()
    value.reshape(-1)[4] = np.inf if key == "translation" else np.nan
    _edit_npz(root, **{key: value})
    _raises(root, rf"body\.npz: {key} contains NaN or inf \(first at \[")


def test_translation_wrong_shape(cap_dir: Path) -> None:
    _edit_npz(cap_dir, translation=np.zeros((2, 4), np.float32))
    _raises(cap_dir, r"body\.npz: translation has shape \(2, 4\), expected \(2, 3\)")


def test_facial_actions_need_labels(tmp_path: Path) -> None:
    root = tmp_path / "cap"
    _write(root, body=_body(facial=True))
    _edit_npz(root, facial_action_labels=None)
    _raises(root, r"body\.npz: facial_actions and facial_action_labels must come together")


def test_bones_not_a_string_array_or_pickled(cap_dir: Path) -> None:
    _edit_npz(cap_dir, bones=np.arange(104))
    _raises(cap_dir, r"body\.npz: bones must be a 1-D unicode string array")
    _edit_npz(cap_dir, bones=np.array(list(bone_names("anny")), dtype=object))
    _raises(cap_dir, r"body\.npz: cannot be read without pickles")
    import pickle

    (cap_dir / "body.npz").write_bytes(pickle.dumps({"bones": 1}))  # not a zip at all: said so
    _raises(cap_dir, r"body\.npz: not a \.npz file")


def test_unknown_npz_field(cap_dir: Path) -> None:
    _edit_npz(cap_dir, betas=np.zeros(10, np.float32))
    _raises(cap_dir, r"body\.npz: betas is not a known field")


# ----------------------------------------------------------------------------- speed


def test_validating_240_views_is_fast(tmp_path: Path) -> None:
    """Sizes come from PNG headers: 240 views (480 files) validate well under a second."""
    camera = Camera.look_at([3.0, 0.0, 1.0], [0.0, 0.0, 1.0], W, H)
    cameras = {f"cam{i:02d}": camera for i in range(120)}
    image, mask = np.zeros((H, W, 3), np.uint8), np.zeros((H, W), np.uint8)
    views = [ViewData(c, f, "train", image, mask) for c in cameras for f in (0, 1)]
    _write(tmp_path / "big", cameras=cameras, views_with_arrays=views)
    start = time.perf_counter()
    cap = read_capture(tmp_path / "big")
    elapsed = time.perf_counter() - start
    assert len(cap.views) == 240
    assert elapsed < 1.0, f"validation took {elapsed:.2f} s"
