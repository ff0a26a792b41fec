"""Request models of the HTTP API: what a request may hold, and how it is read."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from api.schemas import BrowseRequest, RecommendRequest, SearchRequest
from online_learning.experiments import Arm, Experiment, assign


@pytest.mark.parametrize("blank", ["", " ", "\t", " \n "])
def test_a_blank_shopper_or_session_id_is_none(blank: str) -> None:
    """A blank id names no shopper: it is read as none (an anonymous shopper), so the A/B unit is the session's
    id, not one shared blank that would put every such shopper in one arm."""
    for model, fields in ((SearchRequest, {"query": "drill"}), (BrowseRequest, {}),
                          (RecommendRequest, {"product_ids": ["p1"]})):
        request = model.model_validate({**fields, "user_id": blank, "session_id": blank})
        assert (request.user_id, request.session_id) == (None, None), model.__name__
    experiment = Experiment(name="e1", arms={"control": Arm(ltr="v1"), "treatment": Arm(ltr="v2")})
    arms = set()
    for n in range(40):
        body = SearchRequest.model_validate({"query": "drill", "user_id": blank, "session_id": f"s{n}"})
        arms.add(assign(experiment, body.user_id or body.session_id or "request id"))  # the route's unit
    assert arms == {"control", "treatment"}
    with pytest.raises(ValidationError, match="for_you' needs user_id"):
        RecommendRequest.model_validate({"kind": "for_you", "user_id": blank})
    assert SearchRequest.model_validate({"query": "drill", "user_id": " u1"}).user_id == " u1"  # not blank: as sent
    with pytest.raises(ValidationError, match="at most 128"):
        SearchRequest.model_validate({"query": "drill", "user_id": "u" * 129})
