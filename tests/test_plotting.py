"""Tests for skfewshot.plotting.FewShotCurveDisplay."""

import subprocess
import sys
from types import SimpleNamespace

import matplotlib
import numpy as np
import pytest

import skfewshot

pytestmark = pytest.mark.thread_independent  # see the marker in pyproject.toml

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
from sklearn.base import BaseEstimator, TransformerMixin  # noqa: E402
from sklearn.datasets import make_blobs  # noqa: E402
from sklearn.frozen import FrozenEstimator  # noqa: E402
from sklearn.neighbors import KNeighborsClassifier, NearestCentroid  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.utils import check_random_state  # noqa: E402

from skfewshot._utils import seed_from  # noqa: E402
from skfewshot.model_selection import evaluate_episodes  # noqa: E402
from skfewshot.plotting import FewShotCurveDisplay  # noqa: E402

SHOTS = [1, 2, 5, 10]
MEANS = {
    "prototypes": [0.52, 0.63, 0.74, 0.80],
    "fine-tuned": [0.55, 0.67, 0.79, 0.86],
}
CIS = {
    "prototypes": [0.030, 0.025, 0.020, 0.015],
    "fine-tuned": [0.031, 0.024, 0.018, 0.012],
}


def point(n_shot, mean, ci95, n_way=5):
    """Stands in for the EpisodeScores of evaluate_episodes(..., n_shot=n_shot)."""
    return SimpleNamespace(
        n_shot=n_shot, n_way=n_way, mean=mean, ci95=ci95, n_query=15, n_episodes=100
    )


def scores_for(name, n_way=5):
    return [point(k, m, c, n_way) for k, m, c in zip(SHOTS, MEANS[name], CIS[name])]


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def band_bounds(band):
    """(x, lower, upper) of a fill_between band, from its polygon's vertices."""
    vertices = band.get_paths()[0].vertices
    xs = np.unique(vertices[:, 0])
    lower = np.array([vertices[vertices[:, 0] == x, 1].min() for x in xs])
    upper = np.array([vertices[vertices[:, 0] == x, 1].max() for x in xs])
    return xs, lower, upper


def test_from_scores_lines_and_bands_match_means_and_cis():
    scores = {name: scores_for(name) for name in MEANS}
    display = FewShotCurveDisplay.from_scores(scores)

    assert len(display.lines_) == len(display.bands_) == 2
    for line, band, name in zip(display.lines_, display.bands_, MEANS):
        mean, ci = np.array(MEANS[name]), np.array(CIS[name])
        np.testing.assert_array_equal(line.get_xdata(), SHOTS)
        np.testing.assert_allclose(line.get_ydata(), mean)
        xs, lower, upper = band_bounds(band)
        np.testing.assert_array_equal(xs, SHOTS)
        np.testing.assert_allclose(lower, mean - ci)
        np.testing.assert_allclose(upper, mean + ci)
        # the band wears its line's colour
        np.testing.assert_allclose(
            band.get_facecolor()[0][:3], matplotlib.colors.to_rgb(line.get_color())
        )
        assert band.get_alpha() == 0.2
    np.testing.assert_array_equal(display.shots, SHOTS)
    np.testing.assert_allclose(display.mean, [MEANS[n] for n in MEANS])
    np.testing.assert_allclose(display.ci95, [CIS[n] for n in CIS])
    assert display.n_way == 5
    assert display.scores is scores


def test_labels_title_legend_and_ticks():
    display = FewShotCurveDisplay.from_scores({n: scores_for(n) for n in MEANS})
    ax = display.ax_
    assert ax.get_xlabel() == "shots per class (K)"
    assert ax.get_ylabel() == "accuracy"
    assert ax.get_title() == "5-way"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == list(MEANS)
    assert [line.get_label() for line in display.lines_] == list(MEANS)
    assert ax.get_xscale() == "log"
    np.testing.assert_array_equal(ax.get_xticks(), SHOTS)
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1", "2", "5", "10"]
    assert display.figure_ is ax.figure
    assert display.lines_[0].get_marker() == "o"


