import json
import math

import numpy as np
import pytest

from normalcrafter.errors import NormalCrafterError
from normalcrafter.world_space import load_camera_rotations, rotation_for_frame, to_world


def rot_x(angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


def rot_z(angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def write(tmp_path, payload) -> str:
    path = tmp_path / "rotations.json"
    path.write_text(json.dumps(payload))
    return str(path)


def test_camera_looking_along_world_y(tmp_path):
    # Blender camera with rotation (90 deg, 0, 0) looks along world +Y with
    # +Z up: a surface facing it points to world -Y, the camera's up is world +Z
    # and its right is world +X.
    path = write(tmp_path, {"convention": "opengl", "frames": {"7": rot_x(math.pi / 2).tolist()}})
    rotations = load_camera_rotations(path)
    assert list(rotations) == [7]
    normals = np.array([[[0, 0, 1], [0, 1, 0], [1, 0, 0]]], dtype=np.float32)
    world = to_world(normals, rotations[7])
    np.testing.assert_allclose(world[0], [[0, -1, 0], [0, 0, 1], [1, 0, 0]], atol=1e-6)
    assert world.dtype == np.float32


def test_matches_rotation_per_pixel_and_keeps_length(tmp_path):
    rng = np.random.default_rng(3)
    rotation = rot_z(0.7) @ rot_x(1.1)
    path = write(tmp_path, {"frames": {"0": rotation.tolist()}})  # convention defaults to opengl
    normals = rng.normal(size=(5, 4, 3)).astype(np.float32)
    normals /= np.linalg.norm(normals, axis=-1, keepdims=True)
    world = to_world(normals, load_camera_rotations(path)[0])
    expected = np.einsum("ij,hwj->hwi", rotation, normals)
    np.testing.assert_allclose(world, expected, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(world, axis=-1), 1.0, atol=1e-6)


def test_camera_scale_is_ignored(tmp_path):
    rotation = rot_z(0.3)
    path = write(tmp_path, {"frames": {"1": (rotation * [2.0, 0.5, 3.0]).tolist()}})
    np.testing.assert_allclose(load_camera_rotations(path)[1], rotation, atol=1e-12)


def test_opencv_rotations_are_converted_to_opengl(tmp_path):
    # The same camera described with OpenCV camera axes (+Y down, +Z forward):
    # its columns are (right, down, forward) in world space.
    gl = rot_z(0.4) @ rot_x(0.9)
    cv = np.stack([gl[:, 0], -gl[:, 1], -gl[:, 2]], axis=1)
    path = write(tmp_path, {"convention": "opencv", "frames": {"3": cv.tolist()}})
    np.testing.assert_allclose(load_camera_rotations(path)[3], gl, atol=1e-12)


@pytest.mark.parametrize(
    "content, fragment",
    [
        ("not json", "not JSON"),
        (json.dumps({"convention": "opengl"}), "no 'frames'"),
        (json.dumps({"frames": {}}), "lists no frames"),
        (json.dumps({"frames": {"a": np.eye(3).tolist()}}), "not an integer"),
        (json.dumps({"frames": {"0": [[1, 0], [0, 1]]}}), "3x3"),
        (json.dumps({"frames": {"0": [[1, 0, 0], [0, 1, 0], [0, 0, "x"]]}}), "3x3"),
        (json.dumps({"frames": {"0": [[1, 0, 0], [0, 1, 0], [0, 0, -1]]}}), "not a rotation"),
        (json.dumps({"frames": {"0": [[1, 0.5, 0], [0, 1, 0], [0, 0, 1]]}}), "not a rotation"),
        (json.dumps({"frames": {"0": [[0, 0, 0], [0, 1, 0], [0, 0, 1]]}}), "column is zero"),
        (json.dumps({"convention": "sideways", "frames": {"0": np.eye(3).tolist()}}), "unknown axis convention"),
    ],
)
def test_bad_files_give_one_line_errors(tmp_path, content, fragment):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(NormalCrafterError) as info:
        load_camera_rotations(path)
    assert info.value.code == "input_invalid"
    assert fragment in str(info.value) and "\n" not in str(info.value)


def test_missing_file_and_missing_frame(tmp_path):
    with pytest.raises(NormalCrafterError) as info:
        load_camera_rotations(tmp_path / "nope.json")
    assert info.value.code == "input_unreadable"
    rotations = load_camera_rotations(write(tmp_path, {"frames": {"2": np.eye(3).tolist(), "4": np.eye(3).tolist()}}))
    with pytest.raises(NormalCrafterError, match=r"input frame 3 .*2\.\.4"):
        rotation_for_frame(rotations, 3)
    np.testing.assert_array_equal(rotation_for_frame(rotations, 4), np.eye(3))


def test_to_world_rejects_bad_shapes():
    with pytest.raises(NormalCrafterError, match=r"\(H, W, 3\)"):
        to_world(np.zeros((4, 3)), np.eye(3))
    with pytest.raises(NormalCrafterError, match="3x3"):
        to_world(np.zeros((2, 2, 3)), np.eye(4))
