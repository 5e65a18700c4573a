"""Peak memory of the heads, the feature cache and episodic evaluation (issue 8).

Each case runs in its own fresh Python process, so peaks do not mix; the
peak is ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` of that process, taken
after the measured call, minus the resident memory just before it (imports
done and the input built in place, with no temporary copy). Cases:

13. Heads' memory on float32 input, as extra peak over the input's size and
    as a ratio to the input size (targets: prototypes within 1.2x, fine-tuning
    within 2x):

    - ``PrototypeClassifier().fit`` on 200,000 x 640, 2000 classes;
    - ``FineTunedCosineClassifier(max_iter=5, device="cpu").fit`` on
      200,000 x 640, 5 classes.

14. ``BackboneTransformer(Linear(640, 640), device="cpu")`` fitted and used to
    transform 120,000 x 640 float32 rows: ``cache=False`` (the uncached
    baseline), ``cache=True`` with ``cache_size=1000`` and with the default
    ``cache_size``. Reports the extra peak, its ratio to the uncached peak,
    what stays resident once the output is dropped, and what of it is still
    in use (resident after glibc's ``malloc_trim`` returns the allocator's
    free pages): the cache's rows.

15. ``evaluate_episodes`` of 5-way 1-shot 15-query episodes on
    ``sklearn.datasets.load_digits`` (1,797 x 64) with ``n_episodes=600``
    (baseline) and ``n_episodes=100,000``: extra peak and wall time from the
    call to the first ``fit`` (a counting estimator stops the evaluation there
    by raising a private exception).

``--small`` divides the data sizes (and the 100,000 episodes) by 10 for a
quick smoke run; its figures are not the issue's. Run on an otherwise idle
machine with a few GiB free (the full run needs about 3 GiB):

    python benchmarks/bench_memory.py [--small]

To measure another version of skfewshot (e.g. before a fix), put its source
first on the path: ``PYTHONPATH=/path/to/old/checkout python
benchmarks/bench_memory.py``; the header names the skfewshot measured.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time

MiB = 2**20
SMALL_FACTOR = 10


def _rss() -> int:
    """Resident memory of this process now, in bytes."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak() -> int:
    """Peak resident memory of this process so far, in bytes (Linux: KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _release_free_memory():
    """Collect garbage and hand the allocator's free pages back to the system
    (glibc ``malloc_trim``), so what stays resident is memory still in use."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _features(n_rows, n_features, seed=0):
    """Float32 normal features written in place: no float64 temporary."""
    import numpy as np

    X = np.empty((n_rows, n_features), dtype=np.float32)
    np.random.default_rng(seed).standard_normal(out=X, dtype=np.float32)
    return X


def _measure(call):
    """Run ``call()``; return its result, the extra peak and the time taken."""
    before = _rss()
    if _peak() > before + 16 * MiB:
        # an earlier transient peak would hide a smaller one of the call
        print(
            f"warning: peak before the call {_peak() / MiB:.0f} MiB is above "
            f"the resident {before / MiB:.0f} MiB",
            file=sys.stderr,
        )
    start = time.perf_counter()
    result = call()
    seconds = time.perf_counter() - start
    return result, _peak() - before, seconds, before


# ----------------------------------------------------------------- the cases


def case_info(scale):
    import numpy as np
    import sklearn
    import torch

    import skfewshot

    cpu = platform.processor() or platform.machine()
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": torch.__version__,
        "sklearn": sklearn.__version__,
        "skfewshot": os.path.dirname(os.path.abspath(skfewshot.__file__)),
    }


def _head_case(make_head, n_rows, n_classes):
    import numpy as np

    X = _features(n_rows, 640)
    y = np.arange(n_rows) % n_classes
    head = make_head()
    _, extra, seconds, _ = _measure(lambda: head.fit(X, y))
    return {"input_mib": X.nbytes / MiB, "extra_mib": extra / MiB, "s": seconds}


