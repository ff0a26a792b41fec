from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from core.errors import CatalogError
from retrieval.catalog import catalog_hash, read_catalog


def write_csv(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_csv_keeps_attributes_and_types(tmp_path: Path) -> None:
    file = write_csv(tmp_path / "c.csv", "product_id,title,price,in_stock,color\n1,Drill,19.5,yes,red\n2,Saw,,0,\n")
    products, report = read_catalog(file)
    assert report.rows_read == 2 and report.rows_kept == 2
    assert products["product_id"].tolist() == ["1", "2"]
    assert products["description"].tolist() == ["", ""]
    assert products["price"].iloc[0] == 19.5 and pd.isna(products["price"].iloc[1])
    assert products["in_stock"].tolist() == [True, False]
    assert products["color"].tolist() == ["red", None]


def test_promotions_and_popularity_from_the_catalog_are_the_facts_without_a_feature_store(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from ranking.facts import CatalogFacts

    file = write_csv(tmp_path / "c.csv", "product_id,title,in_stock,promoted,popularity\nA,Drill,true,1,5\n"
                     "B,Saw,true,0.0,50\nC,Hammer,false,yes,7\nD,Level,1.0,,\n")
    products, _ = read_catalog(file)
    assert products["promoted"].tolist() == [True, False, True, None]
    assert products["in_stock"].tolist() == [True, True, False, True]  # 1.0: a flag a program wrote as a number
    facts = CatalogFacts(SimpleNamespace(products=products, generation=0), None).table()  # type: ignore[arg-type]
    assert facts.promoted.tolist() == [1, 0, 1, 0] and facts.popularity.tolist() == [5, 50, 7, 0]
    # stock as a quantity only, a promotion as a discount only: read as features build --from-catalog reads them
    given = write_csv(tmp_path / "q.csv", "product_id,title,quantity,discount\nA,Drill,0,10\nB,Saw,3,0\nC,Hammer,,\n")
    index = SimpleNamespace(products=read_catalog(given)[0], generation=0)
    facts = CatalogFacts(index, None).table()  # type: ignore[arg-type]
    assert facts.in_stock[:2].tolist() == [0, 1] and np.isnan(facts.in_stock[2])  # before: A counted as in stock
    assert facts.promoted.tolist() == [1, 0, 0]
    with pytest.raises(CatalogError, match="column 'promoted': 'soon' is not a boolean"):
        read_catalog(write_csv(tmp_path / "d.csv", "product_id,title,promoted\nA,Drill,soon\n"))


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("product_id,title\n1,Drill\n,Saw\n", r"c\.csv row 2, column 'product_id': missing"),
        ("product_id,title\n1,Drill\n2,  \n", r"c\.csv row 2, column 'title': missing"),
        ("product_id,title\n1,Drill\n1,Saw\n", r"row 2, column 'product_id': '1' duplicates row 1"),
        ("product_id,title,price\n1,Drill,cheap\n", r"row 1, column 'price': 'cheap' is not a number"),
        ("product_id,title,price\n1,Drill,-3\n", r"row 1, column 'price': '-3' is not a non-negative number"),
        ("product_id,title,price\n1,Drill,inf\n", r"row 1, column 'price': 'inf' is not a non-negative number"),
        ("product_id,title,quantity\n1,Drill,2.5\n", r"column 'quantity': '2.5' is not a non-negative integer"),
        ("product_id,title,in_stock\n1,Drill,maybe\n", r"column 'in_stock': 'maybe' is not a boolean"),
        ("product_id,title\n1,Drill\n" + "X" * 129 + ",Saw\n", r"row 2, column 'product_id': 'XXX.*has 129 characters; "
         r"product ids have at most 128"),
        ("product_id,title,category\n1,Drill," + "C" * 1001 + "\n", r"row 1, column 'category': 'CCC.*has 1001 "
         r"characters; a category has at most 1000"),
    ],
)
def test_bad_rows_name_file_row_and_column(tmp_path: Path, body: str, expected: str) -> None:
    with pytest.raises(CatalogError, match=expected):
        read_catalog(write_csv(tmp_path / "c.csv", body))


def test_skip_bad_rows_counts_them(tmp_path: Path) -> None:
    file = write_csv(tmp_path / "c.csv", "product_id,title,price\n1,Drill,1\n,NoId,1\n1,Dup,1\n3,Bad,x\n4,Ok,2\n")
    products, report = read_catalog(file, skip_bad_rows=True)
    assert products["product_id"].tolist() == ["1", "4"]
    assert report.rows_skipped == 3
    assert [p.row for p in report.problems] == [2, 3, 4]


