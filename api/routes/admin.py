"""``/v1/admin``: model versions and hot swaps, behind a bearer token."""

from __future__ import annotations

import asyncio
import hmac
import json
import os
from collections.abc import Coroutine
from contextlib import ExitStack
from pathlib import Path
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.exceptions import RequestValidationError
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    ValidatorFunctionWrapHandler,
    WrapValidator,
    field_validator,
)

from api.auth import check_key, presented_key
from api.deps import HolderDep, SettingsDep
from api.schemas import INVALID, RATE_LIMITED, ErrorBody
from api.state import ServedHolder
from core.errors import Conflict, Forbidden, InvalidInput, NotPublished, Unauthorized
from core.files import exclusive, write_text_atomic
from core.registry import ModelRegistry
from core.settings import Settings
from online_learning.experiments import Experiment
from ranking.rules import RulesConfig
from retrieval.synonyms import Synonyms
from serving.engine import SearchEngine, read_rules, rules_path
from serving.indexing import synonyms_target
from serving.loading import SWAPPABLE, check_loads, push_state
from serving.router import save_router_config


def require_admin(request: Request, settings: SettingsDep, authorization: Annotated[str | None, Header()] = None,
                  x_api_key: Annotated[str | None, Header()] = None) -> None:
    """The admin token (``api.admin_token``), or with ``api.keys_required`` an admin-scope key."""
    token = settings.api.admin_token
    sent = presented_key(authorization, x_api_key)
    if token and sent and hmac.compare_digest(sent.encode(), token.encode()):
        return
    if settings.api.keys_required:
        check_key(request, settings, "admin", sent)
        return
    if not token:
        raise Forbidden("the admin API is disabled; set SHOPRANK_API__ADMIN_TOKEN to enable it")
    if not sent:
        raise Unauthorized("missing 'Authorization: Bearer <token>' header")
    raise Forbidden("wrong admin token")


T = TypeVar("T")

# mounted at /v1 (the default store) and /v1/stores/{store}
router = APIRouter(prefix="/admin", tags=["admin"], dependencies=[Depends(require_admin)],
                   responses={**{status: {"model": ErrorBody} for status in (401, 403, 404, 409, 502, 503)},
                              422: INVALID, 429: RATE_LIMITED})

class Activate(BaseModel):
    version: str = Field(..., pattern=r"^v[0-9]{1,6}$", description="Registered version, e.g. v3.")


class ModelsState(BaseModel):
    served: dict[str, str]
    registered: dict[str, list[str]] = Field(default_factory=dict)
    active: dict[str, str | None] = Field(default_factory=dict)
    warnings: list[str] = Field(default_factory=list, description="Served LambdaMART versions trained with another "
                                "encoder, cross-encoder or second-encoder weight than this server serves: their "
                                "features read otherwise than they learned them (retrain them with "
                                "`shoprank train ltr`).")


def _describe(settings: Settings, engine: SearchEngine) -> ModelsState:
    registry = ModelRegistry(settings.paths.models)
    registered = {role: [v.version for v in registry.versions(role)] for role in (*SWAPPABLE, "biencoder")}
    active = {role: (a.version if (a := registry.active(role)) else None) for role in registered}
    return ModelsState(served=engine.versions, registered=registered, active=active, warnings=engine.ltr_mismatches())


def _check_role(role: str) -> None:
    if role not in SWAPPABLE:
        raise InvalidInput(
            f"role {role!r} cannot be hot-swapped; allowed: {list(SWAPPABLE)} (a new bi-encoder needs "
            "`shoprank index` with it, then a restart)"
        )


async def _swap(request: Request, holder: ServedHolder) -> SearchEngine:
    """Reload the served unit (engine + router) from the shared state on the same index and
    encoder (nothing re-indexed) and swap it in. Other server processes see the same change
    within ``serving.reload_poll_s``."""
    served = await asyncio.to_thread(holder.reload)
    request.app.state.metrics.swaps.labels("engine", "rebuild").inc()
    return served.engine


