"""Episodes, searches and predictions on a real ``dask.distributed`` cluster.

One ``LocalCluster`` of two worker processes (one thread each) serves the
whole module; ``joblib.parallel_config(backend="dask")`` sends the episodes to
it. Every result is compared with the same call at ``n_jobs=1``: the same seed
must give the same numbers, bit for bit, wherever the episodes ran.
"""

import logging
import os
import signal
import warnings

import numpy as np
import pytest
from joblib import parallel_config
from sklearn.base import BaseEstimator, TransformerMixin, clone
from sklearn.datasets import make_blobs
from sklearn.model_selection import GridSearchCV
from sklearn.neighbors import NearestCentroid
from sklearn.pipeline import make_pipeline

from skfewshot import FineTunedCosineClassifier, PrototypeClassifier
from skfewshot.model_selection import (
    EpisodicGridSearchCV,
    EpisodicSplit,
    evaluate_episodes,
)

distributed = pytest.importorskip(
    "distributed",
    reason="dask.distributed is not installed (pip install 'skfewshot[dask]')",
)

EPISODES = dict(n_way=5, n_shot=2, n_query=3, n_episodes=30, random_state=0)


@pytest.fixture
def blobs():
    X, y = make_blobs(n_samples=300, centers=10, cluster_std=3, random_state=0)
    return X, y


def executed(client):
    """Tasks the cluster's workers have run so far, all workers together."""
    counts = client.run(lambda dask_worker: dask_worker.state.executed_count)
    return sum(counts.values())


def worker_pids(client):
    """The process ids of the cluster's workers."""
    return sorted(client.run(os.getpid).values())


def on_worker():
    """True in a dask worker process's task, False in the client."""
    try:
        distributed.get_worker()
    except ValueError:
        return False
    return True


# ------------------------------------------------------------ evaluate_episodes


@pytest.mark.parametrize(
    "head",
    # the per-episode path: a foreign estimator, and a library head with an
    # option the batched path declines (a batched head never reaches joblib)
    [NearestCentroid(), PrototypeClassifier(unlabelled_label=-1)],
    ids=["NearestCentroid", "PrototypeClassifier"],
)
def test_evaluate_episodes_on_the_cluster_equals_one_job(client, blobs, head):
    X, y = blobs
    expected = evaluate_episodes(head, X, y, **EPISODES, n_jobs=1)
    before = executed(client)
    with (
        parallel_config(backend="dask"),
        warnings.catch_warnings(record=True) as caught,
    ):
        warnings.simplefilter("always")
        scores = evaluate_episodes(head, X, y, **EPISODES, n_jobs=2)
    assert executed(client) > before  # the episodes ran on the workers
    # two worker threads: no warning that the episodes run in the client
    assert not [w for w in caught if "runs every episode" in str(w.message)]
    np.testing.assert_array_equal(scores.accuracies, expected.accuracies)
    assert scores.estimator_name == expected.estimator_name


def record_scatters(client, monkeypatch):
    """``(data, broadcast)`` of each ``client.scatter`` call from now on.

    The list is filled in place. joblib's dask backend scatters the objects
    given to its ``scatter`` parameter to every worker when it starts, and
    any other argument over 1 kB to one worker when a task first needs it;
    the tasks carry their futures, smaller arguments travel in each task.
    """
    scattered = []
    scatter = client.scatter

    def recording(data, *args, **kwargs):
        scattered.append((data, kwargs.get("broadcast", False)))
        return scatter(data, *args, **kwargs)

    monkeypatch.setattr(client, "scatter", recording)
    return scattered


def record_shared(monkeypatch):
    """``(data, future)`` of each object sent once for a whole job from now on.

    The list is filled in place: every call of
    :func:`skfewshot._utils.rebuildable_future` by ``model_selection``.
    """
    import skfewshot.model_selection

    sent = []
    rebuildable_future = skfewshot.model_selection.rebuildable_future

    def recording(client, data):
        future = rebuildable_future(client, data)
        sent.append((data, future))
        return future

    monkeypatch.setattr(skfewshot.model_selection, "rebuildable_future", recording)
    return sent


def test_each_job_sends_its_data_under_keys_of_its_own(client, monkeypatch):
    # joblib's own scatter hashes the data: a second job on the same arrays got
    # the first job's keys while the scheduler was still forgetting them, and
    # its tasks were cancelled ("lost dependencies"); seen once in CI
    X, y = wide_blobs()
    sent = record_shared(monkeypatch)
    expected = evaluate_episodes(NearestCentroid(), X, y, **EPISODES, n_jobs=1)
    with parallel_config(backend="dask"):
        for _ in range(3):
            scores = evaluate_episodes(NearestCentroid(), X, y, **EPISODES, n_jobs=2)
            np.testing.assert_array_equal(scores.accuracies, expected.accuracies)
    assert len(sent) == 6  # X and y, per job
    assert len({future.key for _, future in sent}) == 6  # none shared


