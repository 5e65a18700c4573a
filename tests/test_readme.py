"""The README's usage snippet runs as written (kept fast: 3 epochs, few episodes)."""

import re

import numpy as np
from conftest import ROOT


def usage_snippet():
    """The first Python block under the README's "## Usage" heading."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    usage = readme.split("\n## Usage\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", usage, flags=re.DOTALL)
    assert blocks, "README.md: no ```python block under ## Usage"
    return blocks[0]


def test_readme_usage_snippet_runs(capsys):
    namespace = {"__name__": "__readme__"}
    exec(compile(usage_snippet(), "README.md (usage)", "exec"), namespace)
    out = capsys.readouterr().out
    search, proba, scores = namespace["search"], namespace["proba"], namespace["scores"]
    assert search.best_params_["finetunedcosineclassifier__alpha"] in (1e-3, 1e-1, 10.0)
    assert len(search.cv_results_["mean_test_score"]) == 3
    assert proba.shape == (45, 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-5)
    assert (scores.n_way, scores.n_shot, scores.n_episodes) == (3, 5, 100)
    assert str(scores) in out
    # the pipeline was refitted with the tuned alpha, not left at the default
    head = namespace["pipe"].named_steps["finetunedcosineclassifier"]
    assert head.alpha == search.best_params_["finetunedcosineclassifier__alpha"]