async def _swap_or_undo(request: Request, holder: ServedHolder, settings: Settings, role: str,
                        before: dict[str, Any], action: str) -> SearchEngine:
    """Swap to the registry's new active version of ``role``; if this server cannot, the registry
    goes back to ``before`` (nothing points at a version that did not load) and the error answers.
    Counted, then published to the artifact store, only once served."""
    registry = ModelRegistry(settings.paths.models)
    changed_to = registry.active_version(role)

    async def finish() -> SearchEngine:
        try:
            engine = await _swap(request, holder)
        except Exception:
            if changed_to is not None:
                registry.restore(role, before, unless_changed_from=changed_to)
            raise
        request.app.state.metrics.swaps.labels(role, action).inc()
        await _publish(settings, f"{role} {changed_to} is served here and active in the registry")
        return engine

    return await _to_the_end(finish())  # the registry never names a version this process does not serve


async def _to_the_end(work: Coroutine[Any, Any, T]) -> T:
    """Run ``work`` to its end even when its caller is gone (the client hung up, the request cancelled): a change
    and its undo never stop half way. Its error is the caller's to tell, while there is one."""
    done = asyncio.ensure_future(work)
    done.add_done_callback(lambda task: task.cancelled() or task.exception())  # retrieved: not logged as lost
    return await asyncio.shield(done)


async def _publish(settings: Settings, done: str) -> None:
    """Upload the shared state to the artifact store, if one is configured: other replicas pull it on their next
    poll. The change is made and served here before this runs, so a failed upload is not undone: it answers 502
    (:class:`~core.errors.NotPublished`: the store behind this server failed, a status HAProxy does not send
    to another replica) saying what was ``done`` and how to publish it, not a bare 500 that would read as nothing
    changed. A store that refuses the push for what it holds (:class:`~core.errors.Conflict`: a version
    registered under the same name elsewhere) or a store setting it cannot take
    (:class:`~core.errors.InvalidInput`) answers its own status and advice, after what was ``done``: pushing the
    state again would be refused the same way."""
    try:
        await asyncio.to_thread(push_state, settings)
    except (Conflict, InvalidInput) as error:
        raise type(error)(f"{done}, but the artifact store refused it (the change is made, do not repeat the "
                          f"call): {error.message}") from error
    except Exception as error:  # the store out of reach: any store (S3, GCS, a mounted folder) fails in its own way
        raise NotPublished(f"{done}, but not published to the artifact store ({type(error).__name__}: {error}): "
                           "the other replicas do not get it until `shoprank artifacts push --state-only` runs "
                           "on this home; the change is made, do not repeat the call") from error


@router.get("/models", response_model=ModelsState, summary="Served and registered model versions")
def models(holder: HolderDep, settings: SettingsDep) -> ModelsState:
    return _describe(settings, holder.get().engine)


@router.post("/models/{role}/activate", response_model=ModelsState, summary="Activate a version and hot-swap to it")
async def activate(role: str, body: Activate, request: Request, holder: HolderDep, settings: SettingsDep) -> ModelsState:
    _check_role(role)
    await asyncio.to_thread(check_loads, settings, role, body.version)  # 409 for a damaged version
    registry = ModelRegistry(settings.paths.models)
    before = registry.state(role)
    registry.activate(role, body.version)
    return _describe(settings, await _swap_or_undo(request, holder, settings, role, before, "activate"))


@router.post("/models/{role}/rollback", response_model=ModelsState, summary="Re-activate the previous version")
async def rollback(role: str, request: Request, holder: HolderDep, settings: SettingsDep) -> ModelsState:
    _check_role(role)
    registry = ModelRegistry(settings.paths.models)
    before = registry.state(role)
    # refused like an activation (409) when the earlier version does not load here
    await asyncio.to_thread(registry.rollback, role, lambda version: check_loads(settings, role, version))
    return _describe(settings, await _swap_or_undo(request, holder, settings, role, before, "rollback"))


@router.post("/reload", response_model=ModelsState, summary="Reload the active models from the registry")
async def reload(request: Request, holder: HolderDep, settings: SettingsDep) -> ModelsState:
    return _describe(settings, await _swap(request, holder))


