"""LambdaMART final ranker (Burges 2010) on LightGBM's ``lambdarank`` objective.

Features of a (query, user, product) row, in :data:`BASE_FEATURES` order, then
the feature service's store features:

- first stage: exact BM25 score and bi-encoder cosine of the product for the
  query (computed for every candidate, so training and serving agree);
- cross-encoders: student and teacher scores (NaN where a stage was skipped);
- store (Feast ``ranker_v1``): price, stock, promotion, popularity and CTR,
  personalization (user-category affinity, price relative to the user's usual).

Gains are linear in the grade (``label_gain = [0, 1, ..., max]``) to match the
harness's NDCG (``gains="exponential"``: 2^g - 1). Early stopping watches dev NDCG@10. Per-result explanations
are LightGBM's SHAP-style contributions (``pred_contrib=True``).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from distributed import Client

logger = logging.getLogger(__name__)

BASE_FEATURES = ("bm25", "dense", "student", "teacher")
MODEL_FILE = "model.txt"
META_FILE = "ltr.json"


@dataclass
class LambdaMARTConfig:
    learning_rate: float = 0.05
    num_leaves: int = 31
    min_data_in_leaf: int = 40
    feature_fraction: float = 0.9
    bagging_fraction: float = 0.8
    bagging_freq: int = 1
    lambda_l2: float = 1.0
    max_rounds: int = 1000
    early_stopping: int = 50
    truncation_level: int = 20
    seed: int = 13
    max_grade: int = 8
    # gain of a grade in the lambdarank objective: "linear" (g, as the harness's NDCG counts it),
    # "exponential" (2^g - 1: the top grades count for more, as MRR of the best products does)
    gains: str = "linear"
    # LightGBM's ranking objective: "lambdarank" (pairwise lambdas, gains per ``gains``, truncated at
    # ``truncation_level``) or "rank_xendcg" (XE-NDCG, Bruch 2019: a listwise cross entropy whose gains
    # are 2^grade, less sensitive to noisy grades; ``gains`` and ``truncation_level`` do not apply)
    objective: str = "lambdarank"
    threads: int = 2
    # features whose score may only raise the rank (LightGBM monotone constraints); relevance
    # scores belong here when training lists hold mined negatives that look relevant to the query
    monotone: tuple[str, ...] = ()


def training_config(names: list[str], max_grade: int, depth: int, monotone: bool = True,
                    **settings: object) -> LambdaMARTConfig:
    """The configuration ``shoprank train ltr`` trains rows of features ``names`` with, from lists ``depth``
    deep: the base scores present monotone (unless ``monotone`` is False), the objective truncated at the
    list depth unless ``settings`` name a ``truncation_level``; ``settings``: other LambdaMARTConfig fields."""
    settings.setdefault("truncation_level", depth)
    return LambdaMARTConfig(max_grade=max_grade, monotone=tuple(n for n in BASE_FEATURES if n in names) if monotone
                            else (), **settings)  # type: ignore[arg-type]


@dataclass
class RankingData:
    """Rows grouped by query (rows of one query are contiguous)."""

    features: np.ndarray
    labels: np.ndarray
    groups: list[int]
    names: list[str]
    query_ids: list[str] = field(default_factory=list)
    product_ids: list[str] = field(default_factory=list)  # one per row, when known

    @classmethod
    def concat(cls, parts: Sequence[RankingData]) -> RankingData:
        """The rows of ``parts``, one after the other (the same feature names)."""
        names = parts[0].names
        if any(part.names != names for part in parts):
            raise ValueError("rows with other feature names cannot be joined")
        return cls(np.vstack([p.features for p in parts]), np.concatenate([p.labels for p in parts]),
                   [g for p in parts for g in p.groups], list(names), [q for p in parts for q in p.query_ids],
                   [r for p in parts for r in p.product_ids])

    def lists(self) -> Iterator[tuple[str, slice]]:
        """Each query's id and the slice of its rows, in row order."""
        start = 0
        for qid, size in zip(self.query_ids, self.groups):
            yield qid, slice(start, start + size)
            start += size


