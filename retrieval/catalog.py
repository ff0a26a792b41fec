"""Read and validate a store's product catalog (CSV, Parquet or JSONL).

Required columns: ``product_id`` and ``title``; ``description`` is optional; every
other column is kept as a product attribute. A few attribute names have a type
that later stages rely on (:data:`TYPED_COLUMNS`). A bad row (missing id or
title, duplicate id, wrong type) raises :class:`~core.errors.CatalogError`
naming the file, row and column, unless the caller asks to skip bad rows, in
which case they are dropped and counted in the :class:`CatalogReport`.

Rows are numbered from 1, the first product after any header.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import json
import logging
import math
import re
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from core.errors import CatalogError

logger = logging.getLogger(__name__)

REQUIRED = ("product_id", "title")
RESERVED = frozenset({"live"})  # columns the index keeps beside the catalog's
MAX_ID_CHARS = 128  # a product id's length: events, impressions and shelves carry ids up to this
MAX_FACET_CHARS = 1000  # a category's or brand's length: filters and rules name them in full
TEXT_COLUMNS = ("product_id", "title", "description")
FORMATS = {".csv": "CSV", ".parquet": "Parquet", ".pq": "Parquet", ".jsonl": "JSONL", ".ndjson": "JSONL"}
BLOCK = 1 << 20  # bytes read at a time when a file is scanned for a byte
MAX_FIELD_CHARS = 2**31 - 1  # a CSV value's length as the csv module reads it: as pandas does (a C long's)
_SURROGATE = re.compile("[\ud800-\udfff]")  # half of a UTF-16 pair: JSON's escapes may hold one alone


@dataclass(frozen=True, slots=True)
class RowProblem:
    """One bad value in a catalog file."""

    file: str
    row: int
    column: str
    message: str

    def __str__(self) -> str:
        return f"{self.file} row {self.row}, column {self.column!r}: {self.message}"


@dataclass
class CatalogReport:
    """What reading a catalog found: rows read and kept, problems skipped."""

    file: str
    rows_read: int = 0
    rows_kept: int = 0
    problems: list[RowProblem] = field(default_factory=list)

    @property
    def rows_skipped(self) -> int:
        return self.rows_read - self.rows_kept


def _is_missing(value: Any) -> bool:
    if value is None or value is pd.NA or value is pd.NaT:  # pd.NA: a Parquet column of a nullable type
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and not value.strip()


def _check_characters(value: Any) -> str | None:
    """Why a value of any column is refused for the characters it holds: a NUL character, which a CSV reader
    cuts a value at (``drill\\x00 bit`` would read as ``drill``), so every format refuses it alike; an unpaired
    surrogate (a JSON escape such as ``\\ud800`` without its other half), which is no UTF-8 text: the
    embedding cache, the index's files and the responses could not write it."""
    if not isinstance(value, str):
        return None
    if "\x00" in value:
        return f"{value[:40]!r} holds a NUL character (\\x00); remove it"
    surrogate = _SURROGATE.search(value)
    if surrogate:
        return (f"{value[:40]!r} holds an unpaired surrogate ({surrogate.group()!r}), which is no UTF-8 text; "
                "write the character whole")
    return None


def _refused_in(text: str) -> bool:
    """Whether ``text`` (a column's values joined) holds a character :func:`_check_characters` refuses: a NUL
    (a byte search), or an unpaired surrogate, which only text beyond ASCII can hold and UTF-8 cannot encode.
    A column's cells are checked one by one only when this finds one: a few C passes over the column instead of
    a search of each of its cells."""
    if "\x00" in text:
        return True
    if text.isascii():
        return False
    try:
        text.encode()
    except UnicodeEncodeError:
        return True
    return False


