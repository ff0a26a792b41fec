"""The simulator's schedule: a click attack's searches run among the honest sessions, not after them."""

from __future__ import annotations

from simulation.simulator import interleave


def test_attack_searches_are_spread_among_the_sessions() -> None:
    assert interleave(4, 2) == [("session", 0), ("attack", 0), ("session", 1), ("session", 2), ("attack", 1),
                                ("session", 3)]


def test_every_job_once_and_the_attack_in_both_halves() -> None:
    jobs = interleave(3000, 300)
    assert sorted(i for kind, i in jobs if kind == "session") == list(range(3000))
    assert sorted(i for kind, i in jobs if kind == "attack") == list(range(300))
    first_half = jobs[: len(jobs) // 2]
    assert sum(kind == "attack" for kind, _ in first_half) == 150  # a retrain's time split sees it in training
    assert interleave(5, 0) == [("session", i) for i in range(5)]


def test_a_home_without_a_world_says_how_to_build_one(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import pytest

    from core.errors import NotFound
    from simulation.world import StoreWorld

    with pytest.raises(NotFound, match=r"no SIMULATED store world in .*shoprank features build"):
        StoreWorld.load(tmp_path / "world")
