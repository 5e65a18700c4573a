"""Few-shot data sets as scikit-learn :class:`~sklearn.utils.Bunch` objects.

Images come as float32 arrays of shape (n, C, h, w) in [0, 1] (Omniglot and
digits: one channel, ink = 1), texts as lists of str; every loader reads local
files (a path or the data home, see :func:`get_data_home`), and
``load_omniglot`` can download the published zips with an md5 check. A user's
own images load with :func:`load_image_folder` (a class-per-folder tree) or
go through a pipeline as file paths with :class:`ImageFileReader`. Images are
decoded by Pillow; no torch. :class:`InkNormalizer` centres and scales
drawings on their ink (its transform imports torch for the warp).
"""

from ._augment import augment_mirrors, augment_rotations, augment_splices
from ._banking77 import load_banking77
from ._base import clear_data_home, get_data_home
from ._digits import load_digits_images
from ._folder import ImageFileReader, load_image_folder
from ._ink import InkNormalizer, ink_radius
from ._omniglot import load_omniglot, omniglot_shared_alphabets
from ._omniglot_runs import load_omniglot_runs

__all__ = [
    "ImageFileReader",
    "InkNormalizer",
    "augment_mirrors",
    "augment_rotations",
    "augment_splices",
    "clear_data_home",
    "get_data_home",
    "ink_radius",
    "load_banking77",
    "load_digits_images",
    "load_image_folder",
    "load_omniglot",
    "load_omniglot_runs",
    "omniglot_shared_alphabets",
]