class RulesState(BaseModel):
    rules: RulesConfig
    path: str = Field(..., description="The file the rules are read from (ranking.rules_file, else the store's own).")
    unknown: list[str] = Field(default_factory=list, description="Product ids the rules name that the index does "
                               "not hold (a pin of one adds nothing until it is indexed).")
    unmatched: list[str] = Field(default_factory=list, description="Boost values no product has (exact values, "
                                 "as filters and facets name them), e.g. \"brand 'dewalt'\".")
    file_error: str | None = Field(None, description="Why the saved file cannot be read (a hand edit): the rules "
                                   "shown are then those this process serves.")


def _rules_state(settings: Settings, engine: SearchEngine, config: RulesConfig | None = None) -> RulesState:
    assert engine.rules is not None
    config = config if config is not None else engine.rules.config
    values: dict[str, set[str]] = {}
    if engine.facts is not None and any(r.boost for r in config.queries.values()):
        table = engine.facts.table()
        values = {"category": set(table.category[table.category != None]),  # noqa: E711 - elementwise
                  "brand": set(table.brand[table.brand != None])}  # noqa: E711
    unmatched = [f"{name} {value!r}" for r in config.queries.values() if r.boost is not None
                 for name in ("category", "brand") for value in getattr(r.boost, name)
                 if values and value not in values[name]]
    return RulesState(rules=config, path=str(rules_path(settings)),
                      unknown=[p for p in config.product_ids() if engine.index.doc_of(p) is None],
                      unmatched=list(dict.fromkeys(unmatched)))


@router.get("/rules", response_model=RulesState, summary="The store's business rules")
def get_rules(holder: HolderDep, settings: SettingsDep) -> RulesState:
    """The rules as saved: a PUT answered by another server process is shown at once (each process serves
    the file within ``serving.reload_poll_s``). A saved file that cannot be read: the rules served, and why."""
    engine = holder.get().engine
    try:
        return _rules_state(settings, engine, read_rules(settings))
    except InvalidInput as error:  # the reload keeps serving the rules read last: show those
        return _rules_state(settings, engine).model_copy(update={"file_error": str(error)})


@router.put("/rules", response_model=RulesState, summary="Replace the business rules (pins, hides, redirects)")
async def put_rules(body: RulesConfig, request: Request, holder: HolderDep, settings: SettingsDep,
                    dry_run: Annotated[bool, Query(description="Only check them: nothing is saved")] = False
                    ) -> RulesState:
    """Saved as the store's rules file, shared with the other replicas (``artifacts push``); every server
    process serves them within ``serving.reload_poll_s``, this one at once. Result pages cached under the
    old rules are not served again. ``dry_run``: checked and answered (with the unknown product ids) only."""
    if dry_run:
        return _rules_state(settings, holder.get().engine, body)
    return _rules_state(settings, await _replace_file(request, holder, settings, rules_path(settings), body.to_yaml()))


class SynonymsBody(BaseModel):
    rules: list[Annotated[str, StringConstraints(max_length=2000)]] = Field(
        ..., max_length=100_000, description="Lines of the synonyms file: 'a, b, c' (equivalent words) or "
        "'a, b => c' (a or b searched as c); blank lines and '#' comments are kept. One line each: no line "
        "break inside.")

    @field_validator("rules")
    @classmethod
    def _one_line_each(cls, rules: list[str]) -> list[str]:
        for n, line in enumerate(rules):
            if line.splitlines() not in ([line], []):
                raise ValueError(f"rules[{n}] {line[:80]!r} holds a line break: give each line of the file as "
                                 "its own element")
        return rules


class SynonymsState(SynonymsBody):
    path: str = Field(..., description="The file: retrieval.synonyms, else the store's rules/synonyms.txt.")
    entries: int = Field(..., description="Words or phrases a rule rewrites.")


def _synonyms_state(settings: Settings) -> SynonymsState:
    path = synonyms_target(settings)
    if not path.is_file():
        return SynonymsState(rules=[], path=str(path), entries=0)
    synonyms, _ = Synonyms.read(path)  # a file that is not UTF-8: a 422 naming it (a PUT replaces it)
    return SynonymsState(rules=path.read_bytes().decode("utf-8").splitlines(), path=str(path),
                         entries=len(synonyms.rules))