def test_shared_data_outlive_the_worker_that_holds_them(client):
    # data scattered by client.scatter is lost with the last worker holding
    # it, and the Active Memory Manager keeps one copy even of a broadcast:
    # a job whose shared X went down with a killed worker had its remaining
    # tasks cancelled ("already forgotten"); seen in CI under load
    from skfewshot._utils import rebuildable_future

    X = np.arange(1000.0).reshape(100, 10)
    future = rebuildable_future(client, X)
    distributed.wait(future)
    (holder,) = client.who_has(future)[future.key]
    os.kill(client.run(os.getpid)[holder], signal.SIGKILL)
    np.testing.assert_array_equal(future.result(timeout=60), X)
    assert holder not in client.who_has(future)[future.key]  # rebuilt elsewhere
    client.wait_for_workers(2, timeout=60)  # the nanny's replacement


def wide_blobs():
    """Episodes whose rows weigh over 1 kB (joblib's dask backend scatters
    arguments over 1 kB), 240 kB in all."""
    X, y = make_blobs(
        n_samples=300, centers=10, n_features=100, cluster_std=10, random_state=0
    )
    return X, y


@pytest.mark.parametrize("n_unknown_way", [0, 1], ids=["closed-set", "open-set"])
def test_the_features_go_to_the_cluster_once(client, monkeypatch, n_unknown_way):
    X, y = wide_blobs()
    settings = dict(EPISODES, n_unknown_way=n_unknown_way)
    with warnings.catch_warnings():  # open-set: NearestCentroid has no AUROC
        warnings.simplefilter("ignore", UserWarning)
        expected = evaluate_episodes(NearestCentroid(), X, y, **settings, n_jobs=1)
        scattered = record_scatters(client, monkeypatch)
        sent = record_shared(monkeypatch)
        arguments = record_task_arguments(client, monkeypatch)
        before = executed(client)
        with parallel_config(backend="dask"):
            scores = evaluate_episodes(NearestCentroid(), X, y, **settings, n_jobs=2)
    assert executed(client) > before  # the episodes ran on the workers
    # X and y once for all 30 episodes, nothing scattered; the tasks carry
    # their futures and their episode's indices, and slice the episode on
    # the worker (sending each episode's rows would scatter its 2 arrays)
    assert scattered == []
    assert [data is X for data, _ in sent] == [True, False]
    np.testing.assert_array_equal(sent[1][0], y)
    # every task: (score, head, X's future, y's future, (support, query))
    assert len(arguments) == EPISODES["n_episodes"]
    futures = {type(args[2]).__name__ for args in arguments}
    assert futures == {"Future"}
    assert {args[2].key for args in arguments} == {sent[0][1].key}
    assert {args[3].key for args in arguments} == {sent[1][1].key}
    assert {len(args[4][0]) for args in arguments} == {10}
    np.testing.assert_array_equal(scores.accuracies, expected.accuracies)
    if n_unknown_way:
        np.testing.assert_array_equal(
            scores.known_accuracies, expected.known_accuracies
        )


def test_grid_search_over_episodic_split_scatters_x_once(client, monkeypatch):
    # scikit-learn's search gives every fold the whole X and y and the
    # fold's indices: X goes to the cluster once for the whole search
    X, y = wide_blobs()
    cv = EpisodicSplit(**EPISODES)
    grid = {"metric": ["euclidean", "manhattan"]}
    expected = GridSearchCV(NearestCentroid(), grid, cv=cv, n_jobs=1).fit(X, y)
    scattered = record_scatters(client, monkeypatch)
    with parallel_config(backend="dask"):
        search = GridSearchCV(NearestCentroid(), grid, cv=cv, n_jobs=2).fit(X, y)
    assert [data is X for data, _ in scattered].count(True) == 1
    assert all(np.ndim(data) < 2 for data, _ in scattered if data is not X)
    n = EPISODES["n_episodes"]
    np.testing.assert_array_equal(
        split_scores(search.cv_results_, n), split_scores(expected.cv_results_, n)
    )