@dataclass
class LambdaMART:
    booster: object
    names: list[str]
    config: LambdaMARTConfig
    history: dict[str, object] = field(default_factory=dict)
    parent: LambdaMART | None = None  # warm start: scores = parent's + this booster's

    @classmethod
    def fit(cls, train: RankingData, dev: RankingData, config: LambdaMARTConfig = LambdaMARTConfig(),
            client: Client | None = None) -> LambdaMART:
        """Train with early stopping on dev NDCG@10.

        Args:
            client: A ``distributed.Client``: train on its workers with ``lightgbm.dask``
                (same parameters; early stopping applied to the dev curve after training,
                see :mod:`ranking.dask_lambdamart`). None: in this process.
        """
        import lightgbm as lgb

        params = _params(config, train.names)
        if client is not None:
            from ranking.dask_lambdamart import train_on_dask

            booster, history = train_on_dask(client, train, dev, params, config.max_rounds, config.early_stopping)
            return cls(booster, list(train.names), config, history)
        train_set = lgb.Dataset(train.features, train.labels, group=train.groups, feature_name=train.names)
        dev_set = lgb.Dataset(dev.features, dev.labels, group=dev.groups, feature_name=dev.names, reference=train_set)
        record: dict[str, dict[str, list[float]]] = {}
        booster = lgb.train(params, train_set, num_boost_round=config.max_rounds, valid_sets=[dev_set],
                            valid_names=["dev"], callbacks=[lgb.early_stopping(config.early_stopping, verbose=False),
                                                            lgb.record_evaluation(record)])
        curve = record["dev"]["ndcg@10"]
        history = {"best_iteration": booster.best_iteration, "dev_ndcg@10": round(float(max(curve)), 4),
                   "rounds": len(curve)}
        logger.info("LambdaMART: %s", history)
        return cls(booster, list(train.names), config, history)

    @classmethod
    def fit_unbiased(cls, train: RankingData, valid: RankingData, train_ips: np.ndarray, valid_ips: np.ndarray,
                     config: LambdaMARTConfig = LambdaMARTConfig(), parent: LambdaMART | None = None) -> LambdaMART:
        """Train on logged engagement (labels 0..3) with IPS-weighted lambdas
        (:mod:`ranking.unbiased`); early stopping on the validation IPS-DCG@10.

        With ``parent``, boosting starts from the parent's scores (LightGBM
        ``init_score``) and the new trees only correct them: what the parent
        learnt from judged data is kept, the logs add what shoppers show (taste,
        price, popularity). Without it, a model trained only on the ten shown
        products of each search mis-ranks the other candidates. ``config.monotone``
        binds the new trees as it binds :meth:`fit`'s (pass the parent's, so the sum
        keeps its guarantee).
        """
        import lightgbm as lgb

        from ranking.unbiased import ips_dcg, ips_lambdarank_objective

        params = {
            "objective": ips_lambdarank_objective(train.groups, train.labels, train_ips),
            "learning_rate": config.learning_rate, "num_leaves": config.num_leaves,
            "min_data_in_leaf": config.min_data_in_leaf, "feature_fraction": config.feature_fraction,
            "bagging_fraction": config.bagging_fraction, "bagging_freq": config.bagging_freq,
            "lambda_l2": config.lambda_l2, "seed": config.seed, "num_threads": config.threads, "verbose": -1,
            "deterministic": True,
        } | _monotone(config, train.names)
        init_train = parent.predict(train.features) if parent else None
        init_valid = parent.predict(valid.features) if parent else None
        train_set = lgb.Dataset(train.features, train.labels, group=train.groups, feature_name=train.names,
                                init_score=init_train)
        valid_set = lgb.Dataset(valid.features, valid.labels, group=valid.groups, feature_name=valid.names,
                                reference=train_set, init_score=init_valid)

        def metric(preds: np.ndarray, data: object) -> tuple[str, float, bool]:
            return "ips_dcg@10", ips_dcg(valid.groups, valid.labels, valid_ips, preds), True

        record: dict[str, dict[str, list[float]]] = {}
        booster = lgb.train(params, train_set, num_boost_round=config.max_rounds, valid_sets=[valid_set],
                            valid_names=["valid"], feval=metric,
                            callbacks=[lgb.early_stopping(config.early_stopping, verbose=False),
                                       lgb.record_evaluation(record)])
        curve = record["valid"]["ips_dcg@10"]
        history = {"best_iteration": booster.best_iteration, "valid_ips_dcg@10": round(float(max(curve)), 4),
                   "rounds": len(curve), "objective": "ips-lambdarank", "warm_start": parent is not None}
        return cls(booster, list(train.names), config, history, parent=parent)

    def predict(self, features: np.ndarray) -> np.ndarray:
        # one thread: a request's few hundred rows score faster than threads start (and serving has its own)
        scores = self.booster.predict(features, num_iteration=self.booster.best_iteration,  # type: ignore[attr-defined]
                                      num_threads=1)
        if self.parent is not None:
            scores = scores + self.parent.predict(features)
        return np.asarray(scores, dtype=np.float32)

    def explain(self, features: np.ndarray) -> np.ndarray:
        """Per-row contribution of each feature (last column: the bias), parent included."""
        contributions = self.booster.predict(features, num_iteration=self.booster.best_iteration, pred_contrib=True)  # type: ignore[attr-defined]
        if self.parent is not None:
            contributions = contributions + self.parent.explain(features)
        return contributions

    def reads(self, name: str) -> bool:
        """Whether any tree (this model's or its parent's) splits on feature ``name``: a feature the
        model was given but never learnt from (all missing in training, such as a cross-encoder score
        before a cross-encoder was trained) changes no score, so serving need not compute it."""
        if name in self.names:
            splits = self.booster.feature_importance(importance_type="split")  # type: ignore[attr-defined]
            if splits[self.names.index(name)] > 0:
                return True
        return self.parent is not None and self.parent.reads(name)

    def importance(self) -> dict[str, float]:
        gains = self.booster.feature_importance(importance_type="gain")  # type: ignore[attr-defined]
        total = float(gains.sum()) or 1.0
        return {n: round(float(g) / total, 4) for n, g in sorted(zip(self.names, gains), key=lambda x: -x[1])}

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.booster.save_model(str(folder / MODEL_FILE), num_iteration=self.booster.best_iteration)  # type: ignore[attr-defined]
        meta = {"names": self.names, "config": asdict(self.config), "history": self.history,
                "importance": self.importance(), "parent": "parent" if self.parent else None}
        (folder / META_FILE).write_text(json.dumps(meta, indent=2))
        if self.parent is not None:
            self.parent.save(folder / "parent")  # self-contained: the folder serves without the registry

    @classmethod
    def load(cls, folder: Path) -> LambdaMART:
        import lightgbm as lgb

        meta = json.loads((folder / META_FILE).read_text())
        booster = lgb.Booster(model_file=str(folder / MODEL_FILE))
        parent = cls.load(folder / meta["parent"]) if meta.get("parent") else None
        return cls(booster, meta["names"], LambdaMARTConfig(**meta["config"]), meta["history"], parent)