def _check_id(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        return f"{value!r} is a {type(value).__name__}; product_id must be a string or integer"
    if isinstance(value, float) and not value.is_integer():
        return f"{value!r} is not an integer; product_id must be a string or integer"
    if len(str(value).strip()) > MAX_ID_CHARS:
        return (f"{str(value)[:40]!r}... has {len(str(value).strip())} characters; product ids have at most "
                f"{MAX_ID_CHARS} (events and impressions name products by id)")
    return None


def _check_text(column: str, max_chars: int | None = None) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        if not isinstance(value, str):
            return f"{value!r} is a {type(value).__name__}; {column} must be text"
        if max_chars is not None and len(value) > max_chars:  # as stored: filters name it with its spaces
            return (f"{value[:40]!r}... has {len(value)} characters; a {column} has at most {max_chars} "
                    "(filters and rules name it in full)")
        return None

    return check


def _check_number(integer: bool) -> Callable[[Any], str | None]:
    kind = "a non-negative integer" if integer else "a non-negative number"

    def check(value: Any) -> str | None:
        try:
            if isinstance(value, str) and ("_" in value or not value.isascii()):  # float() reads 1_299.00 and
                raise ValueError(value)  # other scripts' digits; the conversion (pandas) would not
            number = float(value)
        except (TypeError, ValueError):
            return f"{value!r} is not a number; expected {kind}"
        if isinstance(value, bool) or not math.isfinite(number) or number < 0:
            return f"{value!r} is not {kind} (finite)"
        if integer and not number.is_integer():
            return f"{value!r} is not {kind}"
        return None

    return check


_BOOLS = {"true": True, "false": False, "1": True, "0": False, "yes": True, "no": False}


BOOL_COLUMNS = ("in_stock", "promoted")
NUMBER_COLUMNS = ("price", "quantity", "popularity")


def as_bool(value: Any) -> bool:
    """A catalog's boolean as written: true/false, yes/no, 1/0, any case, as text or a number (1.0)."""
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _BOOLS:
            return _BOOLS[text]
        return float(text) != 0
    return bool(value)


def _check_bool(value: Any) -> str | None:
    if isinstance(value, bool) or (isinstance(value, (int, float)) and value in (0, 1)):
        return None
    if isinstance(value, str):
        text = value.strip().lower()
        try:
            if text in _BOOLS or float(text) in (0.0, 1.0):  # "1.0": a column of flags a program wrote as numbers
                return None
        except ValueError:
            pass
    return f"{value!r} is not a boolean; use true/false, yes/no or 1/0"


#: Attribute columns with a fixed type: name -> (checker, pandas converter).
TYPED_COLUMNS: dict[str, Callable[[Any], str | None]] = {
    "price": _check_number(integer=False),
    "quantity": _check_number(integer=True),
    "in_stock": _check_bool,
    "promoted": _check_bool,
    "popularity": _check_number(integer=False),
    "category": _check_text("category", MAX_FACET_CHARS),
    "brand": _check_text("brand", MAX_FACET_CHARS),
}


def check_catalog_file(path: str | Path) -> str:
    """The format of the catalog file ``path`` (by its suffix), or :class:`~core.errors.CatalogError` when
    the suffix names no catalog format or no such file exists: what a command checks before it starts work
    that reads the catalog later, in another process."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        allowed = ", ".join(sorted(FORMATS))
        raise CatalogError(f"{path}: unknown catalog format {suffix!r}; use one of {allowed}")
    if not path.is_file():
        raise CatalogError(f"catalog {path} does not exist; pass the path of a CSV/Parquet/JSONL file")
    return FORMATS[suffix]


def _load_frame(path: Path) -> tuple[pd.DataFrame, str]:
    kind = check_catalog_file(path)
    try:
        frame = _read(path, kind)
    except UnicodeDecodeError as err:
        # the reader's error counts from the start of the block it was decoding: the file is read again for
        # where it stops being UTF-8
        found = _not_utf8(path) if kind != "Parquet" else None
        offset, line, byte, reason = found or (err.start, None, err.object[err.start:err.start + 1], err.reason)
        where = f"at offset {offset}, line {line}" if line else f"at offset {offset}"
        raise CatalogError(f"{path} is not UTF-8 text (byte {byte!r} {where}: {reason}); save it as UTF-8") from err
    except (pd.errors.ParserError, csv.Error, ValueError, OSError) as err:
        if isinstance(err, CatalogError):
            raise
        raise CatalogError(f"{path} does not read as {kind}: {str(err).strip()[:200]}") from err
    if frame.index.name is not None and frame.index.name not in frame.columns:  # Parquet: product_id as index
        frame = frame.reset_index()
    unwritable = [name for name in frame.columns if _check_characters(name)]
    if unwritable:
        raise CatalogError(f"{path}: a column name {_check_characters(unwritable[0])}")
    reserved = sorted(RESERVED & set(frame.columns))
    if reserved:
        raise CatalogError(f"{path}: column(s) {reserved} are reserved (ShopRank marks deleted products with 'live'); "
                           "rename them")
    return frame.astype(object).reset_index(drop=True), kind


def _nul_byte(path: Path) -> tuple[int, int] | None:
    """The offset and line (from 1) of the first NUL byte in ``path``, or None when it holds none."""
    offset = newlines = 0
    with path.open("rb") as handle:
        while block := handle.read(BLOCK):
            at = block.find(b"\x00")
            if at >= 0:
                return offset + at, newlines + block.count(b"\n", 0, at) + 1
            offset, newlines = offset + len(block), newlines + block.count(b"\n")
    return None


def _not_utf8(path: Path) -> tuple[int, int, bytes, str] | None:
    """Where ``path`` first stops being UTF-8: the byte's offset in the file, its line (from 1), the byte and
    why; None when it is UTF-8 throughout. Read a block at a time; a character cut by the end of a block is
    held back by the decoder and decoded with the next one."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = newlines = 0  # bytes and line ends before the block
    with path.open("rb") as handle:
        while True:
            block = handle.read(BLOCK)
            held = len(decoder.getstate()[0])  # bytes of the previous block the decoder holds back
            try:
                decoder.decode(block, final=not block)
            except UnicodeDecodeError as err:  # err.start counts from the held bytes
                at = offset - held + err.start
                line = newlines + block.count(b"\n", 0, max(at - offset, 0)) + 1
                return at, line, err.object[err.start:err.start + 1], err.reason
            if not block:
                return None
            offset, newlines = offset + len(block), newlines + block.count(b"\n")


def read_csv_text(path: Path) -> pd.DataFrame:
    """A CSV file's values as text, as every CSV ShopRank reads (a catalog, an evaluation dataset's queries and
    judgments): a NUL byte, a column named twice and a row whose fields past the header's hold a value are
    refused (:class:`CatalogError`, naming the line or row); a row ending in delimiters the header lacks is read
    as written. pandas' own errors (an empty file, a quote never closed, text that is not UTF-8) pass through."""
    # pandas cuts a value at a NUL byte (a false duplicate id, a shortened title): refused before it reads
    nul = _nul_byte(path)
    if nul:
        raise CatalogError(f"{path} line {nul[1]}: a NUL byte (\\x00) at offset {nul[0]}, which a CSV reader "
                           "cuts a value at; remove it (or save the file as UTF-8, not UTF-16)")
    _check_header(path)  # pandas reads a repeated name as "title.1": a second title kept as an attribute
    # index_col=False: rows ending in a delimiter the header lacks are read as written, not shifted by one
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", pd.errors.ParserWarning)
            frame = pd.read_csv(path, dtype=str, keep_default_na=False, index_col=False)
    except pd.errors.ParserError as err:
        if "fields in line" not in str(err):  # not a later row longer than the first ones
            raise
        return _rows_cut_to_header(path)  # a row whose extra fields hold values is named
    if any(issubclass(w.category, pd.errors.ParserWarning) for w in caught):
        _checked_rows(path)  # a row whose extra fields hold values is refused, by its number
    return frame


def _read(path: Path, kind: str) -> pd.DataFrame:
    if kind == "CSV":
        frame = read_csv_text(path)
    elif kind == "Parquet":
        # nullable types: an integer id column with a null stays exact (not float64: 2**53 + 1 would change)
        frame = pd.read_parquet(path, dtype_backend="numpy_nullable")
    else:
        records = []
        with path.open(encoding="utf-8-sig") as lines:
            for number, line in enumerate(lines, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line, object_pairs_hook=_object_of_unique_keys)
                except json.JSONDecodeError as err:
                    raise CatalogError(f"{path} line {number}: invalid JSON ({err.msg})") from err
                except _RepeatedKey as err:  # json.loads keeps the last value: the first is lost unsaid
                    raise CatalogError(f"{path} line {number}: column {err.key!r} is named twice in one object; "
                                       "name each column once") from None
                if not isinstance(record, dict):
                    raise CatalogError(f"{path} line {number}: expected a JSON object per line")
                records.append(record)
        frame = pd.DataFrame(records, dtype=object)  # values as written (no float column for ints with a null)
    return frame


class _RepeatedKey(Exception):
    """A JSON object names ``key`` twice."""

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _object_of_unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """The JSON object of ``pairs``, or :class:`_RepeatedKey` when a key repeats (``object_pairs_hook``)."""
    record = dict(pairs)
    if len(record) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _RepeatedKey(key)
            seen.add(key)
    return record


def _check_header(path: Path) -> None:
    """Refuse a CSV whose header (its first row that is not blank, as pandas reads it) names a column twice;
    blank names are left to pandas, which numbers them."""
    limit = csv.field_size_limit(MAX_FIELD_CHARS)
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            header = next((row for row in csv.reader(handle) if row), [])
    finally:
        csv.field_size_limit(limit)
    counts = Counter(name for name in header if name.strip())
    repeated = sorted(name for name, count in counts.items() if count > 1)
    if repeated:
        raise CatalogError(f"{path}: column(s) {repeated} are named more than once in the header; a CSV file "
                           "names each column once: rename or remove the repeats")


def _checked_rows(path: Path) -> tuple[list[str], list[list[str]]]:
    """The CSV's header and rows (blank lines left out, as pandas leaves them), each cut to the header's fields,
    a short one filled with empty fields. A row with more fields than the header names is refused when an extra
    field holds a value (a trailing delimiter, an empty extra field, is read as the rest of the row)."""
    limit = csv.field_size_limit(MAX_FIELD_CHARS)  # the csv module's own is 131072: a long description
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            rows = csv.reader(handle)
            header = next((row for row in rows if row), [])  # blank lines before it left out, as pandas does
            body = []
            for number, row in enumerate((row for row in rows if row), start=1):
                extra = [field for field in row[len(header):] if field.strip()]
                if extra:
                    raise CatalogError(f"{path} row {number}: {len(row)} fields, the header names {len(header)} "
                                       f"(extra: {extra[:3]!r}); quote values that hold a comma, or fix the header")
                body.append((row + [""] * len(header))[: len(header)])
    finally:
        csv.field_size_limit(limit)
    return header, body


def _rows_cut_to_header(path: Path) -> pd.DataFrame:
    """The CSV read from its :func:`_checked_rows`, as every CSV is read (blank column names named as pandas
    names them; a repeated name is refused before, by :func:`_check_header`)."""
    header, body = _checked_rows(path)
    cut = io.StringIO()
    csv.writer(cut).writerows([header, *body])
    cut.seek(0)
    return pd.read_csv(cut, dtype=str, keep_default_na=False, index_col=False)


def _problems(frame: pd.DataFrame, file: str) -> list[RowProblem]:
    problems: list[RowProblem] = []
    checks: dict[str, Callable[[Any], str | None]] = {
        "product_id": _check_id,
        "title": _check_text("title"),
        "description": _check_text("description"),
        **TYPED_COLUMNS,
    }
    for column in frame.columns:
        check, values = checks.get(column), frame[column].tolist()
        try:
            text = "".join(values)
        except TypeError:  # numbers among them (JSONL, Parquet): only text holds characters
            text = "".join(value for value in values if isinstance(value, str))
        refused = _refused_in(text)
        del text
        if check is None and not refused:  # an attribute of any other name: its characters are all it is checked for
            continue
        for position, value in enumerate(values):
            if _is_missing(value):
                if column in REQUIRED:
                    problems.append(RowProblem(file, position + 1, column, "missing; every product needs one"))
                continue
            message = (_check_characters(value) if refused else None) or (check(value) if check else None)
            if message:
                problems.append(RowProblem(file, position + 1, column, message))
    return problems


def _normalise_ids(frame: pd.DataFrame) -> pd.Series:
    def as_text(value: Any) -> Any:
        if isinstance(value, float) and value.is_integer():
            return str(int(value))
        return str(value).strip() if not _is_missing(value) else None

    return frame["product_id"].map(as_text)


def read_catalog(path: str | Path, skip_bad_rows: bool = False) -> tuple[pd.DataFrame, CatalogReport]:
    """Read a catalog file into a frame of valid products.

    Args:
        path: A ``.csv``, ``.parquet`` or ``.jsonl`` file.
        skip_bad_rows: Drop bad rows (counted in the report) instead of raising.

    Returns:
        The products (``product_id`` and ``title`` as text, ``description`` text
        or empty, typed attribute columns converted) and a report.

    Raises:
        CatalogError: A required column is missing, or a row is bad and
            ``skip_bad_rows`` is false. The message names file, row and column.
    """
    file = Path(path)
    frame, _ = _load_frame(file)
    missing = [c for c in REQUIRED if c not in frame.columns]
    if missing:
        raise CatalogError(
            f"{file}: missing column(s) {missing}; found {list(frame.columns)}. "
            "A catalog needs product_id and title (description and attributes are optional)"
        )
    report = CatalogReport(file=str(file), rows_read=len(frame))
    problems = _problems(frame, str(file))
    frame["product_id"] = _normalise_ids(frame)
    bad_rows = {p.row - 1 for p in problems}
    first_row: dict[str, int] = {}
    for position, pid in enumerate(frame["product_id"].tolist()):
        if position in bad_rows or pid is None:
            continue
        if pid in first_row:
            problems.append(
                RowProblem(str(file), position + 1, "product_id",
                           f"{pid!r} duplicates row {first_row[pid] + 1}; product ids must be unique")
            )
            bad_rows.add(position)
        else:
            first_row[pid] = position
    problems.sort(key=lambda p: (p.row, p.column))
    if problems and not skip_bad_rows:
        more = f" ({len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
        raise CatalogError(f"{problems[0]}{more}; fix the file or pass --skip-bad-rows to skip bad rows")
    if bad_rows:
        frame = frame.drop(index=sorted(bad_rows))
        logger.warning("%s: skipped %d bad row(s); first: %s", file, len(bad_rows), problems[0])
    report.problems = problems
    report.rows_kept = len(frame)
    given = [str(column) for column in frame.columns]
    products = _convert(frame.reset_index(drop=True))
    products.attrs["given"] = given  # what an upsert may change (a column the file lacks is not "empty")
    return products, report


def _convert(frame: pd.DataFrame) -> pd.DataFrame:
    frame["title"] = frame["title"].map(lambda v: str(v).strip())
    if "description" not in frame.columns:
        frame["description"] = ""
    frame["description"] = frame["description"].map(lambda v: "" if _is_missing(v) else str(v).strip())
    typed_columns(frame)
    for column in frame.columns:
        if frame[column].dtype == object and column not in (*BOOL_COLUMNS, *TEXT_COLUMNS):
            frame[column] = frame[column].map(lambda v: None if _is_missing(v) else str(v))
    return frame


def typed_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame``'s numeric columns (price, quantity, popularity) as numbers and its flags (in_stock, promoted)
    as booleans, in place: for a catalog just read, and for an index's products stored before a column was
    typed (an upsert then joins them without a type clash). A value that is neither is left out (None)."""
    for column in NUMBER_COLUMNS:
        if column in frame.columns and frame[column].dtype == object:
            frame[column] = pd.to_numeric(frame[column].map(lambda v: None if _is_missing(v) else v), errors="coerce")
    for column in BOOL_COLUMNS:
        if column in frame.columns and frame[column].dtype != bool:
            frame[column] = frame[column].map(lambda v: None if _is_missing(v) else _flag_or_none(v))
    return frame


def _flag_or_none(value: Any) -> bool | None:
    try:
        return as_bool(value)
    except ValueError:
        return None


def catalog_hash(frame: pd.DataFrame) -> str:
    """SHA-256 of the searchable content (id, title, description), order-independent."""
    digest = hashlib.sha256()
    rows = frame[list(TEXT_COLUMNS)].sort_values("product_id")
    for pid, title, description in rows.itertuples(index=False, name=None):
        digest.update(f"{pid}\x1f{title}\x1f{description}\x1e".encode())
    return digest.hexdigest()


def products_hash(frame: pd.DataFrame) -> str:
    """SHA-256 of every column of the products, the attributes too (prices, brands, stock: what filters and
    features read), order-independent: what tells apart datasets of the same text (:func:`catalog_hash`). A
    number or flag is hashed as its float64 value (``3`` and ``3.0`` agree), any other value as its text, a
    missing one as NaN or as empty; so the same products stored in Parquet and read back agree. A column at a
    time, not a value at a time."""
    digest = hashlib.sha256()
    order = frame["product_id"].astype(str).argsort(kind="stable").to_numpy()
    for column in sorted(frame.columns, key=str):
        values = frame[column].iloc[order]
        digest.update(f"{column}\x1d".encode())
        if pd.api.types.is_numeric_dtype(values.dtype):
            numbers = values.to_numpy(dtype="float64", na_value=np.nan)
            digest.update(np.where(np.isnan(numbers), np.nan, numbers).tobytes())  # one NaN, whichever was read
        else:
            digest.update("\x1e".join(values.astype(str).where(values.notna(), "").tolist()).encode())
    return digest.hexdigest()


def product_text(title: str, description: str) -> str:
    """The text a bi-encoder embeds for a product."""
    return f"{title}. {description}" if description else title