def test_missing_required_column_is_an_error_even_when_skipping(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match=r"missing column\(s\) \['title'\]"):
        read_catalog(write_csv(tmp_path / "c.csv", "product_id,name\n1,x\n"), skip_bad_rows=True)


def test_jsonl_wrong_types_and_bad_json(tmp_path: Path) -> None:
    good = [{"product_id": 7, "title": "Hammer", "brand": "Husky", "tags": ["a"]}]
    file = tmp_path / "c.jsonl"
    file.write_text("\n".join(json.dumps(r) for r in good) + "\n")
    products, _ = read_catalog(file)
    assert products["product_id"].tolist() == ["7"]
    assert products["tags"].tolist() == ["['a']"]
    file.write_text(json.dumps({"product_id": 1, "title": ["x"]}) + "\n")
    with pytest.raises(CatalogError, match=r"row 1, column 'title': \['x'\] is a list; title must be text"):
        read_catalog(file)
    file.write_text('{"product_id": 1, "title": "ok"}\n{"product_id": 2,\n')
    with pytest.raises(CatalogError, match=r"c\.jsonl line 2: invalid JSON"):  # a line, not a record
        read_catalog(file)


def test_parquet_and_unknown_format(tmp_path: Path) -> None:
    frame = pd.DataFrame({"product_id": [1, 2], "title": ["Drill", "Saw"], "price": [9.0, None]})
    frame.to_parquet(tmp_path / "c.parquet")
    products, _ = read_catalog(tmp_path / "c.parquet")
    assert products["product_id"].tolist() == ["1", "2"]
    with pytest.raises(CatalogError, match=r"unknown catalog format '\.xlsx'"):
        read_catalog(tmp_path / "c.xlsx")
    with pytest.raises(CatalogError, match="does not exist"):
        read_catalog(tmp_path / "missing.csv")


def test_files_that_do_not_read_are_named_with_what_to_do(tmp_path: Path) -> None:
    (tmp_path / "latin.csv").write_bytes("product_id,title\nP1,Caf\xe9 table\n".encode("latin-1"))
    with pytest.raises(CatalogError, match=r"latin\.csv is not UTF-8 text \(byte b'\\xe9' at offset 23.*as UTF-8"):
        read_catalog(tmp_path / "latin.csv")
    (tmp_path / "x.parquet").write_text("not parquet")
    with pytest.raises(CatalogError, match=r"x\.parquet does not read as Parquet"):
        read_catalog(tmp_path / "x.parquet")
    with pytest.raises(CatalogError, match=r"does not read as CSV"):
        read_catalog(write_csv(tmp_path / "quote.csv", 'product_id,title\n"P1,Drill\n'))
    with pytest.raises(CatalogError, match=r"column\(s\) \['live'\] are reserved"):  # it marks deleted products
        read_catalog(write_csv(tmp_path / "live.csv", "product_id,title,live\nP1,Drill,no\n"))


def test_a_column_named_twice_is_refused_not_renamed_or_overwritten(tmp_path: Path) -> None:
    # pandas would read the second title as an attribute "title.1"; a BOM is not part of the first name
    (tmp_path / "two.csv").write_bytes("\ufeffproduct_id,title,price,title,product_id\nP1,Drill,9,Wrench,P7\n"
                                       .encode("utf-8"))
    with pytest.raises(CatalogError, match=r"two\.csv: column\(s\) \['product_id', 'title'\] are named more than once"):
        read_catalog(tmp_path / "two.csv")
    products, _ = read_catalog(write_csv(tmp_path / "blank.csv", "product_id,title,,\nP1,Drill,,\n"))
    assert products["title"].tolist() == ["Drill"]  # blank names are not names a catalog repeats
    (tmp_path / "c.jsonl").write_text('{"product_id": "P1", "title": "Drill", "spec": {"w": 1}}\n'
                                      '{"product_id": "P2", "title": "Saw", "title": "Wrench"}\n')
    with pytest.raises(CatalogError, match=r"c\.jsonl line 2: column 'title' is named twice"):
        read_catalog(tmp_path / "c.jsonl")


