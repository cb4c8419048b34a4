"""Every reader on small fixture files written in its documented format, plus bad-input cases."""

import gzip
import json
from pathlib import Path

import polars as pl
import pytest

from modalrec.data.readers import read
from modalrec.errors import DataError, ParamError

INTER_COLS = ["user_orig", "item_orig", "timestamp", "order", "rating"]


def _check_contract(inter: pl.DataFrame, items: pl.DataFrame) -> None:
    assert inter.columns == INTER_COLS
    assert inter.schema["timestamp"] == pl.Int64 and inter.schema["order"] == pl.Int64
    assert inter.schema["rating"] == pl.Float32
    assert inter["order"].to_list() == sorted(inter["order"].to_list())
    assert items.columns[0] == "item_orig" and items.columns[-2:] == ["image_path", "image_bytes"]
    assert items["item_orig"].n_unique() == items.height


# ---------------------------------------------------------------- user_sequence
def test_user_sequence(tmp_path):
    f = tmp_path / "user_sequence.txt"
    f.write_text("u1 a b c\n\nu2 c a\n")
    inter, items = read("user_sequence", tmp_path)
    _check_contract(inter, items)
    assert inter["user_orig"].to_list() == ["u1"] * 3 + ["u2"] * 2
    assert inter["item_orig"].to_list() == ["a", "b", "c", "c", "a"]
    assert inter["order"].to_list() == [0, 1, 2, 3, 4]
    assert inter["timestamp"].null_count() == 5
    assert items["item_orig"].to_list() == ["a", "b", "c"]


def test_user_sequence_malformed(tmp_path):
    f = tmp_path / "user_sequence.txt"
    f.write_text("u1 a b\nu2\n")
    with pytest.raises(DataError, match=r"user_sequence.txt:2"):
        read("user_sequence", f)


# ---------------------------------------------------------------- ReChorus
def _rechorus(tmp_path: Path) -> Path:
    d = tmp_path / "Office"
    d.mkdir()
    (d / "train.csv").write_text("user_id\titem_id\ttime\n1\t1\t100\n1\t2\t200\n2\t2\t100\n")
    (d / "dev.csv").write_text("user_id\titem_id\ttime\tneg_items\n1\t3\t200\t[1, 2]\n")
    (d / "test.csv").write_text("user_id\titem_id\ttime\tneg_items\n1\t1\t300\t[2]\n2\t3\t150\t[1]\n")
    (d / "Office.item2index").write_text("B01\t1\nB02\t2\nB03\t3\n")
    (d / "Office.text").write_text("id\ttext\nB01\tPen Blue\nB02\tPaper\nB03\t  \n")
    return d


def test_rechorus(tmp_path):
    inter, items = read("rechorus", _rechorus(tmp_path))
    _check_contract(inter, items)
    assert inter["item_orig"].to_list() == ["B01", "B02", "B02", "B03", "B01", "B03"]
    assert inter["timestamp"].to_list() == [100, 200, 100, 200, 300, 150]
    assert items["title"].to_list() == ["Pen Blue", "Paper", None]  # blank text -> null


def test_rechorus_bad_int(tmp_path):
    d = _rechorus(tmp_path)
    (d / "train.csv").write_text("user_id\titem_id\ttime\n1\t1\t100\n1\tx\t200\n")
    with pytest.raises(DataError, match=r"train.csv:3 \(column 'item_id'\)"):
        read("rechorus", d)


def test_rechorus_missing_file(tmp_path):
    d = _rechorus(tmp_path)
    (d / "dev.csv").unlink()
    with pytest.raises(DataError, match="dev.csv"):
        read("rechorus", d)


# ---------------------------------------------------------------- MovieLens
def _ml100k(tmp_path: Path, plots: bool = True) -> Path:
    d = tmp_path / "ml"
    (d / "raw").mkdir(parents=True)
    (d / "raw" / "u.data").write_text("1\t10\t5\t900\n1\t20\t3\t800\n2\t10\t4\t850\n")
    flags = ["0"] * 19
    f10, f20 = flags.copy(), flags.copy()
    f10[1] = f10[8] = "1"
    f20[5] = "1"
    (d / "raw" / "u.item").write_bytes(("10|Am\xe9lie (2001)|01-Jan-2001||http://x|" + "|".join(f10) + "\n"
                                        "20|Heat (1995)|01-Jan-1995||http://y|" + "|".join(f20) + "\n").encode("latin-1"))
    if plots:
        (d / "tmdb").mkdir()
        (d / "tmdb" / "items.csv").write_text('movie_id,title,overview\n10,A,"A girl, in Paris."\n10,A,dup\n'
                                              "20,H,\n")
        (d / "posters").mkdir()
        (d / "posters" / "10.jpg").write_bytes(b"\xff\xd8jpeg")
    return d


