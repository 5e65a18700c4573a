"""load_image_folder and ImageFileReader on small image folders built here."""

import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
from _datasets_testing import DATA_FREE_API_CHECKS, data_free_checks
from PIL import Image, features
from sklearn.base import clone
from sklearn.pipeline import make_pipeline
from sklearn.utils._param_validation import InvalidParameterError

from skfewshot import BackboneTransformer, PrototypeClassifier
from skfewshot.datasets import ImageFileReader, _folder, load_image_folder
from skfewshot.model_selection import evaluate_episodes

HAS_WEBP = features.check("webp")


def save(path, array, mode=None, **kwargs):
    """Write ``array`` as an image at ``path`` (format from the extension)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array), mode).save(path, **kwargs)
    return path


def checkerboard(block=1):
    """A 2x2 checkerboard of black and white, each square ``block`` pixels."""
    board = np.array([[0, 255], [255, 0]], dtype=np.uint8)
    return np.kron(board, np.ones((block, block), dtype=np.uint8))


@pytest.fixture
def folder(tmp_path):
    """Two classes in several formats and modes, plus what must be skipped.

    Expected grey value of each image (uniform ones) in the comments.
    """
    root = tmp_path / "photos"
    save(root / "zebra" / "a_grey.png", np.full((6, 6), 51, np.uint8))  # 0.2
    save(root / "zebra" / "b_red.jpg", np.full((8, 8, 3), (255, 0, 0), np.uint8))
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 3] = 51  # black at alpha 0.2 over white: 0.8
    save(root / "zebra" / "nested" / "c_alpha.PNG", rgba)
    save(root / "ant" / "d_board.png", checkerboard(2))  # 4x4 -> 2x2: exact
    save(root / "ant" / "e_sixteen.png", np.full((3, 5), 1000, np.uint16))
    palette_image = Image.new("P", (6, 6), 1)
    palette_image.putpalette([0, 0, 0, 102, 102, 102] + [0] * 762)
    palette_image.save(root / "ant" / "f_palette.gif")  # 0.4
    # skipped: hidden files and folders, other extensions, files at the root
    save(root / "ant" / ".hidden.png", np.zeros((2, 2), np.uint8))
    save(root / "ant" / ".cache" / "x.png", np.zeros((2, 2), np.uint8))
    (root / "ant" / "notes.txt").write_text("not an image")
    save(root / "loose.png", np.zeros((2, 2), np.uint8))
    save(root / ".git" / "objects" / "y.png", np.zeros((2, 2), np.uint8))
    return root


EXPECTED_FILES = [
    "ant/d_board.png",
    "ant/e_sixteen.png",
    "ant/f_palette.gif",
    "zebra/a_grey.png",
    "zebra/b_red.jpg",
    "zebra/nested/c_alpha.PNG",
]


def test_layout_order_and_bunch(folder):
    bunch = load_image_folder(folder, image_size=2)
    assert list(bunch.target_names) == ["ant", "zebra"]
    assert list(bunch.filenames) == EXPECTED_FILES
    np.testing.assert_array_equal(bunch.target, [0, 0, 0, 1, 1, 1])
    assert bunch.data.shape == (6, 1, 2, 2) and bunch.data.dtype == np.float32
    assert bunch.images.shape == (6, 2, 2)
    assert np.shares_memory(bunch.images, bunch.data)
    assert "6 images in 2 classes" in bunch.DESCR and str(folder) in bunch.DESCR
    X, y = load_image_folder(folder, image_size=2, return_X_y=True)
    np.testing.assert_array_equal(X, bunch.data)
    np.testing.assert_array_equal(y, bunch.target)


def test_grayscale_values_hand_computed(folder):
    data = load_image_folder(folder, image_size=2).data[:, 0]
    np.testing.assert_array_equal(data[0], [[0.0, 1.0], [1.0, 0.0]])  # board
    expected = {
        1: 1000 / 65535,  # 16 bits kept
        2: 0.4,  # the palette's colour 1
        3: 0.2,
        5: 0.8,  # alpha over white
    }
    for i, value in expected.items():
        np.testing.assert_allclose(data[i], value, rtol=1e-5, atol=1e-6)
    # JPEG is lossy: pure red comes back within a few levels of BT.601's 0.299
    np.testing.assert_allclose(data[4], 0.299, atol=4 / 255)


def test_rgb_channels_and_checkerboard_resized_to_one_pixel(folder):
    bunch = load_image_folder(folder, image_size=(1, 1), color="rgb")
    assert bunch.data.shape == (6, 3, 1, 1)
    assert bunch.images.shape == (6, 1, 1, 3)  # channels last, for imshow
    pixels = bunch.data[:, :, 0, 0]
    np.testing.assert_allclose(pixels[0], [0.5, 0.5, 0.5], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(pixels[2], [0.4, 0.4, 0.4], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(pixels[4], [1.0, 0.0, 0.0], atol=4 / 255)
    np.testing.assert_allclose(pixels[5], [0.8, 0.8, 0.8], rtol=1e-5, atol=1e-6)


def test_image_size_pair_and_none(tmp_path):
    save(tmp_path / "a" / "1.png", np.arange(12, dtype=np.uint8).reshape(3, 4) * 20)
    save(tmp_path / "b" / "2.bmp", np.full((3, 4, 3), 255, np.uint8))
    data = load_image_folder(tmp_path, image_size=(3, 2)).data
    assert data.shape == (2, 1, 3, 2)
    # 4 columns -> 2: the mean of each pair of columns
    expected = np.arange(12).reshape(3, 2, 2).mean(axis=2) * 20 / 255
    np.testing.assert_allclose(data[0, 0], expected, rtol=1e-5, atol=1e-6)
    kept = load_image_folder(tmp_path, image_size=None).data
    np.testing.assert_allclose(
        kept[0, 0], np.arange(12).reshape(3, 4) * 20 / 255, rtol=1e-5, atol=1e-6
    )
    save(tmp_path / "b" / "3.png", np.zeros((5, 5), np.uint8))
    with pytest.raises(ValueError, match="b/3.png is 5x5 but a/1.png is 3x4"):
        load_image_folder(tmp_path, image_size=None)


@pytest.mark.skipif(not HAS_WEBP, reason="this Pillow has no WebP support")
def test_webp_and_tiff(tmp_path):
    save(tmp_path / "a" / "1.webp", np.full((4, 4, 3), 51, np.uint8), lossless=True)
    save(tmp_path / "b" / "2.tiff", np.full((4, 4), 204, np.uint8))
    data = load_image_folder(tmp_path, image_size=2).data
    np.testing.assert_allclose(data[:, 0, 0, 0], [0.2, 0.8], rtol=1e-5, atol=1e-6)


def test_gif_first_frame(tmp_path):
    frames = [Image.new("L", (4, 4), value) for value in (51, 255)]
    (tmp_path / "a").mkdir()
    frames[0].save(tmp_path / "a" / "anim.gif", save_all=True, append_images=frames[1:])
    with Image.open(tmp_path / "a" / "anim.gif") as image:
        assert image.n_frames == 2
    data = load_image_folder(tmp_path, image_size=1).data
    np.testing.assert_allclose(data.ravel(), [0.2], rtol=1e-5, atol=1e-6)


def test_folder_errors_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="image folder not found") as info:
        load_image_folder(tmp_path / "missing")
    assert info.value.filename == str(tmp_path / "missing")
    file = save(tmp_path / "one.png", np.zeros((2, 2), np.uint8))
    with pytest.raises(NotADirectoryError, match="one.png is not a directory"):
        load_image_folder(file)
    with pytest.raises(ValueError, match="has no class sub-folders"):
        load_image_folder(tmp_path)
    save(tmp_path / "cat" / "1.png", np.zeros((2, 2), np.uint8))
    (tmp_path / "dog").mkdir()
    (tmp_path / "dog" / "1.heic").write_bytes(b"...")
    with pytest.raises(
        ValueError,
        match=r"class folder .*dog has no image file \(.bmp, .*; it holds 1 "
        r"other file\(s\), e.g. 'dog/1.heic'\)",
    ):
        load_image_folder(tmp_path)
    (tmp_path / "dog" / "1.heic").unlink()  # an empty class folder
    with pytest.raises(
        ValueError, match=r"class folder .*dog has no image file \(.bmp, .*\.webp\)\.$"
    ):
        load_image_folder(tmp_path)


def _broken_folder(tmp_path):
    """Class a: one good image, one corrupt; class b: one good, one truncated."""
    rng = np.random.RandomState(0)
    save(tmp_path / "a" / "1.png", np.full((4, 4), 51, np.uint8))
    (tmp_path / "a" / "2.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    save(tmp_path / "b" / "1.png", np.full((4, 4), 204, np.uint8))
    blob = save(tmp_path / "b" / "2.jpg", rng.randint(0, 256, (64, 64), np.uint8))
    blob.write_bytes(blob.read_bytes()[:300])
    return tmp_path


def test_unreadable_files_are_named(tmp_path):
    root = _broken_folder(tmp_path)
    with pytest.raises(ValueError, match="a/2.png: not an image Pillow can read"):
        load_image_folder(root)
    (root / "a" / "2.png").unlink()
    with pytest.raises(ValueError, match="b/2.jpg: not an image .*Truncated File Read"):
        load_image_folder(root)


def test_on_error_warn_skips_with_one_warning(tmp_path):
    root = _broken_folder(tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        bunch = load_image_folder(root, image_size=2, on_error="warn")
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1, messages
    assert messages[0].startswith(f"skipped 2 unreadable image file(s) of {root}")
    assert "a/2.png (" in messages[0] and "b/2.jpg (" in messages[0]
    assert list(bunch.filenames) == ["a/1.png", "b/1.png"]
    np.testing.assert_array_equal(bunch.target, [0, 1])
    np.testing.assert_allclose(bunch.data[:, 0, 0, 0], [0.2, 0.8], rtol=1e-5)
    # a class left with no readable image is an error, not a missing class
    (root / "a" / "1.png").unlink()
    with pytest.warns(UserWarning, match="skipped 2"):
        with pytest.raises(ValueError, match=r"a has no readable image .*\['a'\]"):
            load_image_folder(root, on_error="warn")


def test_decompression_bomb_limit_is_kept(tmp_path, monkeypatch):
    save(tmp_path / "a" / "big.png", np.zeros((20, 20), np.uint8))
    save(tmp_path / "a" / "small.png", np.zeros((5, 5), np.uint8))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 400 > 2 * 100: refused
    with pytest.raises(ValueError, match="a/big.png: refused as a possible decomp"):
        load_image_folder(tmp_path)
    with pytest.warns(UserWarning, match="a/big.png \\(.*decompression bomb"):
        bunch = load_image_folder(tmp_path, on_error="warn")
    assert list(bunch.filenames) == ["a/small.png"]


@pytest.mark.parametrize(
    "kwargs, parameter",
    [
        ({"path": None}, "path"),
        ({"path": ".", "image_size": 0}, "image_size"),
        ({"path": ".", "image_size": (28, 0)}, "image_size"),
        ({"path": ".", "image_size": (28, 28, 3)}, "image_size"),
        ({"path": ".", "image_size": True}, "image_size"),
        ({"path": ".", "color": "RGB"}, "color"),
        ({"path": ".", "on_error": "ignore"}, "on_error"),
        ({"path": ".", "return_X_y": "yes"}, "return_X_y"),
    ],
)
def test_bad_parameter_is_named_by_validate_params(kwargs, parameter):
    with pytest.raises(
        InvalidParameterError,
        match=f"The '{parameter}' parameter of load_image_folder must be",
    ):
        load_image_folder(**kwargs)


# -- ImageFileReader -----------------------------------------------------------


def test_reader_matches_the_folder_loader(folder):
    bunch = load_image_folder(folder, image_size=(3, 5), color="rgb")
    paths = [folder / name for name in bunch.filenames]
    reader = ImageFileReader(image_size=(3, 5), color="rgb")
    np.testing.assert_array_equal(reader.transform(paths), bunch.data)  # unfitted
    as_str = [str(p) for p in paths]
    np.testing.assert_array_equal(reader.fit_transform(as_str), bunch.data)
    column = np.array(as_str, dtype=object)[:, None]  # a one-column frame
    np.testing.assert_array_equal(reader.transform(column), bunch.data)


def test_reader_errors_name_the_input(tmp_path):
    reader = ImageFileReader()
    good = str(save(tmp_path / "good.png", np.zeros((3, 3), np.uint8)))
    with pytest.raises(ValueError, match="got a single path '.*good.png'"):
        reader.fit(good)
    with pytest.raises(ValueError, match="empty input"):
        reader.transform([])
    with pytest.raises(ValueError, match="1-D collection .* shape \\(1, 2\\)"):
        reader.transform([[good, good]])
    with pytest.raises(TypeError, match="got 1 other item\\(s\\), e.g. 3 of type int"):
        reader.fit([good, 3])
    with pytest.raises(FileNotFoundError, match="missing.png"):
        reader.transform([good, str(tmp_path / "missing.png")])
    (tmp_path / "bad.png").write_bytes(b"")
    with pytest.raises(ValueError, match="bad.png: not an image Pillow can read"):
        reader.transform([good, str(tmp_path / "bad.png")])
    for bad in (ImageFileReader(color="bgr"), ImageFileReader(image_size=-1)):
        with pytest.raises(InvalidParameterError, match="of ImageFileReader must"):
            bad.fit([good])
        with pytest.raises(InvalidParameterError, match="of ImageFileReader must"):
            bad.transform([good])


def test_reader_is_stateless_and_frozen(tmp_path):
    reader = ImageFileReader(image_size=4)
    path = str(save(tmp_path / "x.png", np.zeros((3, 3), np.uint8)))
    assert reader.fit([path]) is reader
    assert vars(reader) == {"image_size": 4, "color": "grayscale"}
    assert ImageFileReader.frozen_features is True
    assert clone(reader).get_params() == {"image_size": 4, "color": "grayscale"}
    tags = reader.__sklearn_tags__()
    assert tags.requires_fit is False and tags.input_tags.string is True


class _Flat(torch.nn.Module):
    """Flatten, then one fixed linear map (a tiny backbone)."""

    def __init__(self, n_in):
        super().__init__()
        self.linear = torch.nn.Linear(n_in, 3)
        torch.nn.init.eye_(self.linear.weight)
        torch.nn.init.zeros_(self.linear.bias)

    def forward(self, x):
        return self.linear(x.flatten(1))


def _shapes_folder(root):
    """A 'left' class (left half black) and a 'top' class, 4 images each."""
    for i in range(4):
        left = np.full((8, 8), 255, np.uint8)
        left[:, : 3 + i % 2] = 0
        top = left.T.copy()
        save(root / "left" / f"{i}.png", left)
        save(root / "top" / f"{i}.jpg", np.stack([top] * 3, axis=2), quality=95)
    return load_image_folder(root, image_size=2)


def test_pipeline_from_paths(tmp_path, monkeypatch):
    bunch = _shapes_folder(tmp_path)
    paths = [str(tmp_path / name) for name in bunch.filenames]
    labels = bunch.target_names[bunch.target]
    pipe = make_pipeline(
        ImageFileReader(image_size=2),
        BackboneTransformer(_Flat(4), device="cpu"),
        PrototypeClassifier(metric="euclidean"),
    )
    support = [0, 4]  # one shot of each class
    pipe.fit([paths[i] for i in support], labels[support])
    np.testing.assert_array_equal(pipe.predict(paths), labels)

    # frozen steps: a pool of files is read once for all episodes
    read = []
    real = _folder.read_images
    monkeypatch.setattr(
        _folder,
        "read_images",
        lambda names, *args, **kwargs: (
            read.extend(names),
            real(names, *args, **kwargs),
        )[1],
    )
    scores = evaluate_episodes(
        pipe,
        paths,
        labels,
        n_way=2,
        n_shot=1,
        n_query=3,
        n_episodes=5,
        random_state=0,
    )
    assert scores.mean == 1.0
    assert sorted(read) == sorted(paths)


@data_free_checks(ImageFileReader(image_size=3))
def test_sklearn_compatible_estimator(estimator, check):
    check(estimator)


@pytest.mark.parametrize("check", DATA_FREE_API_CHECKS)
def test_sklearn_api_checks(check):
    check("ImageFileReader", ImageFileReader(image_size=3))


def test_paths_may_be_path_like(tmp_path):
    path = save(tmp_path / "x.png", np.full((2, 2), 255, np.uint8))
    assert isinstance(path, os.PathLike)
    np.testing.assert_array_equal(ImageFileReader(image_size=1).transform([path]), 1)


def test_memory_is_the_result_plus_one_image(tmp_path):
    # 24 photos of 200x200 RGB (960 kB each as float64) into 4x4: read one at
    # a time, the traced peak stays near one photo, far from all 24 (23 MB)
    rng = np.random.RandomState(0)
    for i in range(24):
        save(
            tmp_path / "c" / f"{i:02d}.png",
            rng.randint(0, 256, (200, 200, 3), np.uint8),
        )
    # in a process of its own: tracemalloc counts every thread's allocations,
    # and threads other tests leave behind (dask's event loop) raised the peak
    # of this one under pytest-xdist (9.8 MB once)
    code = (
        "import sys\n"
        f"sys.path.insert(0, {os.path.dirname(__file__)!r})\n"
        "from _memory_testing import traced\n"
        "from skfewshot.datasets import load_image_folder\n"
        f"load = lambda: load_image_folder({str(tmp_path)!r}, image_size=4, "
        "color='rgb')\n"
        "load()  # imports done before the measure\n"
        "print(traced(load)[1])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) < 3 << 20


def test_symlinked_sub_folders_are_followed(tmp_path):
    # as torchvision's ImageFolder (os.walk(followlinks=True)) reads them
    root, store = tmp_path / "root", tmp_path / "store" / "batch2"
    for i in range(2):
        save(root / "cat" / f"{i}.png", np.zeros((2, 2), np.uint8))
        save(root / "dog" / f"{i}.png", np.full((2, 2), 255, np.uint8))
        save(store / f"extra{i}.png", np.zeros((2, 2), np.uint8))
    (root / "cat" / "batch2").symlink_to(store)
    bunch = load_image_folder(root, image_size=2)
    assert list(bunch.filenames) == [
        "cat/0.png",
        "cat/1.png",
        "cat/batch2/extra0.png",
        "cat/batch2/extra1.png",
        "dog/0.png",
        "dog/1.png",
    ]
    np.testing.assert_array_equal(bunch.target, [0, 0, 0, 0, 1, 1])


def _folder_with(tmp_path, make_problem):
    """Classes cat and dog, one image each, and ``make_problem(root)``'s path."""
    root = tmp_path / "root"
    for name in ("cat", "dog"):
        save(root / name / "0.png", np.zeros((2, 2), np.uint8))
    return root, make_problem(root)


