"""Typed settings for the ShopRank deployables (api, indexer, evaluator): the stages' sections
(``retrieval``, ``ranking``, ``features``) here, the running service's in :mod:`core.service_settings`.

Values come, in rising priority, from defaults, an optional YAML file (path in
``SHOPRANK_CONFIG``; unknown keys are an error so a typo fails loudly) and
environment variables ``SHOPRANK_<FIELD>`` with ``__`` for nesting, e.g.
``SHOPRANK_RETRIEVAL__RRF_K=30``; a list or dict setting takes JSON. A ``SHOPRANK_*``
variable that names no setting is ignored (:func:`unknown_variables`; the command line warns of it). Get them
through :func:`get_settings`; a bad value is named as its variable or config file key
(:mod:`core.settings_errors`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict
from pydantic_settings.exceptions import SettingsError

from core import settings_errors
from core.errors import InvalidInput
from core.hardware import cores_per_process
from core.paths import Home
from core.service_settings import ApiSettings, ComputeSettings, EventSettings, ServingSettings


class RetrievalSettings(BaseModel):
    """First-stage retrieval: BM25 + dense (FAISS) fused by reciprocal rank fusion."""

    model_config = ConfigDict(extra="forbid")

    dense_index: Literal["auto", "flat", "hnsw", "ivfpq"] = Field(
        "auto", description="auto: exact (flat) up to flat_max_products, HNSW above."
    )
    flat_max_products: int = Field(200_000, ge=1, description="Largest catalog served by exact search when dense_index is auto.")
    flat_scan: Literal["f32", "fp16"] = Field("fp16", description="Exact (flat) search: scan a half-precision "
                                              "copy (half the bytes read) whose top flat_refine x k are re-scored "
                                              "from the float32 vectors (same results, measured 1.2-2.3x faster), "
                                              "or the float32 vectors themselves.")
    flat_refine: float = Field(1.25, ge=1, le=8, description="fp16 scan: candidates re-scored exactly, as a "
                               "multiple of k.")
    hnsw_m: int = Field(32, ge=4, le=128, description="HNSW links per node (memory vs recall).")
    hnsw_ef_construction: int = Field(128, ge=8, description="HNSW candidate list while building.")
    hnsw_ef_search: int = Field(128, ge=8, description="HNSW candidate list per query (recall vs latency).")
    ivf_nlist: int | None = Field(None, ge=1, description="None: 4*sqrt(n) rounded")
    ivf_nprobe: int = Field(64, ge=1, description="IVF lists searched per query.")
    pq_m: int = Field(48, ge=1, description="PQ sub-quantizers; must divide the dimension")
    ivfpq_refine: int = Field(4, ge=1, le=32, description="Re-score refine*k IVF-PQ hits exactly.")
    compact_ratio: float = Field(
        0.2, gt=0, le=1, description="Rebuild the ANN index when this share is deleted."
    )
    spelling: bool = Field(True, description="Correct query words the catalog does not contain (spelling, "
                           "run-together words); a request can turn it off with rewrite=false.")
    keep_english_words: bool = Field(False, description="Never correct or split a query word found in "
                                     "symspellpy's English word list, although the catalog lacks it (negative is "
                                     "not a typo of native); off: only catalog words are kept.")
    synonyms: str | None = Field(None, description="A synonyms file (Solr format: 'fridge, refrigerator' equivalent "
                                 "words, 'aspiradora => vacuum' one way) the query analyzer applies before spelling "
                                 "correction; a relative path is read from each store's folder (the home for the "
                                 "default store). Read again after an edit (serving.reload_poll_s). None: the store's "
                                 "rules/synonyms.txt when it exists (PUT /v1/admin/synonyms writes it).")
    rrf_k: int = Field(60, ge=1, description="RRF constant k (Cormack et al. 2009).")
    feedback_docs: int = Field(0, ge=0, le=100, description="Dense pseudo-relevance feedback: the query vector moves "
                               "towards the mean of the fused top N and searches again (0: off; one more vector "
                               "search per query; retrain LambdaMART after changing it).")
    feedback_weight: float = Field(0.3, gt=0, le=2, description="Weight of the feedback documents' mean vector.")
    second_encoder: str | None = Field(None, min_length=1, description="A second bi-encoder in the dense search "
                                       "('minilm', 'biencoder:vN' or a model folder, as encoder): each product's "
                                       "vector holds both models' side by side, one index, and a query scores "
                                       "cosine + second_encoder_weight x the second model's cosine. Costs the "
                                       "second model's query encoding and its share of the index; a new model "
                                       "builds a new index. None: the encoder alone.")
    second_encoder_weight: float = Field(1.0, gt=0, le=4, description="Weight of the second bi-encoder's cosine in "
                                         "the dense score (queries only: no new index; retrain LambdaMART after "
                                         "changing it). Measured: 0.5 to 1 for a second model fine-tuned as the "
                                         "first, 0.3 for one used as it comes.")
    depth: int = Field(1000, ge=1, le=10_000, description="Results taken from each source and fused by RRF. A "
                       "first stage read deeper (ranking.first_stage_depth above it, a page past it, rows the rules "
                       "hide) lists the rows only deeper runs find below the fused list (fused rank 0), reading "
                       "depth x 2, x 4, ... deep: below ranking.first_stage_depth it changes what is served.")
    query_encoder: Literal["onnx", "torch"] = Field(
        "onnx", description="Backend for query embeddings (ONNX measured faster)."
    )
    encode_batch_size: int = Field(32, ge=1, description="Catalog encoding batch (32 measured fastest).")
    catalog_precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto", description="What the bi-encoder computes in when it encodes a catalog for an index build: "
        "bf16 runs it on the OpenVINO execution provider (as ranking.precision bf16 does the cross-encoders; "
        "on a 2-core Xeon with AMX the Home Depot index built in 53 against 163 s, with the same first-stage "
        "quality on dev). auto: bf16 where the CPU has AMX bf16 tiles and the plugin is installed, else fp32; Dask "
        "workers (compute.scheduler) decide auto on their own CPU. Queries are encoded in fp32 whatever "
        "this says.")
    bm25_threads: int = Field(4, ge=1, le=64, description="Threads running BM25 beside the dense search.")


class RankingSettings(BaseModel):
    """Re-ranking cascade: first stage (first_stage_depth) -> student (student_depth) -> teacher (teacher_depth)."""

    model_config = ConfigDict(extra="forbid")

    first_stage_depth: int = Field(1000, ge=1, le=10_000, description="Candidates taken from the first stage "
                                   "into the cascade.")
    # Defaults measured on a 2-core AVX2 CPU (benchmarks/RESULTS.md, "Tiered cascade depths"): the teacher on
    # the top 20 beats student(100) -> teacher(20) in quality and costs half the time.
    student_depth: int = Field(0, ge=0, le=10_000, description="Candidates the student stage scores (0: skip).")
    teacher_depth: int = Field(20, ge=0, le=1000, description="Candidates the teacher scores (0: skip).")
    # Fitted on the Home Depot dev split against a 50-deep teacher (benchmarks/adaptive_depth.py, RESULTS.md
    # "Query-adaptive teacher depth"): 13 pairs a search instead of 20 at NDCG@10 -0.0004 [-0.0011, 0.0003].
    teacher_depth_confident: int = Field(5, ge=0, le=1000, description="Query-adaptive depth: the teacher scores "
                                         "only this many candidates when the first stage is confident (BM25 and "
                                         "dense agree on confident_agreement of the fused top 10); 0: always "
                                         "teacher_depth.")
    # Fitted the same way for a 2-layer student served in the teacher's place (benchmarks/adaptive_depth.py
    # --stage student, RESULTS.md "Query-adaptive student depth"): 13.2 pairs a search instead of 20 at NDCG@10
    # -0.0005 [-0.0019, 0.0007] against a 50-deep student (depth 20: -0.0006).
    student_depth_confident: int = Field(5, ge=0, le=10_000, description="Query-adaptive depth of the student: "
                                         "it scores only this many candidates when the first stage is confident "
                                         "(as teacher_depth_confident); 0: always student_depth.")
    confident_agreement: float = Field(0.5, ge=0, le=1, description="Share of the fused top 10 that BM25 and the "
                                       "dense search must both rank in their own top 10 for the first stage to "
                                       "count as confident (teacher_depth_confident).")
    rerank_depth: int = Field(100, ge=1, le=1000, description="Candidates the `rerank` pipeline scores.")
    # LambdaMART's features are cheap (cross-encoder scores only where those stages ran): reordering the top
    # 200 lifts relevant products from below the top 20 (benchmarks/RESULTS.md, "LambdaMART depth").
    ltr_depth: int = Field(200, ge=0, le=1000, description="Candidates LambdaMART re-ranks (0: skip); rows "
                           "below the cross-encoders' depths have no cross-encoder score (missing).")
    ltr: str = Field("active", description="LambdaMART version: 'active', 'vN' or 'none'.")
    rules_file: Path | None = Field(None, description="YAML business rules (ranking/rules.py), read again when it "
                                    "changes; a relative path is in the store's folder. null: <store>/rules/rules.yaml "
                                    "when it exists, which PUT /v1/admin/rules writes and `artifacts push` shares.")
    query_cache_size: int = Field(10_000, ge=0, description="Query vectors kept in memory (LRU).")
    reranker: str = Field("active", description="Teacher version: 'active', 'vN' or 'none'.")
    student: str = Field("active", description="Student version: 'active', 'vN' or 'none'.")
    precision: Literal["auto", "int8", "fp32", "bf16"] = Field("auto", description="How the cross-encoders "
                                                               "compute: int8 or fp32 on ONNX Runtime's CPU kernels, "
                                                               "or bf16 (the fp32 model on the OpenVINO execution "
                                                               "provider, package onnxruntime-ep-openvino). auto: "
                                                               "bf16 on a CPU with AMX when that package is installed, "
                                                               "else int8 where the CPU has int8 kernels (AMX, AVX-512 "
                                                               "VNNI, AVX2), fp32 elsewhere (/healthz says which).")
    max_length: int = Field(40, ge=8, le=512, description="Token cap of a (query, title) pair (a cross-encoder "
                            "trained at a shorter --max-length is served at that).")
    batch_size: int = Field(32, ge=1, le=1024, description="Pairs per ONNX Runtime call of a cross-encoder.")
    threads: int = Field(0, ge=0, le=64, description="ONNX Runtime threads of each served model (the "
                         "cross-encoders and the query encoder) in one server process. 0: the usable cores "
                         "divided among the server processes (api.workers), at least one.")

    def threads_per_process(self, processes: int) -> int:
        """ONNX Runtime threads a model gets in one of ``processes`` server processes."""
        return self.threads or cores_per_process(processes)


class FeatureSettings(BaseModel):
    """Feature store (Feast repo in feature_repo/): online store and feature service."""

    model_config = ConfigDict(extra="forbid")

    online_store: Literal["sqlite", "redis"] = Field("sqlite", description="Feast online store.")
    redis_url: str = Field("127.0.0.1:6379", description="Redis connection string (host:port[,db=N]).")
    service: str = Field("ranker_v1", description="Feast FeatureService the ranker reads.")
    facts: dict[Literal["category", "brand", "price", "in_stock", "promoted", "popularity"], str] = Field(
        {"category": "product_attributes:category", "brand": "product_attributes:brand",
         "price": "product_attributes:price", "in_stock": "inventory:in_stock", "promoted": "promotions:promoted",
         "popularity": "popularity:purchases_30d"},
        description="Where filters and business rules read each product fact in the feature store "
        "(view:feature); a fact the store lacks is read from the catalog's column of that name.")
    changes_poll_s: float = Field(1.0, ge=0, le=3600, description="How often a server looks at the live product "
                                  "updates' change feed (POST /v1/admin/products) and reads the changed products "
                                  "again; 0: never (they are read again after product_ttl_s).")
    recent_items: str = Field("user_profile:recent_items", pattern=r"^[A-Za-z0-9_]+:[A-Za-z0-9_]+$",
                              description="Where /v1/recommend's for_you reads a shopper's recent products "
                              "(view:feature, a list of product ids per user).")
    read_timeout_ms: float = Field(250.0, gt=0, le=60_000, description="Longest wait of a search for its online "
                                   "store reads (every view's, read at once; the search's deadline when sooner); a "
                                   "late or failed read serves the search without store features (degraded). Batch "
                                   "jobs (evaluate, train, retrain) always wait.")
    retry_after_s: float = Field(2.0, ge=0, le=600, description="After a late or failed read, searches skip the "
                                 "online store this long before the next try.")
    # Every product row a search touches is re-read once older than this, in the background: at 30 s the
    # re-reads of a busy server's candidates took ~12% of its profile samples; at 300 s the head-heavy stream's
    # open-loop p95 at 50 searches/s fell from 611-678 to 352-365 ms in two pairs of runs (closed-loop
    # throughput: within noise). benchmarks/RESULTS.md, "The full pipeline under two query streams".
    # Read through Feast at start, the 54,667 Home Depot products' rows took 9 s on an idle 2-core EPYC; a load
    # run that started at readiness had store reads timing out a minute later (searches reading unread rows
    # themselves, served without store features; benchmarks/RESULTS.md, "The same benchmark on a CPU without AMX").
    warm_wait_s: float = Field(120.0, ge=0, le=3600, description="A server reads every product's store features "
                               "into memory when it loads (and after a hot swap); it is ready (/readyz), or "
                               "swaps, once they are read or after this many seconds, whichever comes first "
                               "(the rest is read while it serves). 0: ready at once.")
    product_ttl_s: float = Field(300.0, ge=0, le=86_400, description="A server's cached product row older than "
                                 "this is re-read from the online store in the background (served meanwhile), when a "
                                 "search touches it or at the next facts refresh, so store updates (stock, "
                                 "streaming popularity) reach searches and filters within about this time plus "
                                 "serving.facts_refresh_s. 0: re-read on every use.")


def _upper(value: object) -> object:
    return value.upper() if isinstance(value, str) else value


class Settings(BaseSettings):
    """Settings shared by every ShopRank process."""

    model_config = SettingsConfigDict(
        env_prefix="SHOPRANK_", env_nested_delimiter="__", extra="forbid"
    )

    home: Path = Field(Path("artifacts"), description="Git-ignored folder for all artifacts (not empty).")
    catalog: Path | None = Field(
        None, description="Catalog served by `shoprank serve` (not empty); None builds the demo catalog."
    )
    artifacts_url: str | None = Field(None, description="Artifact store shared by replicas that share no volume: "
                                      "any fsspec URL (s3://bucket/shoprank, file:///mnt/shared/shoprank). A server "
                                      "pulls the indexes, models, experiment and keys from it at start and on every "
                                      "serving.reload_poll_s, and pushes the admin API's swaps; `shoprank artifacts "
                                      "push` publishes what a build or training made. None: the home is the store.")
    store: str | None = Field(None, pattern=r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,63}$", description="The store a command works on "
                              "(`shoprank --store NAME ...`): its index, models, features, events and experiments "
                              "live in <home>/stores/NAME/. None: the default store (the home itself). "
                              "`shoprank serve` serves the default store and every store under <home>/stores/.")
    index_name: str = Field("default", pattern=r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,63}$",
                            description="Name of the served index "
                            "(`shoprank index --name`).")
    encoder: str = Field(
        "active",
        description="Bi-encoder: 'active' (registry's active biencoder, else bundled MiniLM), "
        "'minilm', 'biencoder:vN' or a model folder.",
    )
    progress: bool = Field(True, description="Show tqdm progress bars in long jobs.")
    log_level: Annotated[Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"], BeforeValidator(_upper)] = Field(
        "INFO", description="Logging level of every process: DEBUG, INFO, WARNING, ERROR or CRITICAL (any case).")
    retrieval: RetrievalSettings = RetrievalSettings()
    ranking: RankingSettings = RankingSettings()
    features: FeatureSettings = FeatureSettings()
    serving: ServingSettings = ServingSettings()
    events: EventSettings = EventSettings()
    api: ApiSettings = ApiSettings()
    compute: ComputeSettings = ComputeSettings()

    @field_validator("home", "catalog", mode="before")
    @classmethod
    def _not_empty(cls, value: object, info: ValidationInfo) -> object:
        """An empty path would be the working directory ("."): refused, so a blank ``SHOPRANK_HOME`` never
        writes artifacts and keys where the command happens to run."""
        if isinstance(value, str) and not value.strip():
            give = {"home": "the artifact home's folder, or unset it for ./artifacts",
                    "catalog": "a CSV, Parquet or JSONL catalog file, or unset it for the demo catalog"}
            raise ValueError(f"empty; give {give[str(info.field_name)]}")
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _YamlSource(settings_cls))

    @property
    def paths(self) -> Home:
        """The artifact home's layout (:class:`core.paths.Home`), for this store."""
        return Home(self.home, self.store)

    @property
    def store_name(self) -> str:
        """The name API keys and routes use for this store: ``store``, or ``index_name`` for the default one."""
        return self.store or self.index_name

    def for_store(self, store: str | None) -> Settings:
        """The same settings for another store (None: the default store).

        Raises:
            InvalidInput: ``store`` is the default store's name (``index_name``): its routes and keys are the
                default store's, so a store of that name could never be reached.
        """
        if store is not None and store == self.index_name:
            raise InvalidInput(f"store {store!r} is the default store's name (index_name): the default store is "
                               "the home itself; leave --store out (and SHOPRANK_STORE unset) for it, or give another "
                               "store another name")
        return self.model_copy(update={"store": store})


