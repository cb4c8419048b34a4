"""Undecodable and other malformed input: every reader raises one DataError naming the file and the 1-based line
(never a UnicodeDecodeError or a polars traceback), and the CLI prints it as one line."""

import functools
import gzip
import json
import re
from pathlib import Path

import pytest

from modalrec.data.readers import _common, read
from modalrec.errors import DataError

from test_readers import _ml100k, _rechorus

PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x10" + bytes(range(256))  # a binary file, invalid at 1:1


def _at(path: Path, line: int) -> str:
    """The start of a DataError message for ``path`` line ``line``."""
    return "^" + re.escape(f"{path}:{line}: ")


def _raises_at(path: Path, line: int, fmt: str, root: Path, options=None, what: str = "not UTF-8 text"):
    with pytest.raises(DataError, match=_at(path, line) + re.escape(what)) as e:
        read(fmt, root, options)
    assert e.value.path == path and e.value.line == line and "\n" not in str(e.value)
    return e.value


# ---------------------------------------------------------------- user_sequence (decoded by the reader)
def test_binary_user_sequence_names_file_and_line(tmp_path):
    f = tmp_path / "user_sequence.txt"
    f.write_bytes(PNG)
    err = _raises_at(f, 1, "user_sequence", tmp_path)
    assert "byte 0x89 at column 1" in str(err)
    f.write_bytes(b"u1 a b\n\nu2 c \xe9t\xe9 d\n")  # latin-1 text, third line
    err = _raises_at(f, 3, "user_sequence", f)
    assert "byte 0xe9 at column 6" in str(err)


def test_nul_bytes_are_not_text(tmp_path):
    f = tmp_path / "user_sequence.txt"
    f.write_bytes(b"u1 a b\nu2 c\x00\x00 d\n")  # decodes as UTF-8, but no text file holds a NUL
    _raises_at(f, 2, "user_sequence", tmp_path, what="not text: NUL byte at column 5")


def test_corrupt_gzip_is_a_data_error(tmp_path):
    data = bytearray(gzip.compress(b"u1 a b\n" * 500))
    data[10] = 0x07  # the first deflate block (after the 10-byte header) gets the reserved type: a zlib.error
    f = tmp_path / "user_sequence.txt.gz"
    f.write_bytes(bytes(data))
    with pytest.raises(DataError, match=re.escape(f"{f}: cannot read: Error -3")):
        read("user_sequence", f)
    f.write_bytes(b"not gzip")
    with pytest.raises(DataError, match=re.escape(f"{f}: cannot read: Not a gzipped file")):
        read("user_sequence", f)


# ---------------------------------------------------------------- Amazon (JSON lines, streamed in chunks)
def _amazon(d: Path) -> Path:
    d.mkdir()
    rev = [{"reviewerID": f"U{k}", "asin": f"A{k % 2}", "overall": 5.0, "unixReviewTime": k} for k in range(4)]
    (d / "reviews_Toys_5.json").write_text("\n".join(json.dumps(r) for r in rev) + "\n")
    (d / "meta_Toys.json").write_text("{'asin': 'A0', 'title': 'Car'}\n{'asin': 'A1', 'title': 'Doll'}\n")
    return d


def test_amazon_reviews_undecodable_line(tmp_path, monkeypatch):
    d = _amazon(tmp_path / "a")
    f = d / "reviews_Toys_5.json"
    lines = f.read_bytes().split(b"\n")
    lines[2] = lines[2][:-1] + b', "reviewText": "caf\xe9"}'  # inside a field polars is not asked for
    f.write_bytes(b"\n".join(lines))
    _raises_at(f, 3, "amazon2014", d)
    # the same line number when the file is read in small chunks
    monkeypatch.setattr(_common, "line_chunks", functools.partial(_common.line_chunks, chunk_bytes=60))
    from modalrec.data.readers import amazon
    monkeypatch.setattr(amazon, "line_chunks", _common.line_chunks)
    _raises_at(f, 3, "amazon2014", d)


def test_amazon_review_value_polars_cannot_read_names_its_line(tmp_path):
    d = _amazon(tmp_path / "a")
    f = d / "reviews_Toys_5.json"
    lines = f.read_text().splitlines()
    lines[2] = lines[2].replace("5.0", '"five"')
    f.write_text("\n".join(lines) + "\n")
    _raises_at(f, 3, "amazon2014", d, what="cannot parse: ")


def test_amazon_binary_meta_and_lenient_meta_text(tmp_path):
    d = _amazon(tmp_path / "a")
    m = d / "meta_Toys.json"
    m.write_bytes(PNG)
    _raises_at(m, 1, "amazon2014", d)
    m.write_bytes(b"{'asin': 'A0', 'title': 'Car'}\n{'asin': 'A1', \xff'title': 'Doll'}\n")  # breaks the record
    _raises_at(m, 2, "amazon2014", d)
    m.write_bytes(b"{'asin': 'A0', 'title': 'Caf\xe9'}\n{'asin': 'A1', 'title': 'Doll'}\n")  # a record all the same
    _, items = read("amazon2014", d)
    assert items["title"].to_list() == ["Caf\ufffd", "Doll"]
    m.write_text("{'asin': 'A0', 'title': 'Car'}\n{'related': {'asin': 'A1'}}\n")  # no asin of its own
    with pytest.raises(DataError, match=re.escape(f"{m}:2 (column 'asin')")):
        read("amazon2014", d)