def _dangling_link(root):
    link = root / "dog" / "2.png"
    link.symlink_to(root / "nowhere.png")
    return link


def _link_loop(root):
    link = root / "cat" / "loop"
    link.symlink_to(root / "cat")
    return link


@pytest.mark.parametrize(
    "make_problem, error, why",
    [
        (_dangling_link, FileNotFoundError, "dangling symbolic link \\(to .*nowhere"),
        (_link_loop, OSError, "symbolic link loop \\(to .*cat\\)"),
    ],
    ids=["dangling", "loop"],
)
def test_dangling_link_and_link_loop_are_named(tmp_path, make_problem, error, why):
    root, bad = _folder_with(tmp_path, make_problem)
    with pytest.raises(error, match=why) as info:
        load_image_folder(root, image_size=2)
    assert info.value.filename == str(bad)
    with pytest.warns(UserWarning, match=f"skipped 1 path\\(s\\) of {root} .*{why}"):
        bunch = load_image_folder(root, image_size=2, on_error="warn")
    assert list(bunch.filenames) == ["cat/0.png", "dog/0.png"]


def test_unreadable_sub_folder_is_named(tmp_path, monkeypatch):
    # Python 3.11's rglob skips a folder it may not list without a word; the
    # permission error is simulated (chmod does not stop root)
    root, locked = _folder_with(tmp_path, lambda root: root / "cat" / "batch2")
    save(locked / "1.png", np.zeros((2, 2), np.uint8))
    scandir = os.scandir

    def refusing(path="."):
        if os.fspath(path) == str(locked):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return scandir(path)

    monkeypatch.setattr(os, "scandir", refusing)
    with pytest.raises(
        PermissionError, match="cannot list folder \\(Permission denied\\)"
    ) as info:
        load_image_folder(root, image_size=2)
    assert info.value.filename == str(locked)
    with pytest.warns(UserWarning, match="batch2"):
        bunch = load_image_folder(root, image_size=2, on_error="warn")
    assert list(bunch.filenames) == ["cat/0.png", "dog/0.png"]