def test_ml100k(tmp_path):
    d = _ml100k(tmp_path)
    inter, items = read("ml100k", d)
    _check_contract(inter, items)
    assert inter["rating"].to_list() == [5.0, 3.0, 4.0] and inter["timestamp"].to_list() == [900, 800, 850]
    row = items.row(0, named=True)
    assert row["title"] == "Amélie (2001)" and row["categories"] == "Action, Drama"
    assert row["plot"] == "A girl, in Paris."  # first non-empty plot of the duplicated id
    assert row["image_path"] == str((d / "posters" / "10.jpg").resolve())
    assert items.row(1, named=True)["plot"] is None and items.row(1, named=True)["image_path"] is None


def test_ml100k_without_extras(tmp_path):
    inter, items = read("ml100k", _ml100k(tmp_path, plots=False))
    assert "plot" not in items.columns and items["image_path"].null_count() == 2


def test_ml100k_malformed_line(tmp_path):
    d = _ml100k(tmp_path)
    (d / "raw" / "u.data").write_text("1\t10\t5\t900\n1\t20\tthree\t800\n")
    with pytest.raises(DataError, match=r"u.data:2"):
        read("ml100k", d)


def test_ml1m(tmp_path):
    d = tmp_path / "ml-1m"
    d.mkdir()
    (d / "ratings.dat").write_text("1::1193::5::978300760\n1::661::3::978302109\n2::1193::4::978298413\n")
    (d / "movies.dat").write_bytes("1193::One Flew Over the Cuckoo's Nest (1975)::Drama\n"
                                   "661::James and the Giant Peach (1996)::Animation|Children's|Musical\n"
                                   .encode("latin-1"))
    plots = tmp_path / "plots.csv"
    plots.write_text("movie_id,plot\n661,A boy and a peach.\n")
    inter, items = read("ml1m", d, {"plots": str(plots)})
    _check_contract(inter, items)
    assert inter["item_orig"].to_list() == ["1193", "661", "1193"]
    assert items.filter(pl.col("item_orig") == "661")["categories"][0] == "Animation, Children's, Musical"
    assert items.filter(pl.col("item_orig") == "661")["plot"][0] == "A boy and a peach."
    (d / "ratings.dat").write_text("1::1193::5::978300760\n1::661::3\n")
    with pytest.raises(DataError, match="ratings.dat"):
        read("ml1m", d)


# ---------------------------------------------------------------- Amazon
def _gz(path: Path, lines: list[str]) -> None:
    with gzip.open(path, "wt") as f:
        f.write("\n".join(lines) + "\n")


def test_amazon2014(tmp_path):
    d = tmp_path / "beauty"
    d.mkdir()
    rev = [{"reviewerID": "U1", "asin": "A1", "overall": 5.0, "unixReviewTime": 1000, "reviewText": "ok"},
           {"reviewerID": "U1", "asin": "A2", "overall": 4.0, "unixReviewTime": 1000},
           {"reviewerID": "U2", "asin": "A1", "overall": 1.0, "unixReviewTime": 900, "helpful": [0, 1]}]
    _gz(d / "reviews_Beauty_5.json.gz", [json.dumps(r) for r in rev])
    meta = [repr({"asin": "A1", "title": "Lip balm", "brand": "Bee", "categories": [["Beauty", "Lips"], ["Sale"]],
                  "description": "Soft's lips", "imUrl": "http://x"}),
            repr({"asin": "A2", "categories": [["Beauty"]]}),
            repr({"asin": "A9", "title": "never reviewed"})]
    _gz(d / "meta_Beauty.json.gz", meta)
    (d / "images").mkdir()
    (d / "images" / "A2.jpg").write_bytes(b"\xff\xd8")
    inter, items = read("amazon2014", d, {"images": str(d / "images")})
    _check_contract(inter, items)
    assert inter["user_orig"].to_list() == ["U1", "U1", "U2"] and inter["rating"].to_list() == [5.0, 4.0, 1.0]
    assert items["item_orig"].to_list() == ["A1", "A2"]
    a1 = items.row(0, named=True)
    assert a1["title"] == "Lip balm" and a1["brand"] == "Bee" and a1["categories"] == "Beauty > Lips; Sale"
    assert a1["description"] == "Soft's lips" and a1["image_path"] is None
    assert items.row(1, named=True)["title"] is None and items.row(1, named=True)["image_path"].endswith("A2.jpg")