def test_user_sequence_binary_meta(tmp_path):
    (tmp_path / "user_sequence.txt").write_text("u1 A0 A1\n")
    meta = tmp_path / "meta.json"
    meta.write_bytes(b"{'asin': 'A0'}\n" + PNG)
    _raises_at(meta, 2, "user_sequence", tmp_path, {"meta": str(meta)})


# ---------------------------------------------------------------- CSV / TSV readers parsed by polars
def test_movielens_undecodable_lines(tmp_path):
    d = _ml100k(tmp_path / "a")
    udata = d / "raw" / "u.data"
    udata.write_bytes(b"1\t10\t5\t900\n1\t20\t3\t800\n2\t10\t\xff4\t850\n")
    _raises_at(udata, 3, "ml100k", d)
    d = _ml100k(tmp_path / "b")
    plots = d / "tmdb" / "items.csv"
    plots.write_bytes(plots.read_bytes().replace(b"dup", b"d\xfcp"))
    _raises_at(plots, 3, "ml100k", d)
    (d / "raw" / "u.item").write_bytes(b"")  # latin-1: any byte decodes, but an empty movie list is an error
    with pytest.raises(DataError, match=re.escape(f"{d / 'raw' / 'u.item'}: no movies")):
        read("ml100k", d)


def test_ml1m_binary_ratings(tmp_path):
    d = tmp_path / "ml-1m"
    d.mkdir()
    (d / "ratings.dat").write_bytes(b"1::1193::5::978300760\n" + PNG)
    (d / "movies.dat").write_text("1193::Cuckoo (1975)::Drama\n")
    _raises_at(d / "ratings.dat", 2, "ml1m", d)


def test_rechorus_undecodable_lines(tmp_path, monkeypatch):
    d = _rechorus(tmp_path)
    train = d / "train.csv"
    good = train.read_bytes()
    train.write_bytes(good.replace(b"1\t2\t200", b"1\t2\t2\xc300"))  # line 3
    _raises_at(train, 3, "rechorus", d)
    monkeypatch.setattr(_common, "line_chunks", functools.partial(_common.line_chunks, chunk_bytes=10))
    _raises_at(train, 3, "rechorus", d)  # streamed in chunks of a line or two: the same line
    train.write_bytes(good)
    (d / "Office.text").write_bytes(PNG)
    _raises_at(d / "Office.text", 1, "rechorus", d)


def test_recbole_undecodable_line(tmp_path):
    d = tmp_path / "Toys"
    d.mkdir()
    f = d / "Toys.inter"
    f.write_bytes(b"user_id:token\titem_id:token\nu1\ti1\nu2\ti\x802\n")
    _raises_at(f, 3, "recbole", d)


def test_unisrec_binary_index_map(tmp_path):
    d = tmp_path / "Sci"
    d.mkdir()
    head = "user_id:token\titem_id_list:token_seq\titem_id:token\n"
    for part in ("train", "valid", "test"):
        (d / f"Sci.{part}.inter").write_text(head + "1\t1\t2\n")
    (d / "Sci.item2index").write_bytes(PNG)  # was a polars ComputeError traceback
    _raises_at(d / "Sci.item2index", 1, "unisrec", d)
    (d / "Sci.item2index").write_text("")
    with pytest.raises(DataError, match=re.escape(f"{d / 'Sci.item2index'}: cannot parse")):
        read("unisrec", d)


def test_hm_undecodable_lines(tmp_path):
    d = tmp_path / "hm"
    d.mkdir()
    t = d / "transactions_train.csv"
    t.write_bytes(b"t_dat,customer_id,article_id\n2018-09-20,c1,108775015\n2018-09-21,c\xff2,108775015\n")
    (d / "articles.csv").write_text("article_id,prod_name\n108775015,Strap top\n")
    _raises_at(t, 3, "hm", d, {"images": None})
    t.write_bytes(b"\x00\x01\x02\x03\n" + PNG)  # a binary file whose first "line" polars reads as a header
    _raises_at(t, 1, "hm", d, {"images": None}, what="not text: NUL byte")
    t.write_text("t_dat,customer_id,article_id\n2018-09-20,c1,108775015\n")
    (d / "articles.csv").write_bytes(PNG)
    _raises_at(d / "articles.csv", 1, "hm", d, {"images": None})


# ---------------------------------------------------------------- what the user sees
def test_run_main_prints_the_reader_error_as_one_line(tmp_path, capsys):
    from modalrec.cli import run_main

    f = tmp_path / "user_sequence.txt"
    f.write_bytes(b"u1 a b\n" + PNG)
    with pytest.raises(SystemExit) as e:
        run_main(lambda: read("user_sequence", tmp_path))
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: {f}:2: not UTF-8 text") and "Traceback" not in err
