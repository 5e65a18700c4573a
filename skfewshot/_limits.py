"""Bounds shared by the library and the command line, which reads them before
importing torch or scikit-learn (so this module imports nothing)."""

#: The scales an affine warp takes (``RandomAffine``, ``BackboneTransformer``'s
#: ``test_time_warps``, the CLI's ``--test-time-scales``): a copy scaled by
#: less is blank, by more one pixel's value, on any image up to 1000 pixels
#: wide; the float32 sampling grid (1 / scale) was not finite below about
#: 3e-39 and made every pixel NaN.
SCALE_BOUNDS = (1e-3, 1e3)