@router.get("/synonyms", response_model=SynonymsState, summary="The store's synonyms")
def get_synonyms(settings: SettingsDep) -> SynonymsState:
    return _synonyms_state(settings)


@router.put("/synonyms", response_model=SynonymsState, summary="Replace the synonyms")
async def put_synonyms(body: SynonymsBody, request: Request, holder: HolderDep, settings: SettingsDep) -> SynonymsState:
    """Checked line by line (a 422 names the bad line), saved as the store's synonyms file, shared with the
    other replicas (``artifacts push``); every server process searches with them within
    ``serving.reload_poll_s``, this one at once."""
    path = synonyms_target(settings)
    Synonyms.parse(body.rules, "rules")
    await _replace_file(request, holder, settings, path, "".join(line + "\n" for line in body.rules))
    return _synonyms_state(settings)


async def _replace_file(request: Request, holder: ServedHolder, settings: Settings, path: Path,
                        text: str) -> SearchEngine:
    """Write a shared file (the rules, the synonyms), serve it here, then publish it. When the served unit
    cannot be made again (another shared file is broken), the old file is put back and the error raised:
    the call changes nothing, even when its caller is gone meanwhile (:func:`_to_the_end`)."""
    lock = _FILE_LOCKS.setdefault((id(asyncio.get_running_loop()), path), asyncio.Lock())

    async def change() -> SearchEngine:
        async with lock:  # one change of a file at a time in this process
            old = _as_it_is(path)
            try:
                await asyncio.to_thread(write_text_atomic, path, text)
            except OSError as error:
                raise Conflict(f"cannot write {path} ({error.strerror}); a setting names a file this server may "
                               "not change: unset it to keep the file in the store's folder") from None
            try:
                engine = await _swap(request, holder)
            except Exception:
                await asyncio.to_thread(_put_back, path, old)
                raise
        await _publish(settings, f"{path} is saved and served here")
        return engine

    return await _to_the_end(change())


def _as_it_is(path: Path) -> tuple[bytes, int, int] | None:
    """A file's bytes (even when not UTF-8) and times, to put back as they were (None: no file)."""
    if not path.is_file():
        return None
    stat = path.stat()
    return path.read_bytes(), stat.st_atime_ns, stat.st_mtime_ns


def _put_back(path: Path, old: tuple[bytes, int, int] | None) -> None:
    """The file as :func:`_as_it_is` read it, its modification time too: a change that was undone is no change
    here for the artifact store (a file changed here is kept at every pull, and pushed)."""
    write_text_atomic(path, None if old is None else old[0])
    if old is not None:
        os.utime(path, ns=(old[1], old[2]))


_FILE_LOCKS: dict[tuple[int, Path], asyncio.Lock] = {}  # per event loop (an asyncio lock belongs to one)


class ExperimentConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelt field would switch the experiment or shadow off

    experiment: Experiment | None = Field(None, description="A/B or interleaving experiment (null: none).")
    shadow: str | None = Field(None, pattern=r"^v[0-9]{1,6}$", description="LambdaMART version to shadow.")


class ExperimentState(ExperimentConfig):
    shadow_scored: int = 0
    shadow_dropped: int = 0


@router.get("/experiment", response_model=ExperimentState, summary="The running experiment and shadow")
def get_experiment(holder: HolderDep) -> ExperimentState:
    current = holder.get().router
    # shown as served: one saved under earlier rules (read_config's "saved") is not checked against today's
    return ExperimentState.model_validate({"experiment": current.experiment, "shadow": current.shadow,
                                           "shadow_scored": current.shadow_done,
                                           "shadow_dropped": current.shadow_dropped}, context={"saved": True})


def _as_saved(data: Any, handler: ValidatorFunctionWrapHandler) -> ExperimentConfig:
    """A PUT body checked as a saved experiment is read back (read_config's "saved"): one sent back as GET shows
    it, refused by a rule added since it was saved, is taken. :func:`put_experiment` checks any other experiment
    against today's rules."""
    return ExperimentConfig.model_validate(data, context={"saved": True})


