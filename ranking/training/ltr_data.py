"""Training rows for LambdaMART: judged (query, product) pairs with their features.

Store features are joined point-in-time with Feast's
``get_historical_features``: each row sees the feature values as of its own
timestamp. Two Feast behaviours are handled here: it may drop entity rows that
have no feature row at or before their timestamp, and it does not keep row
order. Each row therefore carries a row id; the result is merged back onto the
input by it, so every input row comes back, in order, with NaN where Feast had
nothing.

Judged lists hold only products an earlier engine showed, so a model trained
on them alone never sees the typical unjudged first-stage candidate and may
promote it at serving time (measured: `benchmarks/replay_profiles.py`).
``shoprank train ltr --negatives N`` therefore adds N unjudged products mined
from the first-stage top 30 (never a duplicate title of a judged product) to
each list with grade 0, the grade of a judged "irrelevant" product: LambdaMART
then learns to rank them below every judged product of grade > 0. Unjudged is
not proof of irrelevance; the count is kept small and benchmarks/RESULTS.md reports the
effect on the judged metrics and on simulated shoppers.

Judged data has no shoppers: each query is given a simulated user of the store
world (seeded), at the world's "now"; personalization features are then noise
for judged labels, and their gain is measured on simulated purchases instead
(the learning loop, ``benchmarks/learning_loop.py``).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from core.feature_store import FeatureBatch
from core.query import Query
from ranking.features import LtrFeaturizer
from ranking.lambdamart import RankingData
from ranking.training.data import Group

if TYPE_CHECKING:
    from feast import FeatureStore

logger = logging.getLogger(__name__)
ROW = "_shoprank_row"


def historical_features(store: FeatureStore, service: str, entities: pd.DataFrame) -> pd.DataFrame:
    """Point-in-time features for ``entities`` (product_id, user_id, event_timestamp), same rows, same order."""
    frame = entities.reset_index(drop=True).copy()
    frame[ROW] = np.arange(len(frame))
    joined = store.get_historical_features(entity_df=frame, features=store.get_feature_service(service)).to_df()
    joined = joined.drop(columns=[c for c in entities.columns if c in joined.columns])
    out = frame[[ROW]].merge(joined.drop_duplicates(ROW), on=ROW, how="left").sort_values(ROW)
    dropped = int(out.drop(columns=[ROW]).isna().all(axis=1).sum())
    if dropped:
        logger.info("Feast returned no features for %d of %d rows (kept as missing)", dropped, len(frame))
    return out.drop(columns=[ROW]).reset_index(drop=True)


def assign_users(groups: Sequence[Group], users: Sequence[str], seed: int) -> dict[str, str]:
    rng = random.Random(seed)
    return {g.qid: rng.choice(list(users)) for g in groups}


def listed_products(group: Group, index) -> list[str]:  # type: ignore[no-untyped-def]
    """The products of a training list: judged ones, then mined negatives, those the index knows."""
    return [p for p in [*group.judged, *group.mined] if index.doc_of(p) is not None]


def ranking_data(groups: Sequence[Group], featurizer: LtrFeaturizer, index, first_stage,  # type: ignore[no-untyped-def]
                 store_frame: pd.DataFrame | None, users: dict[str, str], progress: bool = True) -> RankingData:
    """Feature rows for every listed product of ``groups``; mined negatives get grade 0.

    Lists of fewer than two products are skipped.
    """
    names = featurizer.names
    rows, labels, sizes, qids = [], [], [], []
    offset = 0
    for group in tqdm(groups, disable=not progress, desc="ltr features", unit="q"):
        products = listed_products(group, index)
        if len(products) < 2:
            offset += len(products)
            continue
        candidates = first_stage.rank(group.query, [index.doc_of(p) for p in products])
        store = None
        if store_frame is not None:
            part = store_frame.iloc[offset : offset + len(products)]
            order = [products.index(p) for p in candidates.product_ids]
            store = FeatureBatch(candidates.product_ids, {n: part[n].to_numpy(dtype=np.float32)[order]
                                                          for n in featurizer.store_names})
        local = LtrFeaturizer(featurizer.index, featurizer.embed, (lambda q, p, s=store: s) if store else None,
                              featurizer.store_names, featurizer.student, featurizer.teacher)
        rows.append(local(Query(group.query, users.get(group.qid)), candidates))
        labels.append([group.judged.get(p, 0) for p in candidates.product_ids])
        sizes.append(len(products))
        qids.append(group.qid)
        offset += len(products)
    return RankingData(np.vstack(rows).astype(np.float32), np.concatenate(labels).astype(np.int32), sizes, names, qids)


def entity_rows(groups: Sequence[Group], index, users: dict[str, str], when: pd.Timestamp) -> pd.DataFrame:  # type: ignore[no-untyped-def]
    """One entity row per listed product (see :func:`listed_products`), in ``ranking_data`` order."""
    records = [(p, users[g.qid], when) for g in groups for p in listed_products(g, index)]
    return pd.DataFrame(records, columns=["product_id", "user_id", "event_timestamp"])
