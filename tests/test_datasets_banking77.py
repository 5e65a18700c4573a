"""Tests for skfewshot.datasets.load_banking77."""

import errno
import json

import numpy as np
import pytest

from skfewshot.datasets import load_banking77

pytestmark = pytest.mark.thread_independent  # see the marker in pyproject.toml

CSV = (
    "text,category\n"
    '"Hello, where is my card?",card_arrival\n'
    '"He said ""top up"", then left",top_up_failed\n'
    "Why the fee?,atm_fee\n"
    "\n"
    "Card still missing,card_arrival\n"
)


def test_load_banking77_small_csv_exact(tmp_path):
    (tmp_path / "train.csv").write_text(CSV)
    bunch = load_banking77(tmp_path)
    assert bunch.data == [
        "Hello, where is my card?",
        'He said "top up", then left',
        "Why the fee?",
        "Card still missing",
    ]
    np.testing.assert_array_equal(
        bunch.target_names, ["atm_fee", "card_arrival", "top_up_failed"]
    )
    np.testing.assert_array_equal(bunch.target, [1, 2, 0, 1])
    assert bunch.filename == str(tmp_path / "train.csv")

    # categories.json beside the CSV sets the order of target_names
    names = ["top_up_failed", "card_arrival", "atm_fee", "unused"]
    (tmp_path / "categories.json").write_text(json.dumps(names))
    texts, target = load_banking77(tmp_path / "train.csv", return_X_y=True)
    assert len(texts) == 4
    np.testing.assert_array_equal(target, [1, 0, 2, 1])
    assert list(load_banking77(tmp_path).target_names) == names


def test_load_banking77_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="test.csv") as info:
        load_banking77(tmp_path, subset="test")
    assert info.value.filename == str(tmp_path / "test.csv")
    assert info.value.errno == errno.ENOENT
    with pytest.raises(
        ValueError,
        match="The 'subset' parameter of load_banking77 must be a str among "
        ".*Got 'dev' instead",
    ):
        load_banking77(tmp_path, subset="dev")
    bad = tmp_path / "bad.csv"
    bad.write_text("sentence,label\nhi,x\n")
    with pytest.raises(ValueError, match="expected the header 'text,category'"):
        load_banking77(bad)
    bad.write_text("text,category\nhi,x\nhello, there,y\n")
    with pytest.raises(ValueError, match="line 3: expected 2 fields"):
        load_banking77(bad)
    bad.write_text("text,category\n")
    with pytest.raises(ValueError, match="no rows"):
        load_banking77(bad)
    bad.write_text(CSV)
    (tmp_path / "categories.json").write_text(json.dumps(["card_arrival"]))
    with pytest.raises(
        ValueError, match="missing from .*\\['atm_fee', 'top_up_failed'\\]"
    ):
        load_banking77(bad)


@pytest.mark.shared_data
def test_load_banking77_real(shared_data):
    folder = shared_data / "banking77"
    bunch = load_banking77(folder)
    assert len(bunch.data) == 10003 and bunch.target.shape == (10003,)
    assert len(bunch.target_names) == 77
    assert len(np.unique(bunch.target)) == 77
    categories = json.loads((folder / "categories.json").read_text())
    assert list(bunch.target_names) == categories
    assert bunch.data[0] == "I am still waiting on my card?"
    assert bunch.target_names[bunch.target[0]] == "card_arrival"
    assert all(isinstance(text, str) and text for text in bunch.data)


def test_load_banking77_csv_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("text,category\nhi,x\n" + "a" * 200_000 + ",y\n")
    with pytest.raises(
        ValueError, match="bad.csv, line 3: not a readable CSV row.*field limit"
    ):
        load_banking77(bad)
    bad.write_bytes("text,category\ncafé au lait,x\n".encode("latin-1"))
    with pytest.raises(ValueError, match="bad.csv is not UTF-8 text"):
        load_banking77(bad)


def test_load_banking77_accepts_a_byte_order_mark(tmp_path):
    (tmp_path / "train.csv").write_bytes(CSV.encode("utf-8-sig"))
    (tmp_path / "categories.json").write_bytes(
        json.dumps(["top_up_failed", "card_arrival", "atm_fee"]).encode("utf-8-sig")
    )
    bunch = load_banking77(tmp_path)
    assert bunch.data[0] == "Hello, where is my card?"
    np.testing.assert_array_equal(bunch.target, [1, 0, 2, 1])


