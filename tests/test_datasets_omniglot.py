"""Tests for skfewshot.datasets.load_omniglot and omniglot_shared_alphabets."""

import errno
import zipfile

import numpy as np
import pytest
from _datasets_testing import STROKE, fake_omniglot, real_omniglot

from skfewshot.datasets import load_omniglot, omniglot_shared_alphabets
from skfewshot.datasets._images import area_resize

pytestmark = pytest.mark.thread_independent  # see the marker in pyproject.toml

SMALL = {
    # subset: (alphabets, characters, images)
    "images_background_small1": (5, 136, 2720),
    "images_background_small2": (5, 156, 3120),
}


def test_load_omniglot_fake_zip_labels_and_pixels(tmp_path):
    path = fake_omniglot(tmp_path / "images_background_small1.zip")
    bunch = load_omniglot("images_background_small1", path=path, image_size=None)
    assert bunch.data.shape == (8, 1, 4, 4) and bunch.data.dtype == np.float32
    np.testing.assert_array_equal(
        bunch.target_names,
        [
            "Greek/character01",
            "Greek/character02",
            "Latin/character01",
            "Latin/character02",
        ],
    )
    np.testing.assert_array_equal(bunch.group_names, ["Greek", "Latin"])
    np.testing.assert_array_equal(bunch.target, [0, 0, 1, 1, 2, 2, 3, 3])
    np.testing.assert_array_equal(bunch.groups, [0, 0, 0, 0, 1, 1, 1, 1])
    np.testing.assert_array_equal(bunch.drawers, [1, 2] * 4)
    assert (
        bunch.filenames[0] == "images_background_small1/Greek/character01/0701_01.png"
    )
    # strokes = 1: the drawing inverted
    np.testing.assert_array_equal(bunch.data[0, 0], 1 - STROKE)
    flipped = 1 - STROKE
    flipped.flat[7] ^= 1
    np.testing.assert_array_equal(bunch.images[1], flipped)
    assert np.shares_memory(bunch.images, bunch.data)

    small = load_omniglot("images_background_small1", path=path, image_size=2)
    np.testing.assert_allclose(
        small.data[0, 0], [[1.0, 0.0], [0.0, 0.25]], rtol=0, atol=1e-6
    )
    X, y = load_omniglot(
        "images_background_small1", path=tmp_path, image_size=2, return_X_y=True
    )
    np.testing.assert_array_equal(X, small.data)
    np.testing.assert_array_equal(y, small.target)


def test_load_omniglot_data_home_from_environment(tmp_path, monkeypatch):
    home = tmp_path / "home"
    (home / "omniglot").mkdir(parents=True)
    fake_omniglot(home / "omniglot" / "images_evaluation.zip", "images_evaluation")
    monkeypatch.setenv("SKFEWSHOT_DATA", str(home))
    bunch = load_omniglot("images_evaluation", image_size=3)
    assert bunch.data.shape == (8, 1, 3, 3)


