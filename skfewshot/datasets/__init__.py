"""Few-shot data sets as scikit-learn :class:`~sklearn.utils.Bunch` objects.

Images come as float32 arrays of shape (n, 1, s, s) with ink = 1, texts as
lists of str; every loader reads local files (a path or the data home, see
:func:`get_data_home`), and ``load_omniglot`` can download the published zips
with an md5 check. numpy only: no torch, no Pillow.
"""

from ._augment import augment_rotations
from ._banking77 import load_banking77
from ._base import clear_data_home, get_data_home
from ._digits import load_digits_images
from ._omniglot import load_omniglot, omniglot_shared_alphabets
from ._omniglot_runs import load_omniglot_runs

__all__ = [
    "augment_rotations",
    "clear_data_home",
    "get_data_home",
    "load_banking77",
    "load_digits_images",
    "load_omniglot",
    "load_omniglot_runs",
    "omniglot_shared_alphabets",
]