def test_points_sorted_by_shot_and_names_override():
    shuffled = scores_for("prototypes")[::-1]
    display = FewShotCurveDisplay.from_scores(shuffled, names="ProtoNet")
    np.testing.assert_array_equal(display.lines_[0].get_xdata(), SHOTS)
    np.testing.assert_allclose(display.lines_[0].get_ydata(), MEANS["prototypes"])
    assert display.estimator_names == ["ProtoNet"]
    assert [t.get_text() for t in display.ax_.get_legend().get_texts()] == ["ProtoNet"]


def test_single_list_without_name_draws_no_legend():
    display = FewShotCurveDisplay.from_scores(scores_for("prototypes"))
    assert display.ax_.get_legend() is None
    assert len(display.lines_) == 1


def test_constructor_and_plot_on_given_ax_with_kwargs():
    fig, ax = plt.subplots()
    display = FewShotCurveDisplay(
        shots=[5, 1], mean=[0.8, 0.5], ci95=[0.01, 0.02], estimator_names=["a"]
    )
    assert display.plot(ax=ax, linewidth=3, band_alpha=0.5, ls="--") is display
    assert display.ax_ is ax and display.figure_ is fig
    # plot sorts by shot; the 1-D mean is one estimator
    np.testing.assert_array_equal(display.lines_[0].get_xdata(), [1, 5])
    np.testing.assert_allclose(display.lines_[0].get_ydata(), [0.5, 0.8])
    assert display.lines_[0].get_linewidth() == 3
    assert display.lines_[0].get_linestyle() == "--"
    assert display.bands_[0].get_alpha() == 0.5
    assert ax.get_title() == ""  # n_way unknown


def test_ax_reuse_adds_lines_to_the_same_axes():
    first = FewShotCurveDisplay.from_scores({"prototypes": scores_for("prototypes")})
    second = FewShotCurveDisplay.from_scores(
        {"fine-tuned": scores_for("fine-tuned")}, ax=first.ax_
    )
    assert second.ax_ is first.ax_
    assert len(first.ax_.get_lines()) == 2
    assert [t.get_text() for t in first.ax_.get_legend().get_texts()] == list(MEANS)
    # re-plotting an existing display onto a new axes redraws it there
    fig, ax = plt.subplots()
    first.plot(ax=ax, names=["renamed"])
    assert first.ax_ is ax and len(ax.get_lines()) == 1
    assert first.lines_[0].get_label() == "renamed"


def test_save_png(tmp_path):
    display = FewShotCurveDisplay.from_scores({n: scores_for(n) for n in MEANS})
    path = tmp_path / "curve.png"
    display.figure_.savefig(path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"shots": [1, 5], "mean": [0.5, 0.6, 0.7], "ci95": [0, 0, 0]}, "shape"),
        ({"shots": [1, 5], "mean": [[0.5, 0.6]], "ci95": [[0.1, 0.1]] * 2}, "ci95"),
        ({"shots": [1, 1], "mean": [0.5, 0.6], "ci95": [0, 0]}, "distinct"),
        ({"shots": [0, 1], "mean": [0.5, 0.6], "ci95": [0, 0]}, ">= 1"),
        ({"shots": [1.5, 2], "mean": [0.5, 0.6], "ci95": [0, 0]}, "ints"),
        ({"shots": [], "mean": [], "ci95": []}, "non-empty"),
        ({"shots": [1, 5], "mean": [0.5, 0.6], "ci95": [0.1, -0.1]}, ">= 0"),
        (
            {"shots": [1], "mean": [0.5], "ci95": [0], "estimator_names": ["a", "b"]},
            "2 estimator names",
        ),
    ],
)
def test_plot_rejects_bad_curves(kwargs, match):
    with pytest.raises(ValueError, match=match):
        FewShotCurveDisplay(**kwargs).plot()


