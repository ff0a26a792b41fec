"""ShopRank's handle on the Feast repo in ``feature_repo/``.

The repo's definitions are Feast's own; this module only points them at
ShopRank's artifacts folder and the configured online store (sqlite by default,
Redis by setting), and wraps ``apply`` and ``materialize``. The rendered
``feature_store.yaml`` lands in ``<home>/features/``, beside the offline Parquet
files, the registry and the sqlite online store. The online feature reader is
:class:`core.feature_store.OnlineFeatureReader`.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from core.errors import InvalidInput, NotFound, NotReady
from core.files import write_text_atomic
from core.settings import Settings

if TYPE_CHECKING:
    from feast import FeatureStore

logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1] / "feature_repo"


def features_dir(settings: Settings) -> Path:
    return settings.paths.features


def render_config(settings: Settings) -> Path:
    """Write the feature_store.yaml for the configured online store (unless it holds that already); returns
    its path."""
    folder = features_dir(settings)
    folder.mkdir(parents=True, exist_ok=True)
    fs = settings.features
    online = ({"type": "sqlite", "path": str(folder / "online_store.db")} if fs.online_store == "sqlite"
              else {"type": "redis", "connection_string": _with_timeouts(fs.redis_url)})
    # one Feast project per store: stores sharing one Redis keep their rows apart
    project = project_of(settings.store)
    if settings.store and settings.paths.stores.is_dir():
        same = sorted(p.name for p in settings.paths.stores.iterdir()
                      if p.is_dir() and p.name != settings.store and project_of(p.name) == project)
        if same:
            raise InvalidInput(f"stores {[settings.store, *same]} would share the feature store's project {project!r}: "
                               f"store names that differ only in '-', '.' or '_' are one project; rename one")
    config = {"project": project, "provider": "local", "registry": str(folder / "registry.db"),
              "online_store": online, "offline_store": {"type": "file"}, "entity_key_serialization_version": 3}
    path = folder / f"feature_store.{fs.online_store}.yaml"
    text = yaml.safe_dump(config, sort_keys=False)
    # every open renders it, while other processes of the home (replicas reloading, a retrain, the consumers)
    # read it: written whole, and only when it changes, a reader never sees it empty or cut short
    try:
        unchanged = path.read_text(encoding="utf-8") == text
    except OSError:
        unchanged = False
    if not unchanged:
        write_text_atomic(path, text)
    return path


def project_of(store: str | None) -> str:
    """The Feast project of a store (None: the default store): its name with '-' and '.' read as '_'."""
    return "shoprank" if not store else "shoprank_" + re.sub(r"[^A-Za-z0-9_]", "_", store)


def _with_timeouts(url: str) -> str:
    """Redis connection string with socket timeouts (1 s) and no retry of a command that timed out, unless it
    sets its own: a stopped or unreachable Redis fails a read or write within the second instead of hanging it
    (redis-py retries a timed-out command 3 times with backoff by default: a write to a hung Redis took 15 s)."""
    extra = [f"{k}=1" for k in ("socket_connect_timeout", "socket_timeout") if f"{k}=" not in url]
    extra += ["retry=null"] if "retry=" not in url else []  # redis-py: Retry(NoBackoff(), 0)
    return ",".join([url, *extra])


def _import_feast() -> None:
    """Import Feast without the PyTorch it loads, when installed, for an optional data loader
    ShopRank does not use (~180 MiB in every server process). ``import torch`` fails while
    Feast is imported (Feast catches that) and works again afterwards."""
    import sys

    if "feast" in sys.modules or "torch" in sys.modules:
        return
    sys.modules["torch"] = None  # type: ignore[assignment]
    try:
        import feast.feature_store  # noqa: F401
    finally:
        del sys.modules["torch"]


def open_store(settings: Settings) -> FeatureStore:
    """A Feast ``FeatureStore`` on the repo, with ShopRank's paths and online store."""
    _import_feast()
    from feast import FeatureStore

    os.environ["SHOPRANK_FEATURES_DIR"] = str(features_dir(settings))
    return FeatureStore(repo_path=str(REPO), fs_yaml_file=render_config(settings))


def apply(settings: Settings) -> list[str]:
    """Register the repo's entities, views and services (``feast apply``); returns their names. Those registered
    before that the repo no longer defines are deleted, with their online tables, as ``feast apply`` does."""
    import sys

    from feast.repo_operations import extract_objects_for_apply_delete, parse_repo

    store = open_store(settings)
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    for module in REPO.glob("*.py"):  # imported again: their sources read this home's SHOPRANK_FEATURES_DIR
        sys.modules.pop(module.stem, None)
    cwd = os.getcwd()
    os.chdir(REPO)  # Feast names the repo's modules relative to the working directory
    try:
        repo = parse_repo(REPO)
    finally:
        os.chdir(cwd)
    objects = [*repo.entities, *repo.data_sources, *repo.feature_views, *repo.on_demand_feature_views,
               *repo.feature_services]
    _, gone, _, _ = extract_objects_for_apply_delete(store.project, store.registry, repo)
    with _online_store_reachable(settings):
        store.apply(objects, objects_to_delete=gone, partial=False)
    names = sorted({o.name for o in objects})
    logger.info("applied %d Feast objects to %s", len(objects), store.config.registry.path)
    return names


def materialize(settings: Settings, end: datetime | None = None) -> None:
    """Load the latest offline feature values into the online store (``feast materialize``)."""
    missing = [name for name in ("product_attributes", "user_profile")
               if not (features_dir(settings) / f"{name}.parquet").is_file()]
    if missing:
        raise NotFound(f"no feature tables in {features_dir(settings)} ({', '.join(missing)} missing): run `shoprank "
                       "features build [--from-catalog]` first")
    store = open_store(settings)
    if not store.list_feature_views():  # nothing applied: a materialize would write nothing and say done
        raise NotFound(f"the feature store at {features_dir(settings)} has no feature views: run `shoprank features "
                       "apply` first")
    with _online_store_reachable(settings):
        store.materialize(start_date=datetime(1970, 1, 1, tzinfo=UTC), end_date=end or datetime.now(UTC))


@contextmanager
def _online_store_reachable(settings: Settings) -> Iterator[None]:
    """:class:`NotReady` naming the Redis URL and its setting when the Redis online store cannot be reached, not
    the client's traceback."""
    import redis

    try:
        yield
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as error:
        raise NotReady(f"the Redis online store at {settings.features.redis_url} cannot be reached ({error}): start "
                       "Redis there, set SHOPRANK_FEATURES__REDIS_URL to where it listens, or use "
                       "--online-store sqlite") from None
