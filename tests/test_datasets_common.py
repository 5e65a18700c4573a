"""Tests for What every public name of skfewshot.datasets shares."""


def test_public_names_documented():
    import skfewshot.datasets as datasets

    for name in datasets.__all__:
        doc = getattr(datasets, name).__doc__
        assert "Examples\n    --------" in doc, name
