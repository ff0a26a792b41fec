"""Training rows for LambdaMART: lists of (query, product) pairs with grades and features.

Two kinds of list (``shoprank train ltr --lists``): ``served`` (the default) takes
each training query's first-stage top-K as the engine serves it, so the rank and
text features mean the same in training and serving; ``judged`` takes the judged
products (plus mined negatives) ranked among themselves.

Store features are joined point-in-time with Feast's
``get_historical_features``: each row sees the feature values as of its own
timestamp. Three Feast behaviours are handled here: it may drop entity rows that
have no feature row at or before their timestamp, it keeps one row per feature
view key and timestamp (the same product in two lists as of one moment), and it
does not keep row order. Each distinct row is therefore asked once, at a
timestamp no other row shares, with a row id; the result is merged back onto the
input by it, so every input row comes back, in order, with NaN where Feast had
nothing.

Judged lists hold only products an earlier engine showed, so a model trained
on them alone never sees the typical unjudged first-stage candidate and may
promote it at serving time (measured: `benchmarks/replay_profiles.py`).
Unjudged candidates therefore stay in the lists with grade 0, the grade of a
judged "irrelevant" product: with served lists every one of them by default
(``shoprank train ltr --negatives all``; ``--negatives N`` keeps a seeded
sample of N), with judged lists N mined from the first-stage top 30 (never a
duplicate title of a judged product). Unjudged is not proof of irrelevance;
benchmarks/RESULTS.md reports the effect of each choice on the judged metrics
and on simulated shoppers.

Judged data has no shoppers: each query is given a simulated user of the store
world (seeded), at the world's "now"; personalization features are then noise
for judged labels, and their gain is measured on simulated purchases instead
(the learning loop, ``benchmarks/learning_loop.py``).
"""

from __future__ import annotations

import logging
import random
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from core.feature_store import FeatureBatch
from core.query import Query
from ranking.cascade import Cascade
from ranking.features import LtrFeaturizer
from ranking.lambdamart import RankingData
from ranking.training.data import Group
from retrieval.types import Candidates

if TYPE_CHECKING:
    from feast import FeatureStore

logger = logging.getLogger(__name__)
ROW = "_shoprank_row"


def historical_features(store: FeatureStore, service: str, entities: pd.DataFrame) -> pd.DataFrame:
    """Point-in-time features for ``entities`` (product_id, user_id, event_timestamp), same rows, same order.

    Feast's offline join keeps one row per feature view key and timestamp: two entity rows with
    the same product at the same moment (one product in two queries' training lists, all as of
    the world's "now") would come back as one, and the other row without any feature. So each
    distinct (product, user, timestamp) is asked once, rows sharing a timestamp are moved back by
    distinct nanoseconds (the n-th by n - 1: a feature written in that last instant before the
    row's time is not seen), and the answer is spread back over every row that asked."""
    keys = list(entities.columns)
    frame = entities.reset_index(drop=True)
    unique = frame.drop_duplicates(keys).reset_index(drop=True)
    unique[ROW] = np.arange(len(unique))
    asked = unique.copy()
    stamps = pd.to_datetime(asked["event_timestamp"], utc=True).astype("datetime64[ns, UTC]")
    asked["event_timestamp"] = stamps - pd.to_timedelta(asked.groupby(stamps).cumcount(), unit="ns")
    with warnings.catch_warnings():  # Feast rounds the range it logs to microseconds, and says so
        warnings.filterwarnings("ignore", message="Discarding nonzero nanoseconds")
        joined = store.get_historical_features(entity_df=asked, features=store.get_feature_service(service)).to_df()
    joined = joined.drop(columns=[c for c in keys if c in joined.columns]).drop_duplicates(ROW)
    answers = unique.merge(joined, on=ROW, how="left").drop(columns=[ROW])
    out = frame.merge(answers, on=keys, how="left")  # a left merge keeps the rows' order
    features = out.drop(columns=keys)
    lost = int(features.isna().all(axis=1).sum())
    if lost:  # most rows without any: the feature tables are stamped after the time the rows are joined at (a
        # catalog-built store beside an older simulated world): the model would learn store features as missing
        logger.log(logging.WARNING if 2 * lost > len(frame) else logging.INFO, "Feast returned no features for %d "
                   "of %d rows (kept as missing)%s", lost, len(frame), "; are the feature tables newer than the "
                   "time the rows are joined at? (`features build --from-catalog` beside an older simulated world: "
                   "train with --no-store-features)" if 2 * lost > len(frame) else "")
    return features.reset_index(drop=True)


def assign_users(groups: Sequence[Group], users: Sequence[str], seed: int) -> dict[str, str]:
    rng = random.Random(seed)
    return {g.qid: rng.choice(list(users)) for g in groups}


@dataclass(frozen=True)
class TrainingList:
    """One query's training list: the analyzed query, its candidates (in first-stage order,
    with the first stage's score and rank columns) and a grade per candidate."""

    qid: str
    query: Query
    candidates: Candidates
    labels: np.ndarray