def case_prototype(scale):
    from skfewshot.prototype import PrototypeClassifier

    return _head_case(PrototypeClassifier, 200_000 // scale, 2000 // scale)


def case_finetune(scale):
    from skfewshot.finetune import FineTunedCosineClassifier

    return _head_case(
        lambda: FineTunedCosineClassifier(max_iter=5, device="cpu"),
        200_000 // scale,
        5,
    )


def _transform_case(scale, **cache):
    import gc

    import torch

    from skfewshot.backbone import BackboneTransformer

    torch.manual_seed(0)
    X = _features(120_000 // scale, 640)
    backbone = BackboneTransformer(torch.nn.Linear(640, 640), device="cpu", **cache)
    out, extra, seconds, before = _measure(lambda: backbone.fit(X).transform(X))
    out_mib = out.nbytes / MiB
    del out
    gc.collect()
    resident = _rss() - before
    _release_free_memory()
    return {
        "input_mib": X.nbytes / MiB,
        "output_mib": out_mib,
        "extra_mib": extra / MiB,
        "resident_after_mib": resident / MiB,
        "in_use_after_mib": (_rss() - before) / MiB,
        "s": seconds,
    }


def case_transform_uncached(scale):
    return _transform_case(scale, cache=False)


def case_transform_cache_1000(scale):
    return _transform_case(scale, cache=True, cache_size=1000)


def case_transform_cache_default(scale):
    return _transform_case(scale, cache=True)


class _FirstFit(Exception):
    """Stops the evaluation at its first fit."""


def _episodes_case(n_episodes):
    from sklearn.base import BaseEstimator, ClassifierMixin
    from sklearn.datasets import load_digits

    from skfewshot.model_selection import evaluate_episodes

    class StopAtFirstFit(ClassifierMixin, BaseEstimator):
        def fit(self, X, y):
            raise _FirstFit

        def predict(self, X):  # pragma: no cover - never fitted
            raise AssertionError

    X, y = load_digits(return_X_y=True)

    def run():
        try:
            evaluate_episodes(
                StopAtFirstFit(), X, y, n_way=5, n_shot=1, n_query=15,
                n_episodes=n_episodes, random_state=0,
            )  # fmt: skip
        except _FirstFit:
            return
        raise AssertionError("the estimator was never fitted")

    _, extra, seconds, _ = _measure(run)
    return {"extra_mib": extra / MiB, "s": seconds}


def case_episodes_600(scale):
    return _episodes_case(600)


def case_episodes_100000(scale):
    return _episodes_case(100_000 // scale)


CASES = {name[5:]: fn for name, fn in globals().items() if name.startswith("case_")}


# ------------------------------------------------------------------ the table


def _run_case(name, scale):
    """Run one case in a fresh interpreter; its result dict or an error."""
    proc = subprocess.run(
        [sys.executable, __file__, "--case", name, "--scale", str(scale)],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        lines = (proc.stderr or proc.stdout).strip().splitlines() or ["no output"]
        return {"error": lines[-1]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _commit(path):
    """``git describe`` of the checkout holding ``path``, or "no git"."""
    try:
        return subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            cwd=path,
            check=True,
        ).stdout.strip()
    except (OSError, TypeError, subprocess.CalledProcessError):
        return "no git"


def _row(label, r, cells):
    if "error" in r:
        return f"| {label} | failed: {r['error']} |"
    return f"| {label} | " + " | ".join(cells(r)) + " |"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="data sizes / 10")
    parser.add_argument("--case", choices=sorted(CASES), help=argparse.SUPPRESS)
    parser.add_argument("--scale", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        print(json.dumps(CASES[args.case](args.scale)))
        return

    scale = SMALL_FACTOR if args.small else 1
    info = _run_case("info", scale)
    print(
        f"# {info.get('cpu')}, {info.get('cores')} cores "
        f"({info.get('torch_threads')} torch threads); Python {info.get('python')}, "
        f"numpy {info.get('numpy')}, torch {info.get('torch')}, scikit-learn "
        f"{info.get('sklearn')}; skfewshot {info.get('skfewshot')} "
        f"({_commit(info.get('skfewshot'))})"
    )
    print(
        "# peak = ru_maxrss of a fresh process per case, minus its resident "
        "memory just before the call"
        + (f"; --small: data sizes / {scale}" if scale > 1 else "")
    )

    print("\n## 13. heads' fit: extra peak over the float32 input\n")
    print("| case | input MiB | extra peak MiB | extra / input | time s |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, label, target in (
        ("prototype", f"PrototypeClassifier, {2000 // scale}-way", 1.2),
        ("finetune", "FineTunedCosineClassifier, 5-way, max_iter=5", 2.0),
    ):
        r = _run_case(name, scale)
        print(
            _row(
                f"{label} (target <= {target}x)",
                r,
                lambda r: [
                    f"{r['input_mib']:.0f}",
                    f"{r['extra_mib']:.0f}",
                    f"{r['extra_mib'] / r['input_mib']:.2f}x",
                    f"{r['s']:.1f}",
                ],
            )
        )

    n_rows = 120_000 // scale
    print(f"\n## 14. BackboneTransformer fit + transform, {n_rows:,} x 640\n")
    print(
        "| case | input MiB | output MiB | extra peak MiB | extra peak / uncached "
        "| resident after, output dropped MiB | of which in use MiB | time s |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    uncached = None
    for name, label in (
        ("transform_uncached", "cache=False (baseline)"),
        ("transform_cache_1000", "cache=True, cache_size=1000"),
        ("transform_cache_default", "cache=True, default cache_size"),
    ):
        r = _run_case(name, scale)
        if name == "transform_uncached" and "error" not in r:
            uncached = r["extra_mib"]
        print(
            _row(
                label,
                r,
                lambda r, uncached=uncached: [
                    f"{r['input_mib']:.0f}",
                    f"{r['output_mib']:.0f}",
                    f"{r['extra_mib']:.0f}",
                    f"{r['extra_mib'] / uncached:.2f}x" if uncached else "n/a",
                    f"{r['resident_after_mib']:.0f}",
                    f"{r['in_use_after_mib']:.0f}",
                    f"{r['s']:.1f}",
                ],
            )
        )

    print("\n## 15. evaluate_episodes on digits, 5-way 1-shot 15-query\n")
    print("| n_episodes | extra peak MiB before the first fit | time to first fit s |")
    print("| ---: | ---: | ---: |")
    for name, n in (
        ("episodes_600", 600),
        ("episodes_100000", 100_000 // scale),
    ):
        r = _run_case(name, scale)
        print(_row(f"{n:,}", r, lambda r: [f"{r['extra_mib']:.1f}", f"{r['s']:.2f}"]))


if __name__ == "__main__":
    main()