def test_from_scores_rejects_mismatched_inputs():
    short = scores_for("fine-tuned")[:3]
    with pytest.raises(ValueError, match=r"scores\['b'\] has shots \[1, 2, 5\]"):
        FewShotCurveDisplay.from_scores({"a": scores_for("prototypes"), "b": short})
    with pytest.raises(ValueError, match="mixes n_way=10 with n_way=5"):
        FewShotCurveDisplay.from_scores(
            {"a": scores_for("prototypes"), "b": scores_for("fine-tuned", n_way=10)}
        )
    with pytest.raises(ValueError, match="repeated shot counts"):
        FewShotCurveDisplay.from_scores([point(1, 0.5, 0.1), point(1, 0.6, 0.1)])
    with pytest.raises(ValueError, match="1 estimator names"):
        FewShotCurveDisplay.from_scores(
            {n: scores_for(n) for n in MEANS}, names=["only one"]
        )
    with pytest.raises(ValueError, match="scores is empty"):
        FewShotCurveDisplay.from_scores({})
    with pytest.raises(ValueError, match=r"scores\['a'\] is empty"):
        FewShotCurveDisplay.from_scores({"a": []})
    with pytest.raises(TypeError, match=r"without \['n_shot', 'n_way'\]"):
        FewShotCurveDisplay.from_scores({"a": [SimpleNamespace(mean=0.5, ci95=0.1)]})
    with pytest.raises(TypeError, match="got SimpleNamespace"):
        FewShotCurveDisplay.from_scores(point(1, 0.5, 0.1))
    with pytest.raises(TypeError, match=r"scores\['a'\] must be a list"):
        FewShotCurveDisplay.from_scores({"a": point(1, 0.5, 0.1)})


@pytest.mark.parametrize(
    "call, caller",
    [
        (lambda: FewShotCurveDisplay(shots=[1], mean=[0.5], ci95=[0.1]).plot(), "plot"),
        (lambda: FewShotCurveDisplay.from_scores([point(1, 0.5, 0.1)]), "from_scores"),
        (
            lambda: FewShotCurveDisplay.from_estimator(None, None, None),
            "from_estimator",
        ),
    ],
    ids=["plot", "from_scores", "from_estimator"],
)
def test_missing_matplotlib_raises_a_clear_import_error(monkeypatch, call, caller):
    # scikit-learn's check_matplotlib_support, before any work
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    match = (
        rf"^FewShotCurveDisplay\.{caller} requires matplotlib\. You can install "
        r"matplotlib with `pip install matplotlib`$"
    )
    with pytest.raises(ImportError, match=match):
        call()


def test_import_does_not_need_torch():
    # the curve display draws seeds and runs episodes without torch
    code = """
import subprocess
import sys
import matplotlib
matplotlib.use("Agg")
import numpy as np
from sklearn.neighbors import NearestCentroid
import skfewshot.model_selection, skfewshot.plotting
y = np.repeat(np.arange(4), 5)
X = np.random.RandomState(0).normal(size=(20, 3)) + y[:, None]
skfewshot.plotting.FewShotCurveDisplay.from_estimator(
    NearestCentroid(), X, y, shots=(1, 2), n_way=2, n_query=2, n_episodes=2,
    random_state=0,
)
assert "torch" not in sys.modules, "torch was imported"
"""
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr


def test_import_does_not_need_matplotlib(monkeypatch):
    for mod in [m for m in sys.modules if m.split(".")[0] == "matplotlib"]:
        monkeypatch.setitem(sys.modules, mod, None)
    monkeypatch.delitem(sys.modules, "skfewshot.plotting")
    monkeypatch.delattr(skfewshot, "plotting", raising=False)
    import skfewshot.plotting as reloaded

    assert reloaded.FewShotCurveDisplay is not FewShotCurveDisplay


# --- from_estimator: real episodes through evaluate_episodes ---------------------


@pytest.fixture(scope="module")
def blobs():
    """10 overlapping Gaussian classes, 40 samples each."""
    return make_blobs(n_samples=400, centers=10, cluster_std=3.0, random_state=0)


EPISODES = dict(n_way=4, n_query=5, n_episodes=8)


