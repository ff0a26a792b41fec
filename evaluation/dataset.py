"""Load a judged dataset folder: products.csv, queries.csv, judgments.csv.

- ``products.csv``: product_id, title, optional description (a catalog; see
  :mod:`retrieval.catalog`).
- ``queries.csv``: query_id, query, optional split.
- ``judgments.csv``: query_id, product_id, grade (a whole number from 0 to
  :data:`MAX_GRADE`); other columns are ignored.

Any folder in this format works; nothing here is specific to one dataset.
"""

from __future__ import annotations

import csv
import hashlib
import logging
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import pandas as pd

from core.errors import InvalidInput, NotFound
from retrieval.catalog import read_catalog, read_csv_text

logger = logging.getLogger(__name__)

MAX_GRADE = 2**31 - 1  # a grade past it would wrap round as a 64-bit integer's gain and sum


@dataclass
class EvalDataset:
    path: Path
    products: pd.DataFrame
    queries: pd.DataFrame
    qrels: dict[str, dict[str, int]]
    max_grade: int
    dropped_judgments: int = 0
    splits: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.path.resolve().name

    @cached_property
    def digest(self) -> str:
        """A short digest of the queries and their judgments: two results compare only on the same ones."""
        queries = "\n".join(f"{q}\t{t}" for q, t in sorted(zip(self.queries["query_id"].astype(str),
                                                                 self.queries["query"].astype(str))))
        grades = "\n".join(f"{q}\t{p}\t{g}" for q in sorted(self.qrels) for p, g in sorted(self.qrels[q].items()))
        return hashlib.sha256(f"{queries}\n--\n{grades}".encode()).hexdigest()[:16]

    def select(self, split: str | None) -> list[tuple[str, str]]:
        """(query_id, query) pairs of ``split`` (all queries when None)."""
        queries = self.queries
        if split is not None:
            if split not in self.splits:
                raise InvalidInput(f"split {split!r} is not in {self.path}/queries.csv; splits there: {self.splits}")
            queries = queries[queries["split"] == split]
        return list(zip(queries["query_id"], queries["query"]))


def _read_csv(path: Path, required: tuple[str, ...]) -> pd.DataFrame:
    if not path.is_file():
        raise NotFound(f"{path} does not exist; a dataset folder needs products.csv, queries.csv and judgments.csv")
    try:
        frame = read_csv_text(path)  # as a catalog is read: a row longer than the header is named, or read
    except pd.errors.EmptyDataError:
        raise InvalidInput(f"{path} is empty: it needs a header of {', '.join(required)} and a row a line") from None
    except UnicodeDecodeError as error:
        raise InvalidInput(f"{path} is not a UTF-8 CSV file ({error}); save it as CSV in UTF-8") from None
    except (pd.errors.ParserError, csv.Error) as error:
        raise InvalidInput(f"{path} does not read as CSV ({str(error).splitlines()[0][:200]})") from None
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise InvalidInput(f"{path}: missing column(s) {missing}; found {list(frame.columns)}")
    return frame


def _grades(frame: pd.DataFrame, path: Path) -> pd.Series:
    numeric = pd.to_numeric(frame["grade"], errors="coerce")
    bad = numeric.isna() | (numeric < 0) | (numeric % 1 != 0) | (numeric > MAX_GRADE)
    if bad.any():
        row = int(bad.to_numpy().argmax())
        raise InvalidInput(
            f"{path} row {row + 1}, column 'grade': {frame['grade'].iat[row]!r} is not a whole number from 0 to "
            f"{MAX_GRADE}"
        )
    return numeric.astype(int)


def _known(judgments: pd.DataFrame, queries: pd.DataFrame, products: pd.DataFrame,
           folder: Path) -> tuple[pd.DataFrame, int]:
    """The judgments naming a query of queries.csv and a product of products.csv, and how many others were
    dropped; :class:`InvalidInput` naming the first unknown ids when none is left."""
    query_known = judgments["query_id"].isin(set(queries["query_id"]))
    product_known = judgments["product_id"].isin(set(products["product_id"]))
    known = query_known & product_known
    dropped = int((~known).sum())
    if dropped:
        unknown = "; ".join(f"{column} {ids} not in {file}" for column, file, ids in (
            ("query_id", "queries.csv", judgments["query_id"][~query_known].unique()[:5].tolist()),
            ("product_id", "products.csv", judgments["product_id"][~product_known].unique()[:5].tolist())) if ids)
        if dropped == len(judgments):
            raise InvalidInput(f"{folder}/judgments.csv: all {dropped} judgment(s) name an unknown query or product "
                               f"({unknown}); a judgment names a query_id of queries.csv and a product_id of "
                               "products.csv")
        logger.warning("%s: dropped %d judgment(s) naming an unknown query or product (%s)", folder, dropped, unknown)
    return judgments[known], dropped


def load_dataset(path: str | Path) -> EvalDataset:
    """Read and check a dataset folder.

    Judgments naming an unknown query or product are dropped and counted.
    """
    folder = Path(path)
    if not folder.is_dir():
        raise NotFound(f"dataset folder {folder} does not exist")
    products, _ = read_catalog(folder / "products.csv")
    queries = _read_csv(folder / "queries.csv", ("query_id", "query"))
    queries["query_id"] = queries["query_id"].str.strip()  # as the catalog reads product ids
    twice = queries["query_id"][queries["query_id"].duplicated()].unique().tolist()
    if twice:
        raise InvalidInput(f"{folder / 'queries.csv'}: query_id {twice[:5]} given more than once; each query needs "
                           "its own id (its judgments name it)")
    if "split" not in queries.columns:
        queries["split"] = ""
    judgments = _read_csv(folder / "judgments.csv", ("query_id", "product_id", "grade"))
    judgments["grade"] = _grades(judgments, folder / "judgments.csv")
    for column in ("query_id", "product_id"):
        judgments[column] = judgments[column].str.strip()
    judgments, dropped = _known(judgments, queries, products, folder)
    twice = judgments[judgments.duplicated(["query_id", "product_id"], keep=False)]
    if len(twice):  # which grade holds is not ours to choose: the last one would, silently
        first = twice.iloc[0]
        grades = twice[(twice["query_id"] == first["query_id"]) & (twice["product_id"] == first["product_id"])]
        raise InvalidInput(f"{folder}/judgments.csv judges query {first['query_id']!r} and product "
                           f"{first['product_id']!r} {len(grades)} times (grades {grades['grade'].tolist()}), and "
                           f"{twice.groupby(['query_id', 'product_id']).ngroups - 1} other pairs more than once: "
                           "keep one grade per pair (their mean, or the latest judgment)")
    qrels: dict[str, dict[str, int]] = {}
    for qid, pid, grade in zip(judgments["query_id"], judgments["product_id"], judgments["grade"]):
        qrels.setdefault(qid, {})[pid] = int(grade)
    max_grade = int(judgments["grade"].max()) if len(judgments) else 0
    if max_grade <= 0:
        raise InvalidInput(f"{folder}/judgments.csv has no grade above 0; nothing can be evaluated")
    splits = sorted(s for s in queries["split"].unique() if s)
    return EvalDataset(folder, products, queries, qrels, max_grade, dropped, splits)