def test_catalog_hash_ignores_order_and_attributes() -> None:
    a = pd.DataFrame({"product_id": ["1", "2"], "title": ["A", "B"], "description": ["", ""], "price": [1, 2]})
    b = a.iloc[::-1].assign(price=[5, 6])
    assert catalog_hash(a) == catalog_hash(b)
    assert catalog_hash(a) != catalog_hash(a.assign(title=["A", "C"]))


def test_products_stored_before_their_columns_were_typed_are_typed_when_read(tmp_path: Path) -> None:
    from retrieval.catalog import typed_columns

    old = pd.DataFrame({"product_id": ["A", "B", "C"], "title": ["Drill", "Saw", "Level"],
                        "promoted": ["true", "false", None], "popularity": ["12", "3", None],
                        "in_stock": [True, False, True]})
    typed = typed_columns(old.copy())
    assert typed["promoted"].tolist() == [True, False, None] and typed["popularity"].tolist()[:2] == [12, 3]
    fresh, _ = read_catalog(write_csv(tmp_path / "c.csv", "product_id,title,promoted,popularity\nD,Hammer,yes,7\n"))
    joined = pd.concat([typed, fresh], ignore_index=True)  # what an upsert writes: no type clash
    joined.to_parquet(tmp_path / "products.parquet", index=False)
    assert pd.read_parquet(tmp_path / "products.parquet")["promoted"].tolist() == [True, False, None, True]


def test_catalogs_as_other_tools_write_them_are_read_as_written(tmp_path: Path) -> None:
    trailing = write_csv(tmp_path / "t.csv", "product_id,title,description,price\nP1,Cordless drill,Strong,99.5,\n")
    assert read_catalog(trailing)[0].iloc[0][["product_id", "title", "price"]].tolist() == ["P1", "Cordless drill",
                                                                                          99.5]  # before: shifted
    later = write_csv(tmp_path / "l.csv", "product_id,title,price\nP1,Drill,9\nP2,Saw,5,\n")  # a later row's
    assert read_catalog(later)[0]["product_id"].tolist() == ["P1", "P2"]  # before: "does not read as CSV"
    twice = write_csv(tmp_path / "t2.csv", "product_id,title,title,price\nP1,Drill,x,9\nP2,Saw,y,5,\n")
    with pytest.raises(CatalogError, match=r"t2\.csv: column\(s\) \['title'\] are named more than once"):
        read_catalog(twice)  # before: a second title read as the attribute "title.1", as pandas names it
    blank = write_csv(tmp_path / "b.csv", "product_id,title,price\nP1,Drill,9\n\nP2,Saw,5,oops\n")
    with pytest.raises(CatalogError, match=r"b\.csv row 2: 4 fields"):  # rows as pandas counts them
        read_catalog(blank)
    extra = write_csv(tmp_path / "x.csv", "product_id,title,price\nP1,Drill,9,extra\n")
    with pytest.raises(CatalogError, match=r"x\.csv row 1: 4 fields, the header names 3 \(extra: \['extra'\]\)"):
        read_catalog(extra)
    with pytest.raises(CatalogError, match=r"'1_299.00' is not a number"):  # float() reads it; the conversion not
        read_catalog(write_csv(tmp_path / "u.csv", "product_id,title,price\nP1,Drill,1_299.00\n"))
    with pytest.raises(CatalogError, match=r"'١٢٩٩' is not a number"):  # other scripts' digits likewise
        read_catalog(write_csv(tmp_path / "a.csv", "product_id,title,price\nP1,Drill,١٢٩٩\n"))
    nullable = pd.DataFrame({"product_id": ["P1", "P2"], "title": ["Drill", "Saw"], "brand": ["Bosch", None],
                             "quantity": [1, None], "in_stock": [True, None]}).convert_dtypes()
    nullable.to_parquet(tmp_path / "n.parquet")
    products, report = read_catalog(tmp_path / "n.parquet")  # before: <NA> was "a NAType", the row refused
    assert report.rows_skipped == 0 and products["brand"].tolist() == ["Bosch", None]
    pd.DataFrame({"product_id": pd.array([2**53 + 1, None], dtype="Int64"), "title": ["a", "b"]}).to_parquet(
        tmp_path / "big.parquet")
    assert read_catalog(tmp_path / "big.parquet", skip_bad_rows=True)[0]["product_id"].tolist() == [str(2**53 + 1)]
    (tmp_path / "big.jsonl").write_text(json.dumps({"product_id": 2**53 + 1, "title": "a"}) + "\n"
                                        + json.dumps({"product_id": None, "title": "b"}) + "\n")
    assert read_catalog(tmp_path / "big.jsonl", skip_bad_rows=True)[0]["product_id"].tolist() == [str(2**53 + 1)]
    (tmp_path / "bom.jsonl").write_bytes(b"\xef\xbb\xbf" + json.dumps({"product_id": "P1", "title": "a"}).encode())
    assert read_catalog(tmp_path / "bom.jsonl")[0]["product_id"].tolist() == ["P1"]
    pd.DataFrame({"product_id": ["P1"], "title": ["a"]}).set_index("product_id").to_parquet(tmp_path / "ix.parquet")
    assert read_catalog(tmp_path / "ix.parquet")[0]["product_id"].tolist() == ["P1"]
    pd.DataFrame({"live": [True], "product_id": ["P1"], "title": ["a"]}).set_index("live").to_parquet(
        tmp_path / "live.parquet")
    with pytest.raises(CatalogError, match=r"\['live'\] are reserved"):  # an index is a column, checked as one
        read_catalog(tmp_path / "live.parquet")