def test_from_estimator_end_to_end_matches_evaluate_episodes(blobs):
    X, y = blobs
    estimators = {"centroid": NearestCentroid(), "1-NN": KNeighborsClassifier(1)}
    shots = (5, 2)
    display = FewShotCurveDisplay.from_estimator(
        estimators, X, y, shots=shots, random_state=0, **EPISODES
    )
    # by hand: one seed per shot count drawn from random_state, in increasing
    # K, shared by every estimator so the lines compare the same episodes
    rng = check_random_state(0)
    seeds = {k: seed_from(rng) for k in sorted(shots)}
    np.testing.assert_array_equal(display.shots, [2, 5])
    for i, (label, est) in enumerate(estimators.items()):
        for j, k in enumerate([2, 5]):
            expected = evaluate_episodes(
                est, X, y, n_shot=k, random_state=seeds[k], **EPISODES
            )
            got = display.scores[label][j]
            np.testing.assert_array_equal(got.accuracies, expected.accuracies)
            assert (got.n_shot, got.n_way, got.n_episodes) == (k, 4, 8)
            assert got.random_state == seeds[k]
            assert display.mean[i, j] == pytest.approx(expected.mean)
            assert display.ci95[i, j] == pytest.approx(expected.ci95)
        np.testing.assert_allclose(display.lines_[i].get_ydata(), display.mean[i])
        _, lower, upper = band_bounds(display.bands_[i])
        np.testing.assert_allclose(lower, display.mean[i] - display.ci95[i])
        np.testing.assert_allclose(upper, display.mean[i] + display.ci95[i])
    assert display.ax_.get_title() == "4-way"
    assert [t.get_text() for t in display.ax_.get_legend().get_texts()] == [
        "centroid",
        "1-NN",
    ]
    # not a degenerate curve: every band has width
    assert np.all(display.ci95 > 0)


def test_from_estimator_same_seed_same_figure(blobs):
    X, y = blobs

    def curve(seed):
        return FewShotCurveDisplay.from_estimator(
            KNeighborsClassifier(1), X, y, shots=(1, 3), random_state=seed, **EPISODES
        )

    a, b, c = curve(1), curve(1), curve(2)
    np.testing.assert_array_equal(a.mean, b.mean)
    assert not np.array_equal(a.mean, c.mean)


def test_from_estimator_names_and_ax(blobs):
    X, y = blobs
    pipe = make_pipeline(StandardScaler(), NearestCentroid())
    display = FewShotCurveDisplay.from_estimator(
        pipe, X, y, shots=(2,), random_state=0, **EPISODES
    )
    assert display.lines_[0].get_label() == "StandardScaler+NearestCentroid"
    fig, ax = plt.subplots()
    named = FewShotCurveDisplay.from_estimator(
        pipe, X, y, shots=(2,), name="scaled", ax=ax, random_state=0, **EPISODES
    )
    assert named.ax_ is ax and named.figure_ is fig
    assert list(named.scores) == ["scaled"]
    # a plain list of real EpisodeScores is labelled by its estimator_name
    again = FewShotCurveDisplay.from_scores(
        display.scores["StandardScaler+NearestCentroid"]
    )
    assert [t.get_text() for t in again.ax_.get_legend().get_texts()] == [
        "StandardScaler+NearestCentroid"
    ]


class CountingFrozen(TransformerMixin, BaseEstimator):
    """A frozen feature extractor that counts how often it transforms."""

    frozen_features = True
    n_transform = 0

    def fit(self, X, y=None):
        return self

    def transform(self, X):
        type(self).n_transform += 1
        return np.asarray(X) * 2.0


def test_from_estimator_runs_a_frozen_backbone_once_for_all_shots(blobs, monkeypatch):
    X, y = blobs
    monkeypatch.setattr(CountingFrozen, "n_transform", 0)
    pipe = make_pipeline(CountingFrozen(), NearestCentroid())
    display = FewShotCurveDisplay.from_estimator(
        pipe, X, y, shots=(2, 3, 5), random_state=0, **EPISODES
    )
    assert CountingFrozen.n_transform == 1
    assert display.lines_[0].get_label() == "CountingFrozen+NearestCentroid"
    # the reuse changes nothing: the same numbers as the whole pipeline per episode
    seed = seed_from(check_random_state(0))
    expected = evaluate_episodes(pipe, X, y, n_shot=2, random_state=seed, **EPISODES)
    np.testing.assert_array_equal(
        display.scores["CountingFrozen+NearestCentroid"][0].accuracies,
        expected.accuracies,
    )
    assert display.scores["CountingFrozen+NearestCentroid"][0].estimator_name == (
        "CountingFrozen+NearestCentroid"
    )