def record_task_arguments(client, monkeypatch):
    """The arguments of every task joblib submits from now on (filled in place).

    joblib's dask backend submits one dask task per batch of joblib tasks;
    each joblib task's positional arguments are one list here, with the
    futures of scattered arguments in place of the data.
    """
    arguments = []
    submit = client.submit

    def recording(*args, **kwargs):  # joblib's batches have tasks=
        tasks = kwargs.get("tasks", ())
        arguments.extend(list(task_args) for _, task_args, _ in tasks)
        return submit(*args, **kwargs)

    monkeypatch.setattr(client, "submit", recording)
    return arguments


def test_a_list_is_sliced_in_the_client(client, monkeypatch):
    # joblib's dask backend cannot track a list (no weak reference): whole,
    # it would be pickled with every task; each task gets its episode's rows
    X, y = wide_blobs()
    expected = evaluate_episodes(NearestCentroid(), X, y, **EPISODES, n_jobs=1)
    rows = list(X)
    arguments = record_task_arguments(client, monkeypatch)
    with parallel_config(backend="dask"):
        scores = evaluate_episodes(NearestCentroid(), rows, y, **EPISODES, n_jobs=2)
    assert len(arguments) == EPISODES["n_episodes"]
    assert not any(argument is rows for args in arguments for argument in args)
    lengths = {len(argument) for args in arguments for argument in args[1:]}
    assert lengths == {10, 15}  # the support and query rows and labels
    np.testing.assert_array_equal(scores.accuracies, expected.accuracies)


class CountingTransformer(TransformerMixin, BaseEstimator):
    """A frozen row-wise map counting, per process, the rows it transforms."""

    frozen_features = True
    rows = 0

    def fit(self, X, y=None):
        self.n_features_in_ = np.asarray(X).shape[1]
        return self

    def transform(self, X):
        X = np.asarray(X, dtype=float)
        type(self).rows += len(X)
        return np.tanh(X) * 2.0


def worker_rows():
    """``CountingTransformer.rows`` in the process that runs this."""
    return CountingTransformer.rows


def test_frozen_step_runs_once_in_the_client(client, blobs):
    X, y = blobs
    pipe = make_pipeline(CountingTransformer(), NearestCentroid())
    expected = evaluate_episodes(pipe, X, y, **EPISODES, n_jobs=1)
    CountingTransformer.rows = 0
    with parallel_config(backend="dask"):
        scores = evaluate_episodes(pipe, X, y, **EPISODES, n_jobs=2)
    # each row once, in this process, before any episode is dispatched; the
    # workers receive features and never run the step
    assert CountingTransformer.rows == len(X)
    assert set(client.run(worker_rows).values()) == {0}
    np.testing.assert_array_equal(scores.accuracies, expected.accuracies)


class EpisodeFailure(RuntimeError):
    """Raised by :class:`FailsOnWorkers` (a type the client must see again)."""


class FailsOnWorkers(NearestCentroid):
    """A NearestCentroid whose ``fit`` fails in a dask worker's task."""

    def fit(self, X, y):
        if on_worker():
            pid = os.getpid()
            raise EpisodeFailure(f"support of {len(X)} rows refused on pid {pid}")
        return super().fit(X, y)


def test_a_failing_task_surfaces_as_the_original_exception(client, blobs):
    X, y = blobs
    evaluate_episodes(FailsOnWorkers(), X, y, **EPISODES, n_jobs=1)  # fine here
    with parallel_config(backend="dask"):
        with pytest.raises(
            EpisodeFailure, match=r"^support of 10 rows refused on pid \d+$"
        ) as excinfo:
            evaluate_episodes(FailsOnWorkers(), X, y, **EPISODES, n_jobs=2)
    # raised in a worker process, re-raised here with its type and message
    assert str(excinfo.value).split()[-1] in map(str, worker_pids(client))


RUNS_HERE = (
    r"^joblib's dask backend runs every episode one after another in this "
    r"process, not on the cluster: it takes the cluster's total number of "
    r"worker threads as n_jobs \(whatever n_jobs is given\), and the cluster "
    r"has 1\. Give the cluster at least 2 worker threads, e\.g\. "
    r"LocalCluster\(n_workers=2, threads_per_worker=1\), or leave out "
    r"backend='dask' to use this machine's cores\.$"
)