def test_amazon2014_bad_lines(tmp_path):
    d = tmp_path / "b"
    d.mkdir()
    (d / "reviews_Toys_5.json").write_text('{"reviewerID": "U1", "asin": "A1", "overall": 5, "unixReviewTime": 1}\n'
                                           '{"reviewerID": "U2", "asin": \n')
    with pytest.raises(DataError, match=r"reviews_Toys_5.json:2"):
        read("amazon2014", d)
    (d / "reviews_Toys_5.json").write_text('{"reviewerID": "U1", "asin": "A1", "overall": 5, "unixReviewTime": 1}\n')
    (d / "meta_Toys.json").write_text("{'asin': 'A1', 'title': 'ok'}\n{'asin': 'A1', 'title': \n")
    with pytest.raises(DataError, match=r"meta_Toys.json:2"):
        read("amazon2014", d)


def test_amazon2018(tmp_path):
    d = tmp_path / "arts"
    d.mkdir()
    rev = [{"reviewerID": "U1", "asin": "B1", "overall": 5.0, "unixReviewTime": 5, "style": {"Size:": "L"}},
           {"reviewerID": "U1", "asin": "B2", "overall": 3.0, "unixReviewTime": 6, "image": ["http://i"]}]
    _gz(d / "Arts_5.json.gz", [json.dumps(r) for r in rev])
    meta = [{"asin": "B1", "title": "Brush", "brand": "ArtCo", "category": ["Arts", "Painting"],
             "description": ["Fine", "bristles"]}]
    (d / "meta_Arts.json").write_text("\n".join(json.dumps(m) for m in meta) + "\n")
    inter, items = read("amazon2018", d, {"category": "Arts"})
    _check_contract(inter, items)
    b1 = items.row(0, named=True)
    assert b1["categories"] == "Arts > Painting" and b1["description"] == "Fine bristles" and b1["brand"] == "ArtCo"


# ---------------------------------------------------------------- H&M
def test_hm(tmp_path):
    d = tmp_path / "hm"
    (d / "images" / "010").mkdir(parents=True)
    (d / "images" / "010" / "0108775015.jpg").write_bytes(b"\xff\xd8")
    (d / "transactions_train.csv").write_text(
        "t_dat,customer_id,article_id,price,sales_channel_id\n"
        "2018-09-20,c1,108775015,0.05,2\n2018-09-20,c1,200000001,0.03,2\n2018-09-21,c2,108775015,0.05,1\n")
    (d / "articles.csv").write_text(
        "article_id,prod_name,product_type_name,product_group_name,colour_group_name,garment_group_name,detail_desc\n"
        "108775015,Strap top,Vest top,Garment Upper body,Black,Jersey Basic,Jersey top\n"
        "200000001,Sock,Socks,Socks & Tights,White,Socks and Tights,\n")
    inter, items = read("hm", d)
    _check_contract(inter, items)
    assert inter["item_orig"].to_list() == ["0108775015", "0200000001", "0108775015"]
    assert inter["timestamp"].to_list() == [1537401600, 1537401600, 1537488000]
    top = items.row(0, named=True)
    assert top["title"] == "Strap top" and top["categories"] == "Garment Upper body > Vest top, Jersey Basic"
    assert top["image_path"].endswith("images/010/0108775015.jpg") and items.row(1, named=True)["image_path"] is None
    inter, _ = read("hm", d, {"since": "2018-09-21"})
    assert inter["user_orig"].to_list() == ["c2"] and inter["order"].to_list() == [2]
    (d / "transactions_train.csv").write_text("t_dat,customer_id,article_id\n2018-09-20,c1,108775015\nbad,c1,1\n")
    with pytest.raises(DataError, match=r"transactions_train.csv:3"):
        read("hm", d)