def judged_lists(groups: Sequence[Group], first_stage: Cascade, index) -> list[TrainingList]:  # type: ignore[no-untyped-def]
    """Each query's judged products plus its mined negatives (grade 0), ranked by the first stage
    among themselves (``shoprank train ltr --lists judged``). Lists of fewer than two are skipped."""
    out = []
    for group in groups:
        products = [p for p in [*group.judged, *group.mined] if index.doc_of(p) is not None]
        if len(products) < 2:
            continue
        query = first_stage.analyze(Query(group.query))
        candidates = first_stage.first.rank(query.text, [index.doc_of(p) for p in products])
        out.append(TrainingList(group.qid, query, candidates,
                                np.array([group.judged.get(p, 0) for p in candidates.product_ids], np.int32)))
    return out


def served_lists(groups: Sequence[Group], first_stage: Cascade, index, depth: int,  # type: ignore[no-untyped-def]
                 negatives: int | None, seed: int = 13, progress: bool = True,
                 pool: int = 1000, below: bool = False) -> list[TrainingList]:
    """The lists LambdaMART will serve (``shoprank train ltr --lists served``).

    For each query: the first stage's top ``depth`` as it is served (analyzed query,
    the served BM25, dense and fused ranks), with judged grades; with ``below``, judged
    products the first stage retrieved below ``depth`` (within its top ``pool``) join the
    list too (then only judged products hold deep ranks, and a model served deeper than
    ``depth`` promotes deep rows: measured, NDCG@10 -0.22 at 500); of the unjudged products in the top
    ``depth``, ``negatives`` (seeded sample; None: all) stay with grade 0, the rest
    leave the list. Lists of fewer than two products or without a judged one are skipped.
    """
    rng = random.Random(seed)
    out = []
    for group in tqdm(groups, disable=not progress, desc="served lists", unit="q"):
        query = first_stage.analyze(Query(group.query))
        full = first_stage.run(query, max(depth, pool)).candidates
        judged = [i for i, p in enumerate(full.product_ids[: None if below else depth]) if p in group.judged]
        unjudged = [i for i in range(min(depth, len(full))) if full.product_ids[i] not in group.judged]
        if negatives is not None:
            unjudged = sorted(rng.sample(unjudged, k=min(negatives, len(unjudged))))
        rows = sorted({*judged, *unjudged})
        if len(rows) < 2 or not judged:
            continue
        candidates = full.take(np.array(rows))
        out.append(TrainingList(group.qid, query, candidates,
                                np.array([group.judged.get(p, 0) for p in candidates.product_ids], np.int32)))
    return out


def ranking_data(lists: Sequence[TrainingList], featurizer: LtrFeaturizer, store_frame: pd.DataFrame | None,
                 users: dict[str, str], progress: bool = True) -> RankingData:
    """Feature rows of every list (``store_frame``: point-in-time store features, rows in
    :func:`entity_rows` order)."""
    rows, labels, sizes, qids, products = [], [], [], [], []
    offset = 0
    for item in tqdm(lists, disable=not progress, desc="ltr features", unit="q"):
        n = len(item.candidates)
        store = None
        if store_frame is not None:
            part = store_frame.iloc[offset : offset + n]
            store = FeatureBatch(item.candidates.product_ids, {name: part[name].to_numpy(dtype=np.float32)
                                                               for name in featurizer.store_names})
        local = replace(featurizer, store=(lambda q, p, s=store: s) if store else None)
        rows.append(local(replace(item.query, user_id=users.get(item.qid)), item.candidates))
        labels.append(item.labels)
        sizes.append(n)
        qids.append(item.qid)
        products += list(item.candidates.product_ids)
        offset += n
    return RankingData(np.vstack(rows).astype(np.float32), np.concatenate(labels).astype(np.int32), sizes,
                       list(featurizer.names), qids, products)


def save_ranking_data(path: Path, data: RankingData) -> None:
    """Write ``data`` to one ``.npz`` file (``shoprank train ltr --save-data``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, features=data.features, labels=data.labels, groups=np.asarray(data.groups, np.int64),
                        names=np.asarray(data.names, dtype=str), query_ids=np.asarray(data.query_ids, dtype=str),
                        product_ids=np.asarray(data.product_ids, dtype=str))


def load_ranking_data(path: Path) -> RankingData:
    """What :func:`save_ranking_data` wrote."""
    with np.load(path, allow_pickle=False) as saved:
        return RankingData(saved["features"], saved["labels"], saved["groups"].tolist(), saved["names"].tolist(),
                           saved["query_ids"].tolist(), saved["product_ids"].tolist())


def entity_rows(lists: Sequence[TrainingList], users: dict[str, str], when: pd.Timestamp) -> pd.DataFrame:
    """One Feast entity row per listed product, in :func:`ranking_data` order."""
    records = [(p, users[item.qid], when) for item in lists for p in item.candidates.product_ids]
    return pd.DataFrame(records, columns=["product_id", "user_id", "event_timestamp"])