def test_a_one_thread_cluster_warns_that_the_episodes_run_here(blobs):
    # joblib's dask backend takes the cluster's thread count as n_jobs, and
    # runs n_jobs=1 sequentially in the client: FailsOnWorkers would raise
    # on the worker, so fitting at all shows where the episodes ran
    X, y = blobs
    cluster = distributed.LocalCluster(
        n_workers=1,
        threads_per_worker=1,
        processes=True,
        dashboard_address=":0",  # any free port
        silence_logs=logging.ERROR,
    )
    one = distributed.Client(cluster, set_as_default=False, timeout="60s")
    try:
        one.wait_for_workers(1, timeout=60)
        expected = evaluate_episodes(NearestCentroid(), X, y, **EPISODES)
        grid = {"metric": ["euclidean", "manhattan"]}
        settings = dict(EPISODES, refit=False)
        with parallel_config(backend="dask", client=one):
            with pytest.warns(UserWarning, match=RUNS_HERE) as record:
                scores = evaluate_episodes(FailsOnWorkers(), X, y, **EPISODES, n_jobs=2)
            assert len(record) == 1 and record[0].filename == __file__
            with pytest.warns(UserWarning, match=RUNS_HERE) as record:
                EpisodicGridSearchCV(FailsOnWorkers(), grid, **settings).fit(X, y)
            # once per candidate (each is one call to joblib), at this line
            assert len(record) == 2
            assert {warning.filename for warning in record} == {__file__}
        assert executed(one) == 0
        np.testing.assert_array_equal(scores.accuracies, expected.accuracies)
    finally:
        one.close()
        cluster.close()


# ------------------------------------------------- searches and curves


def split_scores(results, n_splits):
    return np.column_stack([results[f"split{i}_test_score"] for i in range(n_splits)])


def test_episodic_grid_search_on_the_cluster_equals_one_job(client, blobs):
    X, y = blobs
    pipe = make_pipeline(
        CountingTransformer(), PrototypeClassifier(unlabelled_label=-1)
    )
    grid = {"prototypeclassifier__metric": ["cosine", "euclidean"]}
    settings = dict(EPISODES, refit=False)
    expected = EpisodicGridSearchCV(pipe, grid, **settings, n_jobs=1).fit(X, y)
    CountingTransformer.rows = 0
    before = executed(client)
    with parallel_config(backend="dask"):
        search = EpisodicGridSearchCV(pipe, grid, **settings, n_jobs=2).fit(X, y)
    assert executed(client) > before
    # one run of the frozen step for the whole search, in this process
    assert CountingTransformer.rows == len(X)
    assert set(client.run(worker_rows).values()) == {0}
    n = EPISODES["n_episodes"]
    np.testing.assert_array_equal(
        split_scores(search.cv_results_, n), split_scores(expected.cv_results_, n)
    )
    assert search.best_params_ == expected.best_params_


def test_grid_search_over_episodic_split_on_the_cluster_equals_one_job(client, blobs):
    # scikit-learn's own search: each fold's fit and score run on a worker
    X, y = blobs
    cv = EpisodicSplit(**EPISODES)
    grid = {"metric": ["euclidean", "manhattan"]}
    expected = GridSearchCV(NearestCentroid(), grid, cv=cv, n_jobs=1).fit(X, y)
    before = executed(client)
    with parallel_config(backend="dask"):
        search = GridSearchCV(NearestCentroid(), grid, cv=cv, n_jobs=2).fit(X, y)
    assert executed(client) > before
    n = EPISODES["n_episodes"]
    np.testing.assert_array_equal(
        split_scores(search.cv_results_, n), split_scores(expected.cv_results_, n)
    )


def test_few_shot_curve_on_the_cluster_equals_one_job(client, blobs):
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from skfewshot.plotting import FewShotCurveDisplay

    X, y = blobs
    pipe = make_pipeline(CountingTransformer(), NearestCentroid())
    settings = dict(shots=[2, 4], n_way=5, n_query=3, n_episodes=20, random_state=0)
    expected = FewShotCurveDisplay.from_estimator(pipe, X, y, **settings, n_jobs=1)
    CountingTransformer.rows = 0
    before = executed(client)
    with parallel_config(backend="dask"):
        display = FewShotCurveDisplay.from_estimator(pipe, X, y, **settings, n_jobs=2)
    assert executed(client) > before
    # the frozen step ran once for both shot counts, in this process
    assert CountingTransformer.rows == len(X)
    assert set(client.run(worker_rows).values()) == {0}
    (got,) = display.scores.values()
    (want,) = expected.scores.values()
    for point, expected_point in zip(got, want, strict=True):
        np.testing.assert_array_equal(point.accuracies, expected_point.accuracies)
    np.testing.assert_array_equal(display.mean, expected.mean)
    plt.close(display.figure_)
    plt.close(expected.figure_)


# ------------------------------------------- a fitted head over a dask.array