def test_from_estimator_with_a_fitted_frozen_estimator(blobs):
    # FrozenEstimator.fit needs y: the reused prefix is fitted like a pipeline step
    X, y = blobs
    scaler = FrozenEstimator(StandardScaler().fit(X))
    pipe = make_pipeline(scaler, NearestCentroid())
    display = FewShotCurveDisplay.from_estimator(
        pipe, X, y, shots=(2,), random_state=0, **EPISODES
    )
    seed = seed_from(check_random_state(0))
    expected = evaluate_episodes(pipe, X, y, n_shot=2, random_state=seed, **EPISODES)
    np.testing.assert_array_equal(
        display.scores["FrozenEstimator+NearestCentroid"][0].accuracies,
        expected.accuracies,
    )


def test_from_estimator_rejects_bad_inputs(blobs):
    X, y = blobs
    est = NearestCentroid()
    with pytest.raises(ValueError, match="keys are the names"):
        FewShotCurveDisplay.from_estimator({"a": est}, X, y, name="b")
    with pytest.raises(ValueError, match="empty dict"):
        FewShotCurveDisplay.from_estimator({}, X, y)
    with pytest.raises(ValueError, match="shots must be distinct"):
        FewShotCurveDisplay.from_estimator(est, X, y, shots=(2, 2))
    with pytest.raises(ValueError, match="n_way=11"):
        FewShotCurveDisplay.from_estimator(est, X, y, shots=(2,), n_way=11)


def test_from_estimator_draws_every_shot_count_from_the_same_classes():
    # 5 hard classes of 20 rows, 5 easy ones of 40: 10 shots + 15 queries
    # draw only the easy ones, and 1 shot drew all ten: the curve compared
    # different classes (mean 0.59 -> 0.99, no warning)
    rng = np.random.RandomState(0)
    y = np.repeat(np.arange(10), [20] * 5 + [40] * 5)
    centers = np.vstack(
        [rng.normal(scale=0.3, size=(5, 4)), rng.normal(scale=5, size=(5, 4))]
    )
    X = centers[y] + rng.normal(size=(len(y), 4))
    settings = dict(n_way=5, n_query=15, n_episodes=10)
    with pytest.warns(UserWarning) as record:
        display = FewShotCurveDisplay.from_estimator(
            KNeighborsClassifier(1), X, y, shots=[10, 1], random_state=0, **settings
        )
    assert [str(w.message) for w in record] == [
        "FewShotCurveDisplay.from_estimator leaves out 5 of the 10 classes at "
        "every shot count: the largest, 10 shots, draws only classes with at "
        "least max(shots) + n_query = 25 samples, and every point averages over "
        "the same classes."
    ]
    assert record[0].filename == __file__
    rng = check_random_state(0)
    seeds = [seed_from(rng) for _ in range(2)]
    easy = y >= 5
    for j, (k, seed) in enumerate(zip([1, 10], seeds)):
        expected = evaluate_episodes(
            KNeighborsClassifier(1), X[easy], y[easy], n_shot=k, random_state=seed,
            **settings,
        )  # fmt: skip
        got = display.scores["KNeighborsClassifier"][j]
        np.testing.assert_array_equal(got.accuracies, expected.accuracies)


def test_from_estimator_validates_the_settings_under_its_own_name(blobs):
    X, y = blobs
    with pytest.raises(
        ValueError,
        match=r"'n_query' parameter of FewShotCurveDisplay.from_estimator must be "
        r"an int in the range \[1, inf\)\. Got 0 instead",
    ):
        FewShotCurveDisplay.from_estimator(NearestCentroid(), X, y, n_query=0)


def test_from_estimator_with_one_episode_draws_no_band(blobs):
    X, y = blobs
    display = FewShotCurveDisplay.from_estimator(
        KNeighborsClassifier(1), X, y, shots=(1, 2), random_state=0,
        n_way=4, n_query=5, n_episodes=1,
    )  # fmt: skip
    assert np.isnan(display.ci95).all()
    assert np.isfinite(display.lines_[0].get_ydata()).all()
