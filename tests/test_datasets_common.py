"""What every public name of skfewshot.datasets shares: docs, hints, validation."""

import inspect

import numpy as np
import pytest
from sklearn.utils._param_validation import InvalidParameterError

import skfewshot.datasets as datasets
from skfewshot.datasets import (
    augment_mirrors,
    augment_rotations,
    augment_splices,
    clear_data_home,
    get_data_home,
    ink_radius,
    load_banking77,
    load_digits_images,
    load_image_folder,
    load_omniglot,
    load_omniglot_runs,
    omniglot_shared_alphabets,
)

pytestmark = pytest.mark.thread_independent  # see the marker in pyproject.toml

PUBLIC = [getattr(datasets, name) for name in datasets.__all__]
# ImageFileReader and InkNormalizer are estimators: their parameters are checked
# with the estimators' (tests/test_datasets_folder.py and _ink.py), not with
# validate_params here.
FUNCTIONS = [func for func in PUBLIC if inspect.isfunction(func)]
SUBSET = "images_background_small1"

# (function, arguments with one bad parameter, that parameter)
BAD_CALLS = [
    (get_data_home, {"data_home": 3}, "data_home"),
    (clear_data_home, {"data_home": ["data"]}, "data_home"),
    (load_digits_images, {"return_X_y": "yes"}, "return_X_y"),
    (load_digits_images, {"image_size": 0}, "image_size"),
    (load_omniglot, {"subset": "omniglot"}, "subset"),
    (load_omniglot, {"subset": SUBSET, "data_home": 3}, "data_home"),
    (load_omniglot, {"subset": SUBSET, "path": 3}, "path"),
    (load_omniglot, {"subset": SUBSET, "image_size": True}, "image_size"),
    (load_omniglot, {"subset": SUBSET, "alphabets": 3}, "alphabets"),
    (load_omniglot, {"subset": SUBSET, "exclude_alphabets": 3}, "exclude_alphabets"),
    (load_omniglot, {"subset": SUBSET, "download": "yes"}, "download"),
    (load_omniglot, {"subset": SUBSET, "return_X_y": 1}, "return_X_y"),
    (omniglot_shared_alphabets, {"subset": "x", "other": SUBSET}, "subset"),
    (omniglot_shared_alphabets, {"subset": SUBSET, "other": "x"}, "other"),
    (
        omniglot_shared_alphabets,
        {"subset": SUBSET, "other": SUBSET, "other_path": 3},
        "other_path",
    ),
    (load_omniglot_runs, {"path": None}, "path"),
    (load_omniglot_runs, {"path": ".", "image_size": 2.5}, "image_size"),
    (load_image_folder, {"path": None}, "path"),
    (load_image_folder, {"path": ".", "image_size": (28, 0)}, "image_size"),
    (load_image_folder, {"path": ".", "color": "RGB"}, "color"),
    (load_image_folder, {"path": ".", "on_error": "ignore"}, "on_error"),
    (load_image_folder, {"path": ".", "return_X_y": 1}, "return_X_y"),
    (load_banking77, {"path": 3}, "path"),
    (load_banking77, {"path": ".", "subset": "dev"}, "subset"),
    (load_banking77, {"path": ".", "return_X_y": "no"}, "return_X_y"),
    (augment_rotations, {"X": 3, "y": [0]}, "X"),
    (augment_mirrors, {"X": 3, "y": [0]}, "X"),
    (
        augment_splices,
        {"X": np.zeros((2, 2, 2)), "y": [0, 1], "random_state": "a"},
        "random_state",
    ),
    (augment_rotations, {"X": np.zeros((1, 2, 2)), "y": [0], "groups": 3}, "groups"),
    (ink_radius, {"images": 3}, "images"),
]


def test_public_names_documented():
    for func in PUBLIC:
        assert "Examples\n    --------" in func.__doc__, func.__name__


@pytest.mark.parametrize("func", FUNCTIONS, ids=lambda func: func.__name__)
def test_public_signatures_have_type_hints(func):
    signature = inspect.signature(func)
    for name, parameter in signature.parameters.items():
        assert parameter.annotation is not parameter.empty, (func.__name__, name)
    assert signature.return_annotation is not signature.empty, func.__name__


def test_every_public_function_is_checked_below():
    names = {func.__name__ for func in FUNCTIONS}
    assert {func.__name__ for func, _, _ in BAD_CALLS} == names


@pytest.mark.parametrize(
    "func, kwargs, parameter",
    BAD_CALLS,
    ids=[f"{func.__name__}-{parameter}" for func, _, parameter in BAD_CALLS],
)
def test_bad_parameter_is_named_by_validate_params(func, kwargs, parameter):
    # one idiom, scikit-learn's: InvalidParameterError is a ValueError and a
    # TypeError, naming the parameter and the function
    with pytest.raises(
        InvalidParameterError,
        match=f"The '{parameter}' parameter of {func.__name__} must be",
    ):
        func(**kwargs)