def predict_blockwise(head, queries):
    """The recipe of docs/scaling.rst: ``predict`` and ``predict_proba`` of a
    fitted row-wise head, one task per block of query rows."""
    queries = queries.rechunk({1: -1})  # whole rows in every block
    labels = queries.map_blocks(head.predict, drop_axis=1, dtype=head.classes_.dtype)
    dtype = head.predict_proba(queries[:1].compute()).dtype  # float32 or float64
    proba = queries.map_blocks(
        head.predict_proba,
        chunks=(queries.chunks[0], (len(head.classes_),)),
        dtype=dtype,
    )
    return labels, proba


@pytest.mark.parametrize(
    "head",
    [PrototypeClassifier(), FineTunedCosineClassifier()],
    ids=["PrototypeClassifier", "FineTunedCosineClassifier"],
)
def test_a_fitted_head_predicts_a_dask_array_block_by_block(client, head):
    da = pytest.importorskip("dask.array")
    X, y = make_blobs(
        n_samples=2100, centers=5, n_features=16, cluster_std=4, random_state=0
    )
    X = X.astype(np.float32)
    head.fit(X[:100], y[:100])
    queries = da.from_array(X[100:], chunks=(500, 8))  # 4 x 2 blocks
    labels, proba = predict_blockwise(head, queries)
    assert labels.numblocks == (4,) and proba.numblocks == (4, 1)
    before = executed(client)
    labels, proba = client.compute([labels, proba], sync=True)
    assert executed(client) > before  # the blocks ran on the workers
    # each query row is scored alone: the same labels and probabilities as
    # one call on all of them (up to float rounding of another batch size)
    np.testing.assert_array_equal(labels, head.predict(X[100:]))
    expected = head.predict_proba(X[100:])
    assert proba.dtype == expected.dtype
    np.testing.assert_allclose(proba, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "head",
    [PrototypeClassifier(), FineTunedCosineClassifier()],
    ids=["PrototypeClassifier", "FineTunedCosineClassifier"],
)
def test_a_fitted_head_in_dask_ml_parallel_post_fit(client, head):
    # dask-ml's wrapper: the same map_blocks route, written by dask-ml
    wrappers = pytest.importorskip("dask_ml.wrappers", reason="dask-ml")
    da = pytest.importorskip("dask.array")
    X, y = make_blobs(
        n_samples=1100, centers=5, n_features=16, cluster_std=4, random_state=0
    )
    X = X.astype(np.float32)
    model = wrappers.ParallelPostFit(head).fit(X[:100], y[:100])
    reference = clone(head).fit(X[:100], y[:100])
    queries = da.from_array(X[100:], chunks=(250, 16))  # 4 blocks of whole rows
    labels, proba = model.predict(queries), model.predict_proba(queries)
    assert labels.numblocks == (4,)
    before = executed(client)
    labels, proba = client.compute([labels, proba], sync=True)
    assert executed(client) > before  # the blocks ran on the workers
    np.testing.assert_array_equal(labels, reference.predict(X[100:]))
    np.testing.assert_allclose(
        proba, reference.predict_proba(X[100:]), rtol=1e-5, atol=1e-6
    )


# ------------------------------------------------- a worker killed mid-job


class DiesOnce(NearestCentroid):
    """A NearestCentroid whose first ``fit`` in a worker kills that worker.

    The first task to create the file ``flag`` (atomically: one task in the
    whole cluster) sends SIGKILL to its own process, as the kernel's
    out-of-memory killer would; every other fit, and every fit outside a
    worker, is NearestCentroid's.
    """

    def __init__(self, flag=None):
        super().__init__()
        self.flag = flag

    def fit(self, X, y):
        if self.flag is not None and on_worker():
            try:
                os.close(os.open(self.flag, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                pass
            else:
                os.kill(os.getpid(), signal.SIGKILL)
        return super().fit(X, y)


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="no SIGKILL on Windows")
def test_a_worker_killed_mid_job_does_not_change_the_result(client, blobs, tmp_path):
    # last in the module: the cluster may run on with one worker fewer.
    # Whether the nanny then replaces the dead worker is distributed's
    # business, not skfewshot's (a CI run saw the replacement register and
    # its nanny close at once, 2026-11-29), so only the job is checked.
    X, y = blobs
    expected = evaluate_episodes(DiesOnce(), X, y, **EPISODES, n_jobs=1)
    flag = tmp_path / "killed"
    before = worker_pids(client)
    with parallel_config(backend="dask"):
        scores = evaluate_episodes(DiesOnce(str(flag)), X, y, **EPISODES, n_jobs=2)
    assert len(before) == 2  # two workers shared the job...
    assert flag.exists()  # ...and one of them died mid-job; its tasks reran
    np.testing.assert_array_equal(scores.accuracies, expected.accuracies)
