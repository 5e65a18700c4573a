"""``skfewshot ensemble``: backbone files joined into one ensemble backbone file."""

import csv
import hashlib
import io
import json
import shutil

import pytest
import torch
from conftest import build_omniglot_runs
from test_cli import help_of
from test_cli_train_predict import CLASSES, _expected, _folder

from skfewshot.cli import main
from skfewshot.models import (
    BackboneEnsemble,
    Conv4,
    ResNet12,
    load_backbone,
    save_backbone,
)
from skfewshot.recipes import ONE_SHOT_INK_RADIUS, ONE_SHOT_MEMBERS

SHAPE = (1, 16, 16)
DIGITS_A = {"dataset": "digits", "classes": [0, 1, 2, 9]}
DIGITS_B = {"dataset": "digits", "classes": [0, 1, 2, 3, 4]}


def run(capsys, *argv):
    status = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


def _save(path, trained_on=DIGITS_A, hidden=4, seed=0, input_shape=SHAPE):
    """A tiny untrained Conv4 (its weights drawn with ``seed``) saved to ``path``."""
    torch.manual_seed(seed)
    save_backbone(
        Conv4(hidden=hidden), path, input_shape=input_shape, trained_on=trained_on
    )
    return path


@pytest.fixture
def pair(tmp_path):
    """Two members of different weights: a.pt (digits 0 1 2 9), b.pt (0-4)."""
    return _save(tmp_path / "a.pt", DIGITS_A, seed=0), _save(
        tmp_path / "b.pt", DIGITS_B, seed=1
    )


def evaluate_digits(capsys, backbone):
    """``evaluate --dataset digits --json`` of ``backbone`` (two 3-way 1-shot
    episodes), which must succeed with nothing on stderr: its JSON."""
    status, stdout, err = run(
        capsys, "evaluate", "--dataset", "digits", "--backbone", backbone,
        "--n-way", "3", "--n-shot", "1", "--n-query", "2", "--episodes", "2",
        "--json", "--quiet",
    )  # fmt: skip
    assert status == 0 and err == ""
    return json.loads(stdout)


def runs_with_shifts(capsys, runs, backbone):
    """``runs --test-time-shifts 1 --json`` of ``backbone`` on the one 5-way
    run that ``build_omniglot_runs(..., n_runs=1, n_way=5)`` wrote to ``runs``:
    it must succeed, with the shifts and the run's 5 queries."""
    status, stdout, err = run(
        capsys, "runs", "--runs", runs, "--backbone", backbone,
        "--test-time-shifts", "1", "--json",
    )  # fmt: skip
    assert status == 0, err
    result = json.loads(stdout)
    assert result["test_time_shifts"] == 1
    assert [r["n_queries"] for r in result["runs"]] == [5]