def home_problem(home: Path) -> str | None:
    """Why ``home`` cannot be the artifact home (it is a file, or under one), or None; it only looks: a home
    that is not there yet is made by the first command that writes into it."""
    if home.is_dir():
        return None
    if home.exists():
        return "is a file"
    above = next((folder for folder in home.absolute().parents if folder.exists()), None)
    return f"is under the file {above}" if above is not None and not above.is_dir() else None


class _YamlSource(PydanticBaseSettingsSource):
    """Reads the YAML file named by ``SHOPRANK_CONFIG`` (lowest priority after defaults)."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        path = os.environ.get("SHOPRANK_CONFIG")
        if not path:
            return {}
        file = Path(path)
        if not file.is_file():
            raise InvalidInput(f"SHOPRANK_CONFIG={path!r} is not a file; point it at a YAML file")
        try:
            data = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
        except (yaml.YAMLError, UnicodeDecodeError) as error:
            reason = " ".join(str(error).split())
            raise InvalidInput(f"SHOPRANK_CONFIG={path!r} is not a YAML file of UTF-8 text: {reason}") from None
        if not isinstance(data, dict):
            raise InvalidInput(f"{path}: expected a mapping of settings, got {type(data).__name__}")
        return data


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings; tests override them with ``get_settings.cache_clear()``.

    Raises:
        InvalidInput: a setting's value is not allowed (each named as its environment variable).
    """
    try:
        settings = Settings()
    except ValidationError as err:
        raise settings_errors.settings_error(err, os.environ) from err
    except SettingsError as err:  # a value the environment gives that is not the JSON a dict setting needs
        raise settings_errors.not_json_error(err, Settings, os.environ) from None
    return settings


def unknown_variables(environ: Iterable[str] | None = None) -> list[str]:
    """A warning for each ``SHOPRANK_*`` variable of ``environ`` (default: this process's) that names no
    setting, with the closest setting's name. Not logged here: the command line warns once per command, after
    it set up logging, and not again in the processes it starts."""
    return settings_errors.unknown_variables(Settings, os.environ if environ is None else environ)