@pytest.mark.parametrize(
    "content, match",
    [
        (b'["card_arrival",', "categories.json is not a UTF-8 JSON file"),
        (b'["caf\xe9"]', "categories.json is not a UTF-8 JSON file"),
        (b'[1, {"a": 2}]', "categories.json must be a JSON list of distinct"),
    ],
)
def test_load_banking77_broken_categories_json(tmp_path, content, match):
    (tmp_path / "train.csv").write_text(CSV)
    (tmp_path / "categories.json").write_bytes(content)
    with pytest.raises(ValueError, match=match):
        load_banking77(tmp_path)


#: a header, a good row, a row opening a quote it never closes, a good row
STRAY_QUOTE = (
    "text,category\n"
    "where is my card,card_arrival\n"
    '"top up failed,top_up_failed\n'
    "is there a fee,top_up_fee\n"
)


def test_load_banking77_stray_quote_names_the_line_it_opens(tmp_path):
    # a stray opening quote used to swallow the rows after it into one text
    bad = tmp_path / "train.csv"
    bad.write_text(STRAY_QUOTE + 'my "pin" is blocked,pin_blocked\n')
    with pytest.raises(
        ValueError, match="train.csv, line 3: not a readable CSV row"
    ) as info:
        load_banking77(bad)
    assert "',' expected after '\"'" in str(info.value)
    # never closed: the line where the quote opened, not the last one, and
    # not the swallowed text
    bad.write_text(
        "text,category\nwhere is my card,card_arrival\n"
        '"top up failed,top_up_failed\n'
        + "".join(f"question {i},top_up_fee\n" for i in range(1000))
    )
    with pytest.raises(
        ValueError, match="train.csv, line 3: not a readable CSV row"
    ) as info:
        load_banking77(bad)
    assert "unexpected end of data" in str(info.value)
    assert "question" not in str(info.value)


def test_load_banking77_quoted_text_over_several_lines_is_refused(tmp_path):
    # a stray quote that a later quote closes right before a comma parsed as
    # one multi-line text: rows 3-5 became one row of the last row's category
    bad = tmp_path / "train.csv"
    bad.write_text(
        STRAY_QUOTE + 'my pin is blocked",pin_blocked\none more,top_up_fee\n'
    )
    with pytest.raises(ValueError) as info:
        load_banking77(bad)
    assert str(info.value) == (
        f"{bad}, line 3: a quoted text runs to line 5 and holds the row "
        "'is there a fee,top_up_fee' (line 4): a stray quote has merged the rows "
        "between into one text; quote a text with a quote whole, its quotes "
        'doubled ("a ""b"" c").'
    )
    # a category that only categories.json names counts too
    bad.write_text(bad.read_text().replace("one more,top_up_fee", "x,card_arrival"))
    (tmp_path / "categories.json").write_text(
        json.dumps(["card_arrival", "top_up_fee", "pin_blocked"])
    )
    with pytest.raises(ValueError, match="holds the row 'is there a fee,top_up_fee'"):
        load_banking77(bad)
    (tmp_path / "categories.json").unlink()
    # the same rows quoted properly read as four texts
    bad.write_text(
        "text,category\n"
        "where is my card,card_arrival\n"
        '"""top up failed",top_up_failed\r\n'
        "is there a fee,top_up_fee\n"
        '"my pin is ""blocked""",pin_blocked\n'
        '"\nmy card, it fails\n\n",card_arrival\n'  # over lines, as in Banking77
    )
    assert load_banking77(bad).data == [
        "where is my card",
        '"top up failed',
        "is there a fee",
        'my pin is "blocked"',
        "\nmy card, it fails\n\n",
    ]


@pytest.mark.parametrize(
    "row, match",
    [
        ("forgot the label,", "line 3: empty category in \\['forgot the label', ''\\]"),
        ("forgot the label,  ", "line 3: empty category"),
        (",card_arrival", "line 3: empty text in \\['', 'card_arrival'\\]"),
        ('"  ",card_arrival', "line 3: empty text"),
        (",", "line 3: empty text and category"),
    ],
)
def test_load_banking77_empty_text_or_category_is_refused(tmp_path, row, match):
    bad = tmp_path / "train.csv"
    bad.write_text(f"text,category\nwhere is my card,card_arrival\n{row}\n")
    with pytest.raises(ValueError, match=f"train.csv, {match}"):
        load_banking77(bad)


def test_load_banking77_long_bad_row_is_cut_in_the_message(tmp_path):
    bad = tmp_path / "train.csv"
    bad.write_text("text,category\n" + "x" * 5000 + ",a,b\n")
    with pytest.raises(ValueError, match="line 2: expected 2 fields") as info:
        load_banking77(bad)
    assert len(str(info.value)) < 300 and str(info.value).endswith("....")