def test_load_omniglot_errors(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        load_omniglot("images_background", data_home=tmp_path)
    message = str(info.value)
    missing = tmp_path / "omniglot" / "images_background.zip"
    assert str(missing) in message
    assert "download=True" in message and "path=" in message
    # what a caller (the CLI) needs to say it in its own words
    assert info.value.filename == str(missing) and info.value.errno == errno.ENOENT
    with pytest.raises(FileNotFoundError, match="images_evaluation.zip"):
        load_omniglot("images_evaluation", path=tmp_path)
    with pytest.raises(
        ValueError,
        match="The 'subset' parameter of load_omniglot must be a str among .*"
        "Got 'omniglot' instead",
    ):
        load_omniglot("omniglot", path=tmp_path)
    size_error = "The 'image_size' parameter of load_omniglot must be an int in the "
    size_error += "range \\[1, inf\\) or None. Got {} instead"
    with pytest.raises(ValueError, match=size_error.format(0)):
        load_omniglot("images_background", path=tmp_path, image_size=0)
    for bad in (2.5, True):  # True is not a size, though bool subclasses int
        with pytest.raises(TypeError, match=size_error.format(bad)):
            load_omniglot("images_background", path=tmp_path, image_size=bad)

    not_zip = tmp_path / "images_background.zip"
    not_zip.write_bytes(b"definitely not a zip")
    with pytest.raises(OSError, match="not a readable zip archive"):
        load_omniglot("images_background", path=tmp_path)
    empty = tmp_path / "empty.zip"
    with zipfile.ZipFile(empty, "w") as archive:
        archive.writestr("README.txt", "nothing here")
    with pytest.raises(ValueError, match="no <Alphabet>/<character>/<image>.png"):
        load_omniglot("images_background", path=empty)


@pytest.mark.shared_data
@pytest.mark.parametrize("subset", sorted(SMALL))
def test_load_omniglot_real_small_subsets(shared_data, subset):
    n_alphabets, n_characters, n_images = SMALL[subset]
    bunch = real_omniglot(shared_data, subset)
    assert bunch.data.shape == (n_images, 1, 28, 28)
    assert bunch.data.dtype == np.float32
    assert bunch.data.min() == 0.0 and bunch.data.max() == 1.0
    # strokes = 1 on a 0 background: little ink per image, none in the corners
    assert 0.02 < bunch.data.mean() < 0.2
    assert bunch.data[:, 0, 0, 0].max() == 0.0
    assert len(bunch.group_names) == n_alphabets
    assert len(bunch.target_names) == n_characters
    np.testing.assert_array_equal(np.bincount(bunch.target), np.full(n_characters, 20))
    assert list(bunch.target_names) == sorted(bunch.target_names)
    assert np.all(np.diff(bunch.target) >= 0)
    # every character's alphabet is its group
    alphabets = [name.split("/")[0] for name in bunch.target_names[bunch.target]]
    np.testing.assert_array_equal(bunch.group_names[bunch.groups], alphabets)
    assert set(bunch.drawers) == set(range(1, 21))


@pytest.mark.shared_data
def test_load_omniglot_real_zip_path_and_folder_agree(shared_data):
    folder = real_omniglot(shared_data, "images_background_small1")
    zip_path = shared_data / "omniglot" / "images_background_small1.zip"
    direct = load_omniglot("images_background_small1", path=zip_path, image_size=14)
    # 28 -> 14 is an integer ratio: area averaging composes exactly
    np.testing.assert_allclose(
        direct.data[:, 0], area_resize(folder.images, 14), atol=1e-6
    )


def test_load_omniglot_alphabets_and_exclude(tmp_path):
    path = fake_omniglot(tmp_path / "images_background_small1.zip")
    greek = load_omniglot("images_background_small1", path=path, alphabets=["Greek"])
    np.testing.assert_array_equal(greek.group_names, ["Greek"])
    np.testing.assert_array_equal(
        greek.target_names, ["Greek/character01", "Greek/character02"]
    )
    np.testing.assert_array_equal(greek.target, [0, 0, 1, 1])
    latin = load_omniglot(
        "images_background_small1", path=path, exclude_alphabets=["Greek"]
    )
    np.testing.assert_array_equal(latin.group_names, ["Latin"])
    assert all(
        name.startswith("images_background_small1/Latin/") for name in latin.filenames
    )

    with pytest.raises(ValueError, match="has no alphabet \\['Cyrillic'\\]; its alph"):
        load_omniglot("images_background_small1", path=path, alphabets=["Cyrillic"])
    with pytest.raises(ValueError, match="has no alphabet \\['greek'\\]"):
        load_omniglot(
            "images_background_small1", path=path, exclude_alphabets=["greek"]
        )
    with pytest.raises(ValueError, match="no alphabet of .* is left"):
        load_omniglot(
            "images_background_small1",
            path=path,
            alphabets=["Greek"],
            exclude_alphabets=["Greek"],
        )
    for bad in ("Greek", ["Greek", 3]):
        with pytest.raises(TypeError, match="alphabets must be a list of alphabet"):
            load_omniglot("images_background_small1", path=path, alphabets=bad)
    with pytest.raises(
        TypeError,
        match="The 'alphabets' parameter of load_omniglot must be an instance of "
        "'collections.abc.Iterable' or None. Got 3 instead",
    ):
        load_omniglot("images_background_small1", path=path, alphabets=3)
    # any iterable of names, a generator included
    again = load_omniglot(
        "images_background_small1", path=path, alphabets=(a for a in ["Greek"])
    )
    np.testing.assert_array_equal(again.group_names, ["Greek"])


def test_omniglot_shared_alphabets_by_name_and_by_image(tmp_path):
    fake_omniglot(tmp_path / "images_background_small1.zip")
    # small2: Greek by name (other drawings), Latin's images under another name
    fake_omniglot(
        tmp_path / "images_background_small2.zip",
        "images_background_small2",
        rename={"Latin": "Roman"},
        flip_greek=True,
    )
    fake_omniglot(
        tmp_path / "images_evaluation.zip",
        "images_evaluation",
        rename={"Latin": "Runic", "Greek": "Tifinagh"},
        flip_greek=True,
    )
    shared = omniglot_shared_alphabets(
        "images_background_small1", "images_background_small2", path=tmp_path
    )
    assert shared == ["Greek", "Latin"]
    assert omniglot_shared_alphabets(
        "images_background_small2",
        "images_background_small1",
        path=tmp_path / "images_background_small2.zip",  # the other zip beside it
    ) == ["Greek", "Roman"]
    # Tifinagh holds altered drawings, Runic Latin's very images
    assert omniglot_shared_alphabets(
        "images_evaluation", "images_background_small1", path=tmp_path
    ) == ["Runic"]
    with pytest.raises(
        FileNotFoundError, match="'images_background' not found"
    ) as info:
        omniglot_shared_alphabets(
            "images_evaluation", "images_background", path=tmp_path
        )
    assert info.value.filename == str(tmp_path / "images_background.zip")


@pytest.mark.shared_data
def test_omniglot_small_subsets_share_greek_and_latin(shared_data):
    folder = shared_data / "omniglot"
    small1, small2 = "images_background_small1", "images_background_small2"
    assert omniglot_shared_alphabets(small2, small1, path=folder) == ["Greek", "Latin"]
    assert omniglot_shared_alphabets(small1, small2, path=folder) == ["Greek", "Latin"]
    train = {image.tobytes() for image in real_omniglot(shared_data, small1).data}
    full = real_omniglot(shared_data, small2)
    leaked = [image.tobytes() in train for image in full.data]
    assert sum(leaked) == 480 + 520  # every Greek and Latin image, no other
    novel = load_omniglot(small2, path=folder, exclude_alphabets=["Greek", "Latin"])
    np.testing.assert_array_equal(
        novel.group_names, ["Japanese_(katakana)", "Sanskrit", "Tagalog"]
    )
    assert novel.data.shape == (3120 - 1000, 1, 28, 28)
    assert not any(image.tobytes() in train for image in novel.data)
    assert "share two alphabets" in novel.DESCR


def test_load_omniglot_zip_of_another_subset_is_refused(tmp_path):
    # a zip is read only as the subset it holds, whatever its file name
    small1 = fake_omniglot(tmp_path / "images_background_small1.zip")
    misnamed = tmp_path / "mine"
    misnamed.write_bytes(small1.read_bytes())
    for path in (small1, misnamed):
        with pytest.raises(
            ValueError,
            match=f"{path} does not hold the Omniglot subset "
            "'images_background_small2' asked for: its images are under "
            "\\['images_background_small1/'\\]",
        ):
            load_omniglot("images_background_small2", path=path)
    assert load_omniglot("images_background_small1", path=misnamed).data.shape[0] == 8
    (tmp_path / "images_background_small2.zip").write_bytes(small1.read_bytes())
    with pytest.raises(ValueError, match="'images_background_small2' asked for"):
        load_omniglot("images_background_small2", path=tmp_path)
    with pytest.raises(ValueError, match="'images_background_small2' asked for"):
        omniglot_shared_alphabets(
            "images_background_small1", "images_background_small2", path=tmp_path
        )
    # images outside a <subset>/ top folder hold no known subset
    flat = tmp_path / "flat.zip"
    with zipfile.ZipFile(flat, "w") as archive:
        archive.writestr("Greek/character01/01_01.png", b"")
    with pytest.raises(ValueError, match="its images are under \\['Greek/'\\]"):
        load_omniglot("images_background_small1", path=flat)


def test_load_omniglot_path_that_does_not_exist_is_a_folder(tmp_path):
    folder = tmp_path / "new"
    with pytest.raises(FileNotFoundError) as info:
        load_omniglot("images_background_small1", path=folder)
    assert info.value.filename == str(folder / "images_background_small1.zip")
    with pytest.raises(FileNotFoundError) as info:
        load_omniglot("images_background_small1", path=tmp_path / "mine.ZIP")
    assert info.value.filename == str(tmp_path / "mine.ZIP")
    with pytest.raises(FileNotFoundError) as info:
        omniglot_shared_alphabets(
            "images_background_small1",
            "images_background_small2",
            path=tmp_path / "mine.zip",
        )
    assert info.value.filename == str(tmp_path / "mine.zip")


@pytest.mark.shared_data
def test_load_omniglot_real_zip_read_as_the_other_small_subset(shared_data, tmp_path):
    small1 = shared_data / "omniglot" / "images_background_small1.zip"
    (tmp_path / "images_background_small2.zip").symlink_to(small1)
    with pytest.raises(
        ValueError,
        match="images_background_small2.zip does not hold the Omniglot subset "
        "'images_background_small2' asked for: its images are under "
        "\\['images_background_small1/'\\]",
    ):
        load_omniglot("images_background_small2", path=tmp_path)
