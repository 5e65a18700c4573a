"""One memory probe for every test that bounds memory (not a test module).

Python-traced memory (``tracemalloc``) sees numpy's allocations, not torch's;
tests of torch code measure ``ru_maxrss`` in a subprocess instead.
"""

import gc
import tracemalloc


def traced(call):
    """Run ``call()`` under tracemalloc.

    Returns ``(result, peak, held)``: what ``call`` returned, the peak of
    traced memory above what was held before the call, and what is still held
    after it besides the result (measured once the result is dropped, so
    ``result`` is returned as its ``nbytes`` when it has one).
    """
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        result = call()
        peak = tracemalloc.get_traced_memory()[1] - base
        result = getattr(result, "nbytes", result)
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    return result, peak, held


def peak_bytes(call):
    """The peak of Python-traced memory above the start while ``call()`` runs.

    An exception raised by ``call`` propagates after tracing stops.
    """
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        call()
    finally:
        peak = tracemalloc.get_traced_memory()[1] - base
        tracemalloc.stop()
    return peak