# ---------------------------------------------------------------- RecBole / UniSRec
def test_recbole(tmp_path):
    d = tmp_path / "Amazon_Toys"
    d.mkdir()
    (d / "Amazon_Toys.inter").write_text("user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
                                         "u1\ti1\t5.0\t100.0\nu1\ti2\t4.0\t101.0\n")
    (d / "Amazon_Toys.item").write_text("item_id:token\ttitle:token_seq\tsales_rank:float\tbrand:token\n"
                                        "i1\tToy car\t3.0\tAcme\n")
    inter, items = read("recbole", d)
    _check_contract(inter, items)
    assert inter["timestamp"].to_list() == [100, 101] and inter["rating"].to_list() == [5.0, 4.0]
    assert items.columns == ["item_orig", "title", "brand", "image_path", "image_bytes"]
    (d / "Amazon_Toys.inter").write_text("user_id:token\titem_id:token\ttimestamp:float\nu1\ti1\tsoon\n")
    with pytest.raises(DataError, match=r"Amazon_Toys.inter:2 \(column 'timestamp'\)"):
        read("recbole", d)
    (d / "Amazon_Toys.inter").write_text("user_id\titem_id\nu1\ti1\n")
    with pytest.raises(DataError, match="type"):
        read("recbole", d)


def test_unisrec(tmp_path):
    d = tmp_path / "Sci"
    d.mkdir()
    head = "user_id:token\titem_id_list:token_seq\titem_id:token\n"
    (d / "Sci.train.inter").write_text(head + "1\t1\t2\n1\t1 2\t3\n2\t3\t1\n")
    (d / "Sci.valid.inter").write_text(head + "1\t1 2 3\t4\n2\t3 1\t2\n")
    (d / "Sci.test.inter").write_text(head + "1\t1 2 3 4\t2\n")
    (d / "Sci.text").write_text("item_id:token\ttext:token_seq\n1\tMicroscope\n2\tSlides\n")
    (d / "Sci.item2index").write_text("X1\t1\nX2\t2\nX3\t3\nX4\t4\n")
    inter, items = read("unisrec", d)
    _check_contract(inter, items)
    assert inter.filter(pl.col("user_orig") == "1")["item_orig"].to_list() == ["X1", "X2", "X3", "X4", "X2"]
    assert inter.filter(pl.col("user_orig") == "2")["item_orig"].to_list() == ["X3", "X1", "X2"]
    assert items["item_orig"].to_list() == ["X1", "X2"] and items["title"].to_list() == ["Microscope", "Slides"]


# ---------------------------------------------------------------- dispatch errors
def test_unknown_format_and_option(tmp_path):
    with pytest.raises(ParamError, match="unknown dataset format"):
        read("nope", tmp_path)
    (tmp_path / "user_sequence.txt").write_text("u a b\n")
    with pytest.raises(ParamError, match=r"datasets.options.colour"):
        read("user_sequence", tmp_path, {"colour": 1})
    with pytest.raises(DataError, match="not found"):
        read("user_sequence", tmp_path / "missing")


def test_user_sequence_with_meta_and_images(tmp_path):
    (tmp_path / "user_sequence.txt").write_text("u1 A1 A2\n")
    _gz(tmp_path / "meta_Beauty.json.gz", [repr({"asin": "A1", "title": "Balm", "categories": [["Beauty"]]}),
                                           json.dumps({"asin": "A2", "title": "Soap", "brand": None})])
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "A2.jpg").write_bytes(b"\xff\xd8")
    inter, items = read("user_sequence", tmp_path, {"meta": str(tmp_path / "meta_Beauty.json.gz"),
                                                    "images": str(tmp_path / "img")})
    _check_contract(inter, items)
    assert items["title"].to_list() == ["Balm", "Soap"] and items["categories"].to_list() == ["Beauty", None]
    assert items["image_path"].null_count() == 1


def test_amazon_reviews_chunked_line_numbers(tmp_path, monkeypatch):
    """Reviews and metadata are streamed in chunks; line numbers and results must not depend on the chunking."""
    import functools

    from modalrec.data.readers import _common, amazon

    monkeypatch.setattr(amazon, "line_chunks", functools.partial(_common.line_chunks, chunk_bytes=100))
    d = tmp_path / "a"
    d.mkdir()
    rev = [json.dumps({"reviewerID": f"U{k}", "asin": f"A{k % 3}", "overall": 5.0, "unixReviewTime": k})
           for k in range(20)]
    _gz(d / "reviews_X_5.json.gz", rev)
    _gz(d / "meta_X.json.gz", [repr({"asin": f"A{k}", "title": f"t{k}"}) for k in range(3)])
    inter, items = read("amazon2014", d)
    assert inter.height == 20 and inter["timestamp"].to_list() == list(range(20))
    assert items["title"].to_list() == ["t0", "t1", "t2"]
    _gz(d / "reviews_X_5.json.gz", rev[:13] + ['{"reviewerID": "U1", "overall": 1.0}'] + rev[13:])
    with pytest.raises(DataError, match=r"reviews_X_5.json.gz:14 \(column 'asin'\)"):
        read("amazon2014", d)
