"""The artifact home's layout: the one place that names folders under it.

Everything ShopRank builds or records goes under ``settings.home`` (git-ignored,
``artifacts/`` by default)::

    <home>/
      indexes/<name>/<encoder fingerprint>/   product indexes (one per encoder version)
      indexes/eval-<catalog hash>-<products hash>/<fp>/
                                              indexes of evaluation datasets (their text; every column)
      cache/embeddings/<fp>.sqlite            product vectors, so nothing is encoded twice
      cache/onnx/                             the bi-encoder exported to ONNX
      scores/cross_encoder.sqlite             the local cross-encoder score store (serving.score_store)
      models/<role>/vN/                       the model registry (see core.registry)
      features/                               Feast: offline Parquet, registry, sqlite online store
      world/                                  the SIMULATED store world behind the features
      demo/                                   the generated demo store (served when no catalog is set)
      event_spool/                            the API's durable event spool (shipped to Kafka)
      event_log/                              the offline event log (Parquet, written by the log sink)
      experiments/current.json                the running experiment and shadow
      suggest/searches.json                   searched texts for query suggestions (shoprank suggestions)
      recommend/together.json                 products acted on together (shoprank recommendations)
      rules/rules.yaml                        business rules: pins, hides, redirects (PUT /v1/admin/rules)
      rules/synonyms.txt                      synonyms when retrieval.synonyms names no file (PUT /v1/admin/synonyms)
      privacy/forgotten.jsonl                 shoppers erased, hashed, and when (shoprank events forget)
      shadow/<version>.jsonl                  shadow-scoring records (and .lock: appends share it, forget and prune not)
      streaming/state.sqlite                  the streaming feature consumer's state
      dead_letters/<consumer>.jsonl           events a consumer could not read (and .lock, as shadow records')
      training/<run>/                         work folders of training runs
      work/encode/<run>/                      vector shards of a catalog encoded on Dask (removed when done)
      keys.json                               API keys (hashed; shoprank keys create|list|revoke)
      reports/                                reports written by benchmarks and jobs
      logs/                                   logs of processes a benchmark starts
      stores/<name>/                          another store's own indexes, models, features, world,
                                              demo, events, experiments, shadow and scores (the same
                                              layout as above); caches, keys, reports and logs are shared
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from core.errors import InvalidInput

INDEX_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,63}\Z")  # a folder of indexes/: no '..', no '/'
EVAL_INDEX = re.compile(r"eval-[0-9a-f]{16}-[0-9a-f]{16}\Z")  # the folder of an evaluation dataset's indexes


def rebuild_advice(index: Path) -> str:
    """How the index folder ``index`` is built again, read from where the layout puts it: an evaluation
    dataset's (``indexes/eval-<hashes>/<fp>``) when its dataset is next opened; any other with ``shoprank
    [--store <store>] index --name <name>`` (``[stores/<store>/]indexes/<name>/<fp>``; a home whose own folder
    sits in one named ``stores`` reads as a store's). A folder laid out otherwise names no store or index: the
    command that built it is asked for."""
    name, indexes = index.parent.name, index.parent.parent
    if indexes.name != "indexes" or not INDEX_NAME.match(name):
        return ("rebuild it with the command that built it (`shoprank [--store NAME] index [--name NAME] --catalog "
                "FILE`)")
    if EVAL_INDEX.match(name):
        return "an evaluation dataset's index is built again when its dataset is opened"
    store = f"--store {indexes.parent.name} " if indexes.parent.parent.name == "stores" else ""
    return f"rebuild it with `shoprank {store}index --name {name} --catalog FILE`"


@dataclass(frozen=True)
class Home:
    """Paths under one artifact home; nothing else joins path strings under it.

    With ``store``, the paths of one store's own data (index, models, features,
    events, experiments) are under ``stores/<store>/``; the caches, keys, reports
    and logs stay shared at the root. Without, the home is the default store.
    """

    root: Path
    store: str | None = None

    @property
    def base(self) -> Path:
        """Where this store's own data lives: ``stores/<store>/``, or the root for the default store."""
        return self.root / "stores" / self.store if self.store else self.root

    @property
    def stores(self) -> Path:
        """``stores/``: one folder per store beside the default one (``shoprank --store NAME ...``)."""
        return self.root / "stores"

    @property
    def indexes(self) -> Path:
        return self.base / "indexes"

    def index(self, name: str, encoder_fingerprint: str) -> Path:
        """``indexes/<name>/<encoder fingerprint>``: re-indexing with a new bi-encoder
        leaves the old index usable."""
        if not INDEX_NAME.match(name):
            raise InvalidInput(f"index name {name!r} is not allowed: 1-64 letters, digits, '_', '-' or '.', not "
                               "starting with '.'")
        return self.indexes / name / encoder_fingerprint

    def eval_index(self, catalog_hash: str, products_hash: str, encoder_fingerprint: str) -> Path:
        """The index of an evaluation dataset, keyed by its catalog hash (the text it encodes), its products
        hash (every column: datasets of the same text but other prices or stock never share a folder) and
        encoder."""
        return (self.root / "indexes" / f"eval-{catalog_hash[:16]}-{products_hash[:16]}"  # shared by stores
                / encoder_fingerprint)

    @property
    def cache(self) -> Path:
        return self.root / "cache"

    def embeddings(self, encoder_fingerprint: str) -> Path:
        return self.cache / "embeddings" / f"{encoder_fingerprint}.sqlite"

    @property
    def score_store(self) -> Path:
        """The local cross-encoder score store; not under ``cache/``, which tests share between homes
        whose registries reuse version names for other weights."""
        return self.base / "scores" / "cross_encoder.sqlite"

    @property
    def models(self) -> Path:
        return self.base / "models"

    @property
    def features(self) -> Path:
        return (self.base / "features").resolve()

    @property
    def world(self) -> Path:
        return self.base / "world"

    @property
    def demo(self) -> Path:
        return self.base / "demo"

    @property
    def event_spool(self) -> Path:
        return self.base / "event_spool"

    @property
    def event_log(self) -> Path:
        return self.base / "event_log"

    @property
    def experiment_config(self) -> Path:
        return self.base / "experiments" / "current.json"

    @property
    def suggestions(self) -> Path:
        return self.base / "suggest" / "searches.json"

    @property
    def recommendations(self) -> Path:
        return self.base / "recommend" / "together.json"

    @property
    def rules(self) -> Path:
        return self.base / "rules" / "rules.yaml"

    @property
    def synonyms(self) -> Path:
        return self.base / "rules" / "synonyms.txt"

    @property
    def forgotten(self) -> Path:
        return self.base / "privacy" / "forgotten.jsonl"

    @property
    def shadow(self) -> Path:
        return self.base / "shadow"

    @property
    def streaming_state(self) -> Path:
        return self.base / "streaming" / "state.sqlite"

    def dead_letters(self, consumer: str) -> Path:
        return self.base / "dead_letters" / f"{consumer}.jsonl"

    def training(self, run: str) -> Path:
        return self.base / "training" / run

    def encoding(self, run: str) -> Path:
        """``work/encode/<run>``: the ``.npy`` shards Dask workers write (retrieval.dask_encoding)."""
        return self.root / "work" / "encode" / run

    @property
    def retrain_lock(self) -> Path:
        return self.base / "retrain.lock"

    @property
    def reports(self) -> Path:
        return self.root / "reports"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def keys(self) -> Path:
        return self.root / "keys.json"