GAINS = ("linear", "exponential")
OBJECTIVES = ("lambdarank", "rank_xendcg")
# LambdaMARTConfig fields a caller may set by name (shoprank train ltr --param, benchmarks/ltr_search.py)
TUNABLE = {"learning_rate": float, "num_leaves": int, "min_data_in_leaf": int, "feature_fraction": float,
           "bagging_fraction": float, "bagging_freq": int, "lambda_l2": float, "max_rounds": int,
           "early_stopping": int}


RANGES = {"feature_fraction": (0.0, 1.0), "bagging_fraction": (0.0, 1.0), "num_leaves": (2, 131_072),
          "learning_rate": (0.0, 10.0)}  # what LightGBM can use (beyond: an error deep in training, or infinities)


def parse_tunable(text: str) -> tuple[str, float | int]:
    """``"num_leaves=63"`` -> ("num_leaves", 63); ValueError naming the bad part and what is allowed."""
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or key not in TUNABLE:
        raise ValueError(f"{text!r} is not NAME=VALUE with NAME one of {', '.join(TUNABLE)}")
    try:
        number = TUNABLE[key](value.strip())
    except ValueError:
        raise ValueError(f"{text!r}: {key} takes a {TUNABLE[key].__name__}, not {value.strip()!r}") from None
    low, high = RANGES.get(key, (0.0, math.inf))
    zero_allowed = key in ("lambda_l2", "bagging_freq")  # no L2 penalty; no bagging
    if not math.isfinite(number) or number < low or number > high or (number == 0 and not zero_allowed):
        allowed = f"a finite number {'>= 0' if zero_allowed else '> 0'}" if high == math.inf else f"in ({low}, {high}]"
        if key == "num_leaves":
            allowed = "a whole number from 2 to 131072"
        raise ValueError(f"{text!r}: {key} must be {allowed}")
    return key, number


def label_gain(config: LambdaMARTConfig) -> list[float]:
    """The gain of each grade 0..max_grade under ``config.gains``."""
    if config.gains not in GAINS:
        raise ValueError(f"gains {config.gains!r} is not one of {', '.join(GAINS)}")
    grades = range(config.max_grade + 1)
    return [float(g) if config.gains == "linear" else float(2 ** g - 1) for g in grades]


def _params(config: LambdaMARTConfig, names: list[str]) -> dict[str, object]:
    """LightGBM parameters of :meth:`LambdaMART.fit` (``config.objective``, gains per ``config.gains``, dev NDCG@10)."""
    if config.objective not in OBJECTIVES:
        raise ValueError(f"objective {config.objective!r} is not one of {', '.join(OBJECTIVES)}")
    params: dict[str, object] = {
        "objective": config.objective, "metric": "ndcg", "ndcg_eval_at": [10],
        "label_gain": label_gain(config), "learning_rate": config.learning_rate,
        "num_leaves": config.num_leaves, "min_data_in_leaf": config.min_data_in_leaf,
        "feature_fraction": config.feature_fraction, "bagging_fraction": config.bagging_fraction,
        "bagging_freq": config.bagging_freq, "lambda_l2": config.lambda_l2,
        "lambdarank_truncation_level": config.truncation_level, "seed": config.seed,
        "num_threads": config.threads, "verbose": -1, "deterministic": True,
    }
    return params | _monotone(config, names)


def _monotone(config: LambdaMARTConfig, names: list[str]) -> dict[str, object]:
    """LightGBM's ``monotone_constraints`` for ``config.monotone`` over features ``names`` (none: {})."""
    unknown = sorted(set(config.monotone) - set(names))
    if unknown:
        raise ValueError(f"monotone features {unknown} are not features of this model ({names})")
    if not config.monotone:
        return {}
    return {"monotone_constraints": [int(name in config.monotone) for name in names]}
