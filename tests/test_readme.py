"""The README's usage snippet runs as written (kept fast: 3 epochs, few episodes)."""

import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT

pytestmark = pytest.mark.thread_independent  # see the marker in pyproject.toml


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


def own_images_commands():
    """The command lines of the README's "### Your own images" block."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n### Your own images\n", 1)[1].split("\n## ", 1)[0]
    block = re.findall(r"```bash\n(.*?)```", section, flags=re.DOTALL)[0]
    return [line for line in block.splitlines() if line and not line.startswith("#")]


def test_readme_own_images_block_runs(tmp_path):
    # a small folder: 4 training classes of shapes, then 2 novel support classes
    # and their queries; the lines run as written, `skfewshot` being the
    # console script installed beside this Python
    from PIL import Image

    rng = np.random.RandomState(0)

    def shape(kind):
        image = np.zeros((28, 28), np.uint8)
        r, c = rng.randint(2, 8, size=2)
        if kind == "bar":
            image[r : r + 20, c : c + 4] = 255
        elif kind == "band":
            image[r : r + 4, c : c + 20] = 255
        elif kind == "box":
            image[r : r + 16, c : c + 16] = 255
        elif kind == "cross":
            image[r : r + 20, c + 8 : c + 11] = 255
            image[r + 8 : r + 11, c : c + 20] = 255
        elif kind == "diagonal":
            for i in range(18):
                image[r + i, c + i : c + i + 3] = 255
        else:  # "ring"
            image[r : r + 16, c : c + 16] = 255
            image[r + 4 : r + 12, c + 4 : c + 12] = 0
        return image

    def folder(path, kinds, n):
        for kind in kinds:
            (path / kind).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(shape(kind)).save(path / kind / f"{i}.png")

    root = tmp_path / "my_images"
    folder(root / "train", ["bar", "band", "box", "cross"], 12)
    folder(root / "support", ["diagonal", "ring"], 3)
    folder(root / "query", ["diagonal", "ring"], 4)
    script = Path(sys.executable).parent / "skfewshot"
    outputs = []
    for line in own_images_commands():
        assert line.startswith("skfewshot "), line
        command = [str(script), *shlex.split(line)[1:]]
        result = subprocess.run(
            command, cwd=tmp_path, capture_output=True, text=True, timeout=300
        )
        assert result.returncode == 0, result.stderr
        outputs.append(result.stdout)
    assert (tmp_path / "my_backbone.pt").is_file()
    assert (tmp_path / "my_backbone.pt.json").is_file()
    rows = outputs[-1].splitlines()
    assert rows[0] == "file,prediction,probability,top2,top2_probability"
    assert len(rows) == 1 + 8
    predictions = {row.split(",")[0]: row.split(",")[1] for row in rows[1:]}
    # sorted paths as given; each query labelled as its (novel) shape, by far
    expected = {
        f"my_images/query/{kind}/{i}.png": kind
        for kind in ["diagonal", "ring"]
        for i in range(4)
    }
    assert predictions == expected
    assert list(predictions) == sorted(expected)
