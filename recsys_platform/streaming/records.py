"""A recommendation record's fields and its event: one rule for the transformation that writes
records and the readers that take their events back (no pyarrow: the Lambdas import it)."""

from __future__ import annotations

import datetime as dt

# A record is its event as received plus the answer's fields. The event's own `recommendation_id`
# (the list the customer acted on) moves to ACTED_ON, since the record's `recommendation_id` names
# this answer.
ACTED_ON = "acted_on_recommendation_id"
ANSWER_FIELDS = ("recommended_items", "similar_items", "note", "model_version", "recommendation_id", "processed_at",
                 "arrived_at")


def answer_record(event: dict, answer: dict, arrived_at: dt.datetime | None) -> dict:
    """The recommendation record of one event: the event as received (its `recommendation_id`
    under ACTED_ON), then `answer` (the answer's fields), then when the stream received the event."""
    record = {k: v for k, v in event.items() if k != "recommendation_id"}
    if "recommendation_id" in event:
        record[ACTED_ON] = event["recommendation_id"]
    return {**record, **answer, **({} if arrived_at is None else {"arrived_at": arrived_at.isoformat()})}


def event_of(record: dict) -> dict:
    """The event as the sales platform sent it, from its recommendation record (`answer_record`'s inverse)."""
    event = {k: v for k, v in record.items() if k not in ANSWER_FIELDS and k != ACTED_ON}
    if record.get(ACTED_ON) is not None:
        event["recommendation_id"] = record[ACTED_ON]
    return event
