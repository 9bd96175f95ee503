"""A dataset field's grade (分级) and identifier kind over HTTP: accepted on registration and
update, derived when omitted, refused (422 naming the field) when unknown, never lowered
while published (409); a product records each input field's grade and kind."""

from __future__ import annotations

from tests.e2e.conftest import World
from tests.e2e.test_catalog_api import Cast, cast, dataset_body, named, refused

__all__ = ["cast"]  # the fixture

GRADED = [{"name": "phone", "type": "string", "sensitivity": "personal", "grade": "L4",
           "kind": "phone"},
          {"name": "district", "type": "string", "sensitivity": "public"}]


def test_grades_and_kinds_are_stored_derived_and_refused_by_name(cast: Cast) -> None:
    w: World = cast.world
    made = w.call("POST", "/datasets", cast.provider, 201, json=dataset_body(fields=GRADED))
    dataset_id = made["dataset_id"]
    fields = w.call("GET", f"/datasets/{dataset_id}", cast.provider)["fields"]
    assert [(f["grade"], f["kind"]) for f in fields] == [("L4", "phone"), ("L1", "none")]
    for bad, where in (({"grade": "L5"}, "fields.1.grade"),
                       ({"kind": "passport"}, "fields.1.kind")):
        body = refused(w, "POST", "/datasets", cast.provider, 422,
                       json=dataset_body(fields=[GRADED[0], {**GRADED[1], **bad}]))
        assert named(body) == {where}, body

    under = {**GRADED[0], "grade": "L2"}  # personal: at least L3
    body = refused(w, "POST", "/datasets", cast.provider, 422,
                   json=dataset_body(fields=[GRADED[1], under]))
    assert "fields[1].grade" in str(body) and "at least L3" in str(body), body

    w.call("POST", f"/datasets/{dataset_id}/publication", cast.provider)
    raised = [GRADED[0], {**GRADED[1], "grade": "L2", "kind": "address"}]
    w.call("PATCH", f"/datasets/{dataset_id}", cast.provider, json={"fields": raised})
    lowered = [{**GRADED[0], "grade": "L3"}, raised[1]]
    body = refused(w, "PATCH", f"/datasets/{dataset_id}", cast.provider, 409,
                   json={"fields": lowered}, error="wrong_state")
    assert "lower grade" in str(body)
    fields = w.call("GET", f"/datasets/{dataset_id}", cast.demander)["fields"]
    assert [(f["grade"], f["kind"]) for f in fields] == [("L4", "phone"), ("L2", "address")]