def _check_new(body: ExperimentConfig, served: Experiment | None) -> None:
    """Today's rules for an experiment other than the one ``served`` now (a 422 naming the field, as for any
    body): only the experiment running already keeps what earlier rules allowed, e.g. while its shadow changes."""
    # compared as JSON text, which keeps the arms' order: assign() walks the arms in order, so the same arms in
    # another order move shoppers between them, and that is a new experiment
    if body.experiment is None or (served is not None and json.dumps(body.experiment.model_dump(), default=str)
                                   == json.dumps(served.model_dump(), default=str)):
        return
    try:
        ExperimentConfig.model_validate(body.model_dump())
    except ValidationError as error:
        raise RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in error.errors(include_url=False)],
                                     body=body.model_dump()) from None


def _check_same_split(body: ExperimentConfig, served: Experiment | None) -> None:
    """Refuse (409) an experiment under the name of the one served now that would move shoppers between its
    arms: other arms, their order, their shares of the weight or the mode. Shoppers are assigned by the name
    and the split, so after such a change some are in both arms, and the searches before it cannot be pooled
    with those after (the decision would read a sample-ratio mismatch for good). An arm's version, the
    control's name and proportional weights (2:2 for 1:1) may change under the name."""
    new = body.experiment
    if new is None or served is None or new.name != served.name:
        return

    def split(experiment: Experiment) -> tuple[str, list[tuple[str, float]]]:
        total = sum(arm.weight for arm in experiment.arms.values())
        return experiment.mode, [(name, round(arm.weight / total, 9)) for name, arm in experiment.arms.items()]

    if split(new) != split(served):
        shares = ", ".join(f"{name} {share:.3g}" for name, share in split(served)[1])
        raise Conflict(f"experiment {new.name!r} runs with the split {shares} ({served.mode}); another split moves "
                       "shoppers between its arms, and its searches could not be compared with those before: start "
                       f"it under a new name (e.g. {new.name}-2)")


@router.put("/experiment", response_model=ExperimentState, summary="Start, change or stop an experiment / shadow")
async def put_experiment(body: Annotated[ExperimentConfig, WrapValidator(_as_saved)], request: Request,
                         holder: HolderDep, settings: SettingsDep) -> ExperimentState:
    """A new experiment follows today's rules; the one served now, sent back unchanged (say, to change the
    shadow), is taken as it was saved."""
    _check_new(body, holder.get().router.experiment)
    _check_same_split(body, holder.get().router.experiment)
    registry = ModelRegistry(settings.paths.models)
    wanted = [a.ltr for a in body.experiment.arms.values()] if body.experiment else []
    for version in wanted + ([body.shadow] if body.shadow else []):
        registry.get("ltr", version)  # 404 naming what is registered
        await asyncio.to_thread(check_loads, settings, "ltr", version)  # 409: damaged, or features unfillable
    path = settings.paths.experiment_config

    async def change() -> None:  # to its end, or undone, even when the caller is gone (:func:`_to_the_end`)
        async with _FILE_LOCKS.setdefault((id(asyncio.get_running_loop()), path), asyncio.Lock()):
            with ExitStack() as held:
                # and across processes (`shoprank promote --apply`), waited for on a thread, not on the event loop
                await asyncio.to_thread(held.enter_context, exclusive(path))
                old = _as_it_is(path)
                try:
                    save_router_config(settings.paths, body.experiment, body.shadow)
                except OSError as error:  # as a rules file that cannot be written: the call changes nothing
                    raise Conflict(f"cannot write {path} ({error.strerror}): the experiment is not changed; make "
                                   "the store's folder writable (or free its disk) and send it again") from None
                try:
                    await _swap(request, holder)
                except Exception:  # not served here: the call changes nothing, and nothing is published
                    await asyncio.to_thread(_put_back, path, old)
                    raise
        await _publish(settings, f"the experiment configuration {path} is saved and served here")

    await _to_the_end(change())
    return get_experiment(holder)