def test_a_nul_character_is_refused_where_a_reader_would_cut_the_value_at_it(tmp_path: Path) -> None:
    (tmp_path / "t.csv").write_bytes(b"product_id,title\nP1,drill\x00 bit\nP2,saw\n")  # before: read as 'drill'
    with pytest.raises(CatalogError, match=r"t\.csv line 2: a NUL byte \(\\x00\) at offset 25"):
        read_catalog(tmp_path / "t.csv")
    (tmp_path / "i.csv").write_bytes(b"product_id,title\nP\x001,drill\nP\x002,saw\n")  # before: two ids 'P'
    with pytest.raises(CatalogError, match=r"i\.csv line 2: a NUL byte"):
        read_catalog(tmp_path / "i.csv", skip_bad_rows=True)
    (tmp_path / "n.jsonl").write_text('{"product_id": "P1", "title": "drill\\u0000 bit"}\n'
                                      '{"product_id": "P2", "title": "saw", "color": "r\\u0000ed"}\n'
                                      '{"product_id": "P3", "title": "hose"}\n')
    with pytest.raises(CatalogError, match=r"row 1, column 'title': 'drill\\x00 bit' holds a NUL character"):
        read_catalog(tmp_path / "n.jsonl")
    products, report = read_catalog(tmp_path / "n.jsonl", skip_bad_rows=True)
    assert products["product_id"].tolist() == ["P3"] and [p.column for p in report.problems] == ["title", "color"]


def test_an_unpaired_surrogate_is_a_bad_row_not_a_crash_of_the_build(tmp_path: Path) -> None:
    file = tmp_path / "s.jsonl"
    file.write_text('{"product_id": "P1", "title": "drill \\ud800 bit"}\n{"product_id": "P2", "title": "saw"}\n'
                    '{"product_id": "P3", "title": "hose", "color": "\\udfff"}\n'
                    '{"product_id": "P4", "title": "smile \\ud83d\\ude00"}\n')  # a whole pair is one character
    with pytest.raises(CatalogError, match=r"row 1, column 'title': 'drill \\ud800 bit' holds an unpaired "
                                           r"surrogate \('\\ud800'\)"):
        read_catalog(file)  # before: read, then the build failed on a UnicodeEncodeError naming no row
    products, report = read_catalog(file, skip_bad_rows=True)
    assert products["product_id"].tolist() == ["P2", "P4"] and [p.row for p in report.problems] == [1, 3]
    "".join(products["title"]).encode("utf-8")  # what the embedding cache and the index write
    file.write_text('{"product_id": "P1", "title": "drill", "\\ud800": "x"}\n')
    with pytest.raises(CatalogError, match=r"s\.jsonl: a column name '\\ud800' holds an unpaired surrogate"):
        read_catalog(file, skip_bad_rows=True)


def test_a_long_value_reads_in_a_csv_whose_rows_end_in_a_delimiter(tmp_path: Path) -> None:
    import csv

    long, limit = "x" * 200_000, csv.field_size_limit()  # past the csv module's own limit (131072 characters)
    file = write_csv(tmp_path / "l.csv", f"product_id,title,description\nP1,Drill,{long}\nP2,Saw,Blade,\n")
    products, _ = read_catalog(file)  # before: a raw _csv.Error, "field larger than field limit"
    assert products["description"].tolist() == [long, "Blade"]
    assert csv.field_size_limit() == limit  # the module's limit is left as it was for other readers


