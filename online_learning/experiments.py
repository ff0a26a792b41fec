"""Online experiments: A/B by stable user hash, and team-draft interleaving.

- **A/B**: a user's arm is ``sha256(experiment + ":" + user id)`` mapped to
  [0, 1) against the arms' cumulative weights, so a user always sees the same
  arm, arms get their configured shares, and a new experiment re-shuffles.
  Anonymous searches hash the session id (else the request id).
- **Team-draft interleaving** (Radlinski, Kurup and Joachims 2008): both
  rankers' lists are merged by alternately letting a team (picked by a coin
  flip each round) take its best not-yet-shown product; each shown product
  remembers its team, and a click credits that team. A query's winner is the
  team with more clicks. Interleaving needs far fewer searches than A/B to
  detect a preference, because both rankers face the same query and user.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from core.errors import InvalidInput
from core.files import write_text_atomic

ARM_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
MIN_WEIGHT = 1e-6  # an arm's least weight (relative: 1e-6 beside 1 is a share of one in a million)
INTERLEAVED = "interleaved"  # the arm the log names for an interleaved search (both arms ranked it): no arm's name


def saved(info: ValidationInfo) -> bool:
    """Whether an experiment is read back as it was saved (:func:`read_config`), not made now: the rules
    added since it was saved are not applied to it, so a server that runs it keeps loading."""
    return bool((info.context or {}).get("saved"))


class Arm(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ltr: str = Field(..., pattern=r"^v[0-9]{1,6}$", description="LambdaMART version this arm serves (a registry "
                     "version name: v and 1-6 digits).")
    weight: float = Field(1.0, gt=0, description="Relative share of users (A/B), a number in [0.000001, 1000000].")

    @field_validator("weight")
    @classmethod
    def _finite(cls, weight: float, info: ValidationInfo) -> float:
        # far below 1e-6 (5e-324) the shares assign() computes round away: two equal arms split 25/75
        if not saved(info) and not (math.isfinite(weight) and MIN_WEIGHT <= weight <= 1_000_000):
            raise ValueError(f"weight {weight} is not a number in [0.000001, 1000000]: weights are relative, so "
                             "scale them up (1 and 9 for a 10% treatment)")
        return weight


class Experiment(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(..., pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    mode: Literal["ab", "interleave"] = "ab"
    arms: dict[str, Arm] = Field(..., min_length=2)
    control: str = Field("control", description="The arm serving the current model.")

    @model_validator(mode="after")
    def _control_exists(self, info: ValidationInfo) -> Experiment:
        for arm in self.arms:
            if saved(info):  # one saved before a rule still loads
                continue
            if not ARM_NAME.fullmatch(arm):
                raise ValueError(f"arm name {arm!r} is not allowed: 1-64 letters, digits, '_', '.' or '-'")
            if arm == INTERLEAVED:  # its searches would read as interleaved ones in the reports
                raise ValueError(f"arm name {arm!r} is reserved: the event log names an interleaved search's arm so; "
                                 "give the arm another name")
        if self.control not in self.arms:
            raise ValueError(f"control arm {self.control!r} is not one of the arms {list(self.arms)}")
        if self.mode == "interleave" and len(self.arms) != 2:
            raise ValueError(f"interleaving compares exactly 2 arms, got {len(self.arms)}")
        return self

    @classmethod
    def from_file(cls, path: Path) -> Experiment:
        if not path.is_file():
            raise InvalidInput(f"experiment file {path} does not exist")
        return cls.model_validate(yaml.safe_load(path.read_text()))

    @property
    def treatment(self) -> str:
        return next(a for a in self.arms if a != self.control)


def read_config(path: Path) -> tuple[Experiment | None, str | None]:
    """The running experiment and shadow version saved at ``path`` (none saved: ``(None, None)``)."""
    if not path.is_file():
        return None, None
    data = json.loads(path.read_text())
    experiment = (Experiment.model_validate(data["experiment"], context={"saved": True}) if data.get("experiment")
                  else None)
    return experiment, data.get("shadow")


def write_config(path: Path, experiment: Experiment | None, shadow: str | None) -> None:
    """Save the running experiment and shadow version at ``path`` (atomic)."""
    write_text_atomic(path, json.dumps({"experiment": experiment.model_dump() if experiment else None,
                                        "shadow": shadow}, indent=2))


def served_versions(path: Path) -> set[str]:
    """The LambdaMART versions the experiment and shadow saved at ``path`` serve."""
    experiment, shadow = read_config(path)
    arms = experiment.arms.values() if experiment else []
    return {arm.ltr for arm in arms} | ({shadow} if shadow else set())


def bucket(experiment: str, unit: str) -> float:
    """A stable number in [0, 1) for (experiment, unit)."""
    digest = hashlib.sha256(f"{experiment}:{unit}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def assign(experiment: Experiment, unit: str) -> str:
    """The arm of ``unit`` (a user id, else a session or request id)."""
    point = bucket(experiment.name, unit) * sum(a.weight for a in experiment.arms.values())
    for name, arm in experiment.arms.items():
        if point < arm.weight:
            return name
        point -= arm.weight
    return list(experiment.arms)[-1]


def team_draft(a: Sequence[str], b: Sequence[str], k: int, rng: random.Random,
               teams: tuple[str, str] = ("a", "b")) -> tuple[list[str], list[str]]:
    """Team-draft interleaving of two rankings; returns (products, team of each)."""
    merged: list[str] = []
    owner: list[str] = []
    taken: set[str] = set()
    count = {teams[0]: 0, teams[1]: 0}
    lists = {teams[0]: list(a), teams[1]: list(b)}
    cursors = {teams[0]: 0, teams[1]: 0}
    while len(merged) < k:
        first = teams[0] if count[teams[0]] < count[teams[1]] or (
            count[teams[0]] == count[teams[1]] and rng.random() < 0.5) else teams[1]
        progressed = False
        for team in (first, teams[1] if first == teams[0] else teams[0]):
            items = lists[team]
            while cursors[team] < len(items) and items[cursors[team]] in taken:
                cursors[team] += 1
            if cursors[team] < len(items):
                product = items[cursors[team]]
                merged.append(product)
                owner.append(team)
                taken.add(product)
                count[team] += 1
                progressed = True
                break
        if not progressed:
            break
    return merged, owner


def interleaving_winner(teams: Sequence[str], clicked_positions: Sequence[int], names: tuple[str, str]) -> str | None:
    """The team with more clicks on its products (None: a tie or no clicks)."""
    credit = {names[0]: 0, names[1]: 0}
    for position in clicked_positions:
        if 0 <= position < len(teams):
            credit[teams[position]] += 1
    if credit[names[0]] == credit[names[1]]:
        return None
    return max(credit, key=credit.get)  # type: ignore[arg-type]