def _sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_ensemble_is_the_backbone_ensemble_of_its_members(pair, tmp_path, capsys):
    a, b = pair
    out = tmp_path / "final.pt"
    argv = ["ensemble", a, b, "--output", out, "--json"]
    status, stdout, err = run(capsys, *argv)
    assert status == 0 and err == ""
    net, meta = load_backbone(out)
    expected = BackboneEnsemble([load_backbone(a)[0], load_backbone(b)[0]])
    x = torch.randn(3, *SHAPE, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(net(x), expected(x))
    assert (meta["architecture"], meta["config"]["combine"]) == (
        "BackboneEnsemble",
        "concat",
    )
    assert meta["input_shape"] == SHAPE
    # the union, in order of first appearance
    assert meta["trained_on"] == {"dataset": "digits", "classes": [0, 1, 2, 9, 3, 4]}
    record = json.loads(stdout)
    assert json.loads((tmp_path / "final.pt.json").read_text()) == record
    assert record["command"] == "ensemble"
    assert record["argv"] == [str(v) for v in argv]
    assert record["combine"] == "concat"
    assert record["last_pool"] is True
    assert record["input_shape"] == [1, 16, 16]
    assert record["n_features"] == 8  # 4 + 4: Conv4(hidden=4) on 16 x 16 gives 4
    assert record["trained_on"] == meta["trained_on"]
    assert record["warnings"] == []
    assert [(m["path"], m["sha256"]) for m in record["members"]] == [
        (str(a), _sha256(a)),
        (str(b), _sha256(b)),
    ]
    assert [m["trained_on"] for m in record["members"]] == [DIGITS_A, DIGITS_B]
    assert [m["n_features"] for m in record["members"]] == [4, 4]
    assert {"skfewshot", "torch", "python"} <= set(record["versions"])


def test_no_last_pool_embeds_with_the_members_whole_last_maps(pair, tmp_path, capsys):
    a, b = pair
    out = tmp_path / "unpooled.pt"
    status, stdout, err = run(capsys, "ensemble", a, b, "--no-last-pool", "-o", out)
    assert status == 0 and err == ""
    assert "(concat: 32 features of (1, 16, 16) inputs)" in stdout  # 2 x 4 x 2 x 2
    net, meta = load_backbone(out)
    assert [m["config"]["last_pool"] for m in meta["config"]["modules"]] == [
        False,
        False,
    ]
    members = [load_backbone(path)[0] for path in pair]
    for member in members:
        member.last_pool = False
    x = torch.randn(3, *SHAPE, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(net(x), BackboneEnsemble(members)(x))
    record = json.loads((tmp_path / "unpooled.pt.json").read_text())
    assert record["last_pool"] is False and record["n_features"] == 32
    assert [m["n_features"] for m in record["members"]] == [16, 16]
    # the members' files are untouched: each still embeds with its pool
    assert all(load_backbone(path)[0].last_pool for path in pair)


def test_no_last_pool_without_a_conv4_is_an_error(tmp_path, capsys):
    paths = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        paths.append(tmp_path / f"r{seed}.pt")
        save_backbone(ResNet12(1, (2, 2, 2, 2)), paths[-1], input_shape=SHAPE)
    out = tmp_path / "out.pt"
    status, _, err = run(capsys, "ensemble", *paths, "--no-last-pool", "-o", out)
    assert status != 0
    assert "--no-last-pool: no member has a Conv4" in err
    assert "(architectures: ResNet12, ResNet12)" in err
    assert not out.exists()


def test_ensemble_text_output_and_mean(pair, tmp_path, capsys):
    out = tmp_path / "mean.pt"
    status, stdout, err = run(capsys, "ensemble", *pair, "-o", out, "--combine", "mean")
    assert status == 0 and err == ""
    assert stdout == (
        f"Ensemble of 2 backbones (mean: 4 features of (1, 16, 16) inputs) written "
        f"to {out} (record: {out}.json)\n"
    )
    net, _ = load_backbone(out)
    expected = BackboneEnsemble([load_backbone(p)[0] for p in pair], combine="mean")
    x = torch.randn(2, *SHAPE, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(net(x), expected(x))


def test_mean_of_members_of_different_widths_names_the_widths(tmp_path, capsys):
    a = _save(tmp_path / "a.pt", hidden=4)
    b = _save(tmp_path / "b.pt", DIGITS_B, hidden=8)
    out = tmp_path / "final.pt"
    status, stdout, err = run(capsys, "ensemble", a, b, "-o", out, "--combine", "mean")
    assert status == 1 and stdout == ""
    assert err == (
        f"skfewshot ensemble: error: --combine mean: the members' widths differ "
        f"({a}: 4, {b}: 8); use --combine concat, or members of one width\n"
    )
    assert not out.exists() and not (tmp_path / "final.pt.json").exists()


OMNIGLOT_1 = {
    "dataset": "omniglot",
    "subset": ["images_background_small1"],
    "alphabets": ["Greek", "Latin", "Korean"],
}
# an older record: one subset as a str
OMNIGLOT_2 = {
    "dataset": "omniglot",
    "subset": "images_background_small2",
    "alphabets": ["Latin", "Greek", "Tagalog"],
}


@pytest.mark.parametrize(
    "records, expected",
    [
        (
            [DIGITS_A, DIGITS_B, DIGITS_A],
            {"dataset": "digits", "classes": [0, 1, 2, 9, 3, 4]},
        ),
        (
            [OMNIGLOT_1, OMNIGLOT_2],
            {
                "dataset": "omniglot",
                "subset": ["images_background_small1", "images_background_small2"],
                "alphabets": ["Greek", "Latin", "Korean", "Tagalog"],
            },
        ),
        (
            [
                {"dataset": "folder", "classes": ["cat", "dog"]},
                {"dataset": "folder", "classes": ["dog", "emu"]},
            ],
            {"dataset": "folder", "classes": ["cat", "dog", "emu"]},
        ),
    ],
)
def test_ensemble_records_the_union_of_what_its_members_saw(
    records, expected, tmp_path, capsys
):
    paths = [_save(tmp_path / f"m{i}.pt", t, seed=i) for i, t in enumerate(records)]
    out = tmp_path / "final.pt"
    status, _, err = run(capsys, "ensemble", *paths, "-o", out)
    assert status == 0 and err == ""
    assert load_backbone(out)[1]["trained_on"] == expected


def test_members_trained_on_different_data_sets_are_refused(tmp_path, capsys):
    a = _save(tmp_path / "a.pt", DIGITS_A)
    b = _save(tmp_path / "b.pt", OMNIGLOT_1, seed=1)
    status, _, err = run(capsys, "ensemble", a, b, "-o", tmp_path / "final.pt")
    assert status == 1
    assert err == (
        f"skfewshot ensemble: error: the members were trained on different data "
        f"sets ({a} on 'digits', {b} on 'omniglot'); evaluate could not leave out "
        "every class the ensemble saw\n"
    )
    assert not (tmp_path / "final.pt").exists()


def test_members_disagreeing_on_another_field_are_refused(tmp_path, capsys):
    a = _save(tmp_path / "a.pt", {**DIGITS_A, "image_size": 16})
    b = _save(tmp_path / "b.pt", {**DIGITS_B, "image_size": 8}, seed=1)
    status, _, err = run(capsys, "ensemble", a, b, "-o", tmp_path / "final.pt")
    assert status == 1
    assert err == (
        "skfewshot ensemble: error: the members' training records disagree on "
        f"'image_size' ({a}: 16, {b}: 8)\n"
    )


def test_a_member_without_a_record_makes_the_ensemble_record_none(
    pair, tmp_path, capsys
):
    a, _ = pair
    c = _save(tmp_path / "c.pt", None, seed=2)
    out = tmp_path / "final.pt"
    status, stdout, err = run(capsys, "ensemble", a, c, "-o", out, "--json")
    assert status == 0
    warning = (
        f"{c} records no training data, so the ensemble records none and evaluate "
        "will not be able to leave out its training classes (record them with "
        "save_backbone(..., trained_on=...), or train with skfewshot train)"
    )
    assert err == f"skfewshot ensemble: warning: {warning}\n"
    assert load_backbone(out)[1]["trained_on"] is None
    record = json.loads(stdout)
    assert record["trained_on"] is None and record["warnings"] == [warning]


def test_a_member_without_a_seen_list_leaves_it_out_with_a_warning(tmp_path, capsys):
    a = _save(tmp_path / "a.pt", DIGITS_A)
    b = _save(tmp_path / "b.pt", {"dataset": "digits"}, seed=1)
    out = tmp_path / "final.pt"
    status, _, err = run(capsys, "ensemble", a, b, "-o", out)
    assert status == 0
    assert err == (
        f"skfewshot ensemble: warning: {b} records no 'classes', so the ensemble "
        "records none and evaluate will not be able to leave out every class it "
        "saw\n"
    )
    # evaluate then treats the digits as unrecorded: warns and assumes 0-4
    assert load_backbone(out)[1]["trained_on"] == {"dataset": "digits"}


@pytest.mark.parametrize(
    "records, expected",
    [
        # evaluate reads an Omniglot record's subsets, not its alphabets
        (
            [OMNIGLOT_1, {"dataset": "omniglot", "subset": "images_evaluation"}],
            {
                "dataset": "omniglot",
                "subset": ["images_background_small1", "images_evaluation"],
            },
        ),
        # nor the classes of a folder
        (
            [{"dataset": "folder", "classes": ["cat"]}, {"dataset": "folder"}],
            {"dataset": "folder"},
        ),
    ],
)
def test_a_list_evaluate_does_not_read_is_left_out_without_a_warning(
    records, expected, tmp_path, capsys
):
    paths = [_save(tmp_path / f"m{i}.pt", t, seed=i) for i, t in enumerate(records)]
    out = tmp_path / "final.pt"
    status, stdout, err = run(capsys, "ensemble", *paths, "-o", out, "--json")
    assert (status, err) == (0, "")
    assert load_backbone(out)[1]["trained_on"] == expected
    record = json.loads(stdout)
    assert record["warnings"] == []
    # each member's whole record is kept beside the ensemble
    assert [m["trained_on"] for m in record["members"]] == records


def test_an_omniglot_member_without_subsets_is_warned_about(tmp_path, capsys):
    a = _save(tmp_path / "a.pt", OMNIGLOT_1)
    b = _save(tmp_path / "b.pt", {"dataset": "omniglot", "alphabets": ["Greek"]}, 1)
    out = tmp_path / "final.pt"
    status, _, err = run(capsys, "ensemble", a, b, "-o", out)
    assert status == 0
    assert err == (
        f"skfewshot ensemble: warning: {b} records no 'subset', so the ensemble "
        "records none and evaluate will not be able to leave out every subset it "
        "saw\n"
    )
    assert load_backbone(out)[1]["trained_on"] == {
        "dataset": "omniglot",
        "alphabets": ["Greek", "Latin", "Korean"],
    }


def test_a_record_path_that_is_a_folder_fails_before_any_member_is_read(
    pair, tmp_path, capsys, monkeypatch
):
    def load_backbone(path):
        raise AssertionError(f"read {path}")

    monkeypatch.setattr("skfewshot.models.load_backbone", load_backbone)
    out = tmp_path / "final.pt"
    (tmp_path / "final.pt.json").mkdir()
    status, _, err = run(capsys, "ensemble", *pair, "-o", out)
    assert status == 1
    assert err == (
        f"skfewshot ensemble: error: --output {out}: its record {out}.json would "
        "be written over a folder; move the folder or give another --output\n"
    )
    assert not out.exists() and list((tmp_path / "final.pt.json").iterdir()) == []


def test_members_of_different_input_shapes_are_refused(tmp_path, capsys):
    a = _save(tmp_path / "a.pt")
    b = _save(tmp_path / "b.pt", seed=1, input_shape=(1, 28, 28))
    status, _, err = run(capsys, "ensemble", a, b, "-o", tmp_path / "final.pt")
    assert status == 1
    assert err == (
        f"skfewshot ensemble: error: the members take different inputs: {a} "
        f"(1, 16, 16), {b} (1, 28, 28); an ensemble runs every member on the "
        "same images\n"
    )


def test_members_of_different_weight_dtypes_are_refused(tmp_path, capsys):
    # load_backbone keeps float64 weights: such an ensemble could not run
    a = _save(tmp_path / "a.pt")
    b = tmp_path / "b.pt"
    torch.manual_seed(1)
    save_backbone(Conv4(hidden=4).double(), b, input_shape=SHAPE, trained_on=DIGITS_B)
    out = tmp_path / "final.pt"
    status, _, err = run(capsys, "ensemble", a, b, "-o", out)
    assert status == 1 and not out.exists()
    assert err == (
        f"skfewshot ensemble: error: the members' weights have different dtypes: "
        f"{a} float32, {b} float64; an ensemble runs every member on the same "
        "input (convert one, e.g. with .float(), and save it again)\n"
    )


def test_a_member_without_an_input_shape_is_refused(tmp_path, capsys):
    a = _save(tmp_path / "a.pt")
    b = _save(tmp_path / "b.pt", seed=1, input_shape=None)
    status, _, err = run(capsys, "ensemble", a, b, "-o", tmp_path / "final.pt")
    assert status == 1
    assert err == (
        f"skfewshot ensemble: error: member {b} records no input shape, so the "
        "ensemble's input cannot be checked; save it with save_backbone(..., "
        "input_shape=...) or train it with skfewshot train\n"
    )


def test_a_member_rewritten_while_the_ensemble_runs_is_recorded_as_loaded(
    pair, tmp_path, capsys, monkeypatch
):
    # a run saves b.pt again while the ensemble loads it: each member's bytes
    # are read once, so the ensemble holds the old b.pt's network and records
    # the SHA-256 of exactly those bytes
    a, b = pair
    old_b = tmp_path / "old_b.pt"
    shutil.copy(b, old_b)
    real_load, calls = torch.load, []

    def load_while_b_is_rewritten(*args, **kwargs):
        calls.append(args[0])
        if len(calls) == 2:  # the second member, b.pt
            _save(b, DIGITS_B, seed=2)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", load_while_b_is_rewritten)
    out = tmp_path / "final.pt"
    status, stdout, err = run(capsys, "ensemble", a, b, "-o", out, "--json")
    monkeypatch.undo()
    assert status == 0, err
    assert len(calls) == 2 and _sha256(b) != _sha256(old_b)  # b.pt was rewritten
    record = json.loads(stdout)
    assert [m["sha256"] for m in record["members"]] == [_sha256(a), _sha256(old_b)]
    assert json.loads((tmp_path / "final.pt.json").read_text()) == record
    net, _ = load_backbone(out)
    for member, source in zip(net.members, (a, old_b)):
        held, saved = member.state_dict(), load_backbone(source)[0].state_dict()
        assert held.keys() == saved.keys()
        assert all(torch.equal(held[k], saved[k]) for k in saved)


def test_an_output_that_is_a_members_record_is_refused(pair, tmp_path, capsys):
    # a.pt.json is the record of member a.pt (as skfewshot train writes it)
    a, b = pair
    record = tmp_path / "a.pt.json"
    record.write_text('{"command": "train"}')
    linked = tmp_path / "c.pt"
    (tmp_path / "c.pt.json").symlink_to(record)
    cases = [
        (
            record,
            f"--output {record} is the record of member {a}: writing the ensemble "
            "there would overwrite it; give another file name",
        ),
        (
            linked,
            f"--output {linked}: its record c.pt.json is the record of member {a}: "
            "writing the record would overwrite it; give another file name",
        ),
    ]
    for out, message in cases:
        status, stdout, err = run(capsys, "ensemble", a, b, "-o", out)
        assert (status, stdout) == (1, "")
        assert err == f"skfewshot ensemble: error: {message}\n"
    assert record.read_text() == '{"command": "train"}'
    assert not linked.exists() and not (tmp_path / "a.pt.json.json").exists()


def _refusal_cases(tmp_path, a, b):
    """``(argv after 'ensemble', expected error)`` for each refused input."""
    missing, folder = tmp_path / "missing.pt", tmp_path / "folder"
    notes, cut, other = tmp_path / "notes.pt", tmp_path / "cut.pt", tmp_path / "o.pt"
    again, copy = tmp_path / ".." / tmp_path.name / "a.pt", tmp_path / "copy.pt"
    nowhere, record = tmp_path / "nowhere", tmp_path / "x.pt.json"
    shutil.copy(b, record)  # a member named like the record of -o x.pt
    link_out = tmp_path / "y.pt"
    (tmp_path / "y.pt.json").symlink_to(b)
    notes.write_text("not a backbone")
    cut.write_bytes(a.read_bytes()[:200])
    torch.save({"weights": torch.zeros(1)}, other)
    folder.mkdir()
    shutil.copy(a, copy)
    out = tmp_path / "final.pt"
    same = "an ensemble of a backbone with itself gives the same predictions"
    unreadable = "is not a readable skfewshot backbone file"
    return [
        ([a, "-o", out], f"an ensemble needs at least 2 backbone files, got 1 ({a})"),
        ([a, missing, "-o", out], f"member {missing} does not exist"),
        ([a, folder, "-o", out], f"member {folder} is a directory, not a backbone"),
        ([a, notes, "-o", out], f"{str(notes)!r} {unreadable}"),
        ([a, cut, "-o", out], f"{str(cut)!r} {unreadable}"),
        ([a, other, "-o", out], f"{str(other)!r} is not a skfewshot backbone file"),
        (
            [a, b, again, "-o", out],
            f"member {again} is given twice (also as {a}); {same}",
        ),
        (
            [a, copy, "-o", out],
            f"member {copy} is a copy of {a} (same SHA-256); {same}",
        ),
        (
            [a, b, "-o", b],
            f"--output {b} is the member {b}: writing the ensemble there would "
            "overwrite it; give another file name",
        ),
        (
            [a, record, "-o", tmp_path / "x.pt"],
            f"--output {tmp_path / 'x.pt'}: its record x.pt.json is the member "
            f"{record}: writing the record would overwrite it; give another file "
            "name",
        ),
        (  # the record's name is a link to a member: writing it would follow it
            [a, b, "-o", link_out],
            f"--output {link_out}: its record y.pt.json is the member {b}: "
            "writing the record would overwrite it; give another file name",
        ),
        (
            [a, b, "-o", nowhere / "final.pt"],
            f"--output {nowhere / 'final.pt'}: folder {nowhere} does not exist",
        ),
    ]


def test_each_refusal_names_the_file_and_writes_nothing(pair, tmp_path, capsys):
    a, b = pair
    before = {p: p.read_bytes() for p in (a, b)}
    for argv, message in _refusal_cases(tmp_path, a, b):
        status, stdout, err = run(capsys, "ensemble", *argv)
        assert status == 1 and stdout == "", argv
        assert err.startswith(f"skfewshot ensemble: error: {message}"), (argv, err)
        assert err.count("\n") == 1
        assert not (tmp_path / "final.pt").exists()
        assert not (tmp_path / "final.pt.json").exists()
    assert {p: p.read_bytes() for p in (a, b)} == before  # members untouched


def test_evaluate_on_the_ensemble_leaves_out_what_any_member_saw(
    pair, tmp_path, capsys
):
    out = tmp_path / "final.pt"
    assert run(capsys, "ensemble", *pair, "-o", out)[0] == 0
    result = evaluate_digits(capsys, out)
    assert result["architecture"] == "BackboneEnsemble"
    # a.pt saw 0 1 2 9, b.pt 0-4: neither is evaluated on a digit it saw
    assert result["classes"] == [5, 6, 7, 8]
    assert result["excluded_classes"] == [0, 1, 2, 3, 4, 9]
    assert result["novelty_warning"] is None
    assert result["n_episodes"] == 2


@pytest.mark.shared_data
def test_runs_on_the_ensemble_with_test_time_shifts(shared_data, tmp_path, capsys):
    build_omniglot_runs(shared_data, tmp_path / "runs", n_runs=1, n_way=5)
    members = [
        _save(tmp_path / f"m{i}.pt", OMNIGLOT_1, seed=i, input_shape=(1, 28, 28))
        for i in range(2)
    ]
    out = tmp_path / "final.pt"
    assert run(capsys, "ensemble", *members, "-o", out)[0] == 0
    runs_with_shifts(capsys, tmp_path / "runs", out)


def test_help_gives_the_recipe(capsys):
    out = help_of("ensemble", capsys)  # every option: test_cli.py
    # the members as the library's default trains them: drawings normalised
    # to the recipe's radius, rotated and spliced, for 20 epochs; the
    # meta-trained one sees 38,720 images of small1 + small2 per epoch,
    # round(38720 / 200) episodes
    assert f"--ink-normalize \\\n      --ink-radius {ONE_SHOT_INK_RADIUS} " in out
    assert out.count("\n  skfewshot train ") == len(ONE_SHOT_MEMBERS) == 2
    assert out.count("--rotations --splices") == 2
    assert "--augment affine-elastic --epochs 20 --output a.pt" in out
    assert "--recipe protonet --augment affine-elastic \\\n" in out
    assert "--n-way 20 --n-shot 5 --n-query 5 \\\n" in out
    assert "--episodes-per-epoch 194 --epochs 20 --output b.pt\n" in out
    assert "  skfewshot ensemble a.pt b.pt --no-last-pool --output final.pt\n" in out
    assert "  skfewshot whiten --backbone final.pt --dataset omniglot" in out
    assert "--backbone final-w.pt --test-time-shifts 1" in out


def test_train_twice_ensemble_predict(tmp_path, capsys):
    """The recipe end to end: two quick ``train`` runs, their ensemble, ``predict``."""
    quick = ["--epochs", "1", "--image-size", "16", "--width", "4", "--quiet"]
    first = _folder(tmp_path / "first", 3, classes=("circle", "cross"))
    second = _folder(tmp_path / "second", 3, classes=("cross", "square", "stripes"))
    a, b, out = tmp_path / "a.pt", tmp_path / "b.pt", tmp_path / "final.pt"
    for data, path, recipe in [
        (first, a, ["--augment", "affine", "--distill-generations", "1"]),
        (second, b, ["--augment", "affine-elastic"]),
    ]:
        assert run(capsys, "train", data, "-o", path, *quick, *recipe)[0] == 0
    status, _, err = run(capsys, "ensemble", a, b, "-o", out)
    assert status == 0 and err == ""
    means = [load_backbone(p)[1]["trained_on"]["pixel_mean"] for p in (a, b)]
    assert load_backbone(out)[1]["trained_on"] == {
        "dataset": "folder",
        "classes": ["circle", "cross", "square", "stripes"],
        # the members' mean (two trainings' means differ: no disagreement)
        "pixel_mean": pytest.approx(sum(means) / 2, abs=1e-4),
    }
    support = _folder(tmp_path / "support", 1)
    files = sorted(_folder(tmp_path / "query", 1, flat=True).iterdir())
    status, stdout, err = run(
        capsys, "predict", "--backbone", out, "--support", support,
        "--query", tmp_path / "query",
    )  # fmt: skip
    assert status == 0, err
    rows = list(csv.reader(io.StringIO(stdout)))[1:]
    proba = _expected(out, support, files)  # the library on the loaded ensemble
    assert [r[1] for r in rows] == [CLASSES[i] for i in proba.argmax(1)]
    assert [r[2] for r in rows] == [f"{p:.6f}" for p in proba.max(1)]


def test_cli_recipe_equals_the_library_recipe(tmp_path, capsys):
    """``train`` x4 + ``ensemble`` give pretrain_one_shot_ensemble's network."""
    from skfewshot.datasets import load_image_folder
    from skfewshot.recipes import (
        ONE_SHOT_INK_RADIUS,
        ONE_SHOT_MEMBERS,
        pretrain_one_shot_ensemble,
    )
    from skfewshot.training import ProtoNetMetaTrainer

    # the default recipe is what the docs say the command line reproduces
    # (--ink-normalize --ink-radius 0.28: test_recipes_prepare checks the images)
    assert ONE_SHOT_INK_RADIUS == 0.28
    assert ONE_SHOT_MEMBERS == (
        {"augment": "affine-elastic"},
        {
            "recipe": "protonet",
            "augment": "affine-elastic",
            "n_way": 20,
            "n_shot": 5,
            "n_query": 5,
        },
    )
    data = _folder(tmp_path / "data", 3)  # 9 images of 3 classes
    quick = ["--epochs", "1", "--image-size", "16", "--width", "4", "--quiet"]
    quick += ["--device", "cpu"]  # bit-identical networks: a CPU promise
    a, a2, b, c = (tmp_path / f"{name}.pt" for name in ("a", "a2", "b", "c"))
    out = tmp_path / "final.pt"
    # ProtoNet sees as many images an epoch as the others: 9 images, 3-way
    # 1-shot 1-query episodes of 6 images, round(9 / 6) = 2 episodes an epoch
    protonet = ["--recipe", "protonet", "--n-way", "3", "--n-shot", "1"]
    protonet += ["--n-query", "1", "--episodes-per-epoch", "2"]
    for path, recipe in [
        (a, ["--augment", "affine", "--rotation-loss-weight", "1"]),
        (
            a2,
            ["--augment", "affine", "--rotation-loss-weight", "1"]
            + ["--distill-generations", "1"],
        ),
        (b, ["--augment", "affine-elastic", "--distill-generations", "1"]),
        (c, ["--augment", "affine-elastic", *protonet]),
    ]:
        assert run(capsys, "train", data, "-o", path, *quick, *recipe)[0] == 0
    assert run(capsys, "ensemble", a, a2, b, c, "--no-last-pool", "-o", out)[0] == 0
    pooled = tmp_path / "pooled.pt"
    assert run(capsys, "ensemble", a, a2, b, c, "-o", pooled)[0] == 0
    X, y = load_image_folder(data, image_size=16, return_X_y=True)
    members = [
        {"augment": "affine", "rotation_loss_weight": 1.0},
        {"augment": "affine", "rotation_loss_weight": 1.0, "born_again": True},
        {"augment": "affine-elastic", "born_again": True},
        {
            "recipe": "protonet",
            "augment": "affine-elastic",
            "n_way": 3,
            "n_shot": 1,
            "n_query": 1,
        },
    ]

    def recipe(**params):
        return pretrain_one_shot_ensemble(
            X,
            y,
            members=members,
            make_module=lambda: Conv4(in_channels=1, hidden=4),
            max_epochs=1,
            device="cpu",
            **params,
        )

    ensemble, trainers = recipe()
    assert [t.teacher is not None for t in trainers[:3]] == [False, True, True]
    # a born-again member's teacher has the member's parameters, rotation loss too
    assert trainers[1].teacher.rotation_loss_weight == 1.0
    assert trainers[2].teacher.rotation_loss_weight == 0.0
    assert repr(trainers[2].augment).startswith("Compose([RandomAffine(")
    assert isinstance(trainers[3], ProtoNetMetaTrainer)
    assert trainers[3].episodes_per_epoch == 2  # what the command line was given
    assert repr(trainers[3].augment).startswith("Compose([RandomAffine(")
    images = torch.as_tensor(X)
    with torch.no_grad():
        expected = ensemble(images)
        # four members' 4 x 2 x 2 maps of 16 x 16 images: no last pool
        assert expected.shape == (9, 4 * 16)
        assert torch.equal(load_backbone(out)[0](images), expected)
        with_pool = recipe(last_pool=True)[0](images)
        assert with_pool.shape == (9, 4 * 4)
        assert torch.equal(load_backbone(pooled)[0](images), with_pool)
        assert torch.equal(load_backbone(c)[0](images), trainers[3].backbone_(images))
        # every network starts from the same seeded weights: a rerun is equal
        assert torch.equal(recipe()[0](images), expected)
        assert not torch.equal(recipe(random_state=1)[0](images), expected)