def test_a_byte_that_is_not_utf8_is_named_at_its_offset_in_the_file(tmp_path: Path, monkeypatch) -> None:
    rows = "".join(f"P{i},title {i}\n" for i in range(30_000)).encode()  # past the readers' blocks (8-256 KiB)
    head = b"product_id,title\n" + rows
    (tmp_path / "far.csv").write_bytes(head + b"P,Caf\xe9\n")
    with pytest.raises(CatalogError, match=rf"byte b'\\xe9' at offset {len(head) + 5}, line 30002: invalid"):
        read_catalog(tmp_path / "far.csv")  # before: 23514, counted from the start of a block
    lines = b"".join(b'{"product_id": "P%d", "title": "t"}\n' % i for i in range(10_000))
    (tmp_path / "far.jsonl").write_bytes(lines + b'{"product_id": "X", "title": "caf\xe9"}\n')
    with pytest.raises(CatalogError, match=rf"at offset {len(lines) + 33}, line 10001"):
        read_catalog(tmp_path / "far.jsonl")
    from retrieval import catalog

    data = "product_id,title\nP1,Café crème\n".encode() + b"P2,\xe2\x82x\n"  # a whole character, then a cut one
    (tmp_path / "cut.csv").write_bytes(data)
    for block in range(1, 9):  # a character cut by the end of a block, and a bad one the decoder held back
        monkeypatch.setattr(catalog, "BLOCK", block)
        assert catalog._not_utf8(tmp_path / "cut.csv") == (data.index(b"\xe2"), 3, b"\xe2", "invalid continuation byte")


def test_the_refused_characters_are_searched_a_column_at_a_time(tmp_path: Path, monkeypatch) -> None:
    from retrieval import catalog

    (tmp_path / "u.jsonl").write_text('{"product_id": "P1", "title": "café ™", "color": "rouge ✓"}\n'
                                      '{"product_id": "P2", "title": "saw", "color": "bleu \\ud800"}\n')
    looked: list[object] = []  # the cells checked one by one
    real = catalog._check_characters
    monkeypatch.setattr(catalog, "_check_characters", lambda value: (looked.append(value), real(value))[1])
    products, report = read_catalog(tmp_path / "u.jsonl", skip_bad_rows=True)
    assert products["product_id"].tolist() == ["P1"] and [(p.row, p.column) for p in report.problems] == [(2, "color")]
    assert looked[3:] == ["rouge ✓", "bleu \ud800"]  # after the names: the column holding one, not the titles


def test_the_products_hash_covers_every_column_in_any_row_order_and_survives_parquet(tmp_path: Path) -> None:
    from retrieval.catalog import catalog_hash, products_hash

    file = write_csv(tmp_path / "p.csv", "product_id,title,price,quantity,in_stock,brand\n"
                                         "P1,Drill,10,3,yes,Dewalt\nP2,Saw,,,,\nP3,Hose,5.5,0,no,Acme\n")
    products, _ = read_catalog(file)
    products.to_parquet(tmp_path / "p.parquet")
    assert products_hash(pd.read_parquet(tmp_path / "p.parquet")) == products_hash(products)
    assert products_hash(products.iloc[::-1]) == products_hash(products)  # order-independent
    pricier = products.assign(price=[11.0, None, 5.5])
    assert catalog_hash(pricier) == catalog_hash(products) and products_hash(pricier) != products_hash(products)
    assert products_hash(products.assign(brand=["Dewalt", None, "Bosch"])) != products_hash(products)
    assert products_hash(products.assign(quantity=products["quantity"].astype("Int64"))) == products_hash(products)


def test_a_blank_line_before_the_header_does_not_make_the_header_empty(tmp_path: Path) -> None:
    """A later row ending in delimiters is read through the rows cut to the header; a blank first line had been
    taken for the header, so every row was 'longer than the header'."""
    from retrieval.catalog import read_csv_text

    path = tmp_path / "queries.csv"
    path.write_text("\nquery_id,query\nq1,drill\nq2,hose,,\n")
    frame = read_csv_text(path)
    assert list(frame.columns) == ["query_id", "query"] and frame.values.tolist() == [["q1", "drill"], ["q2", "hose"]]
