"""GraphQL types and queries of the activity trail."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import strawberry

from app.activity import service
from app.activity.models import ActivityEvent as EventRow
from app.info import Info
from app.pagination import (
    After,
    Before,
    Connection,
    First,
    Last,
    build_connection,
    page_request,
)
from app.scalars import JSON


@strawberry.type(description="Who made a change, as they were at the time.")
class Actor:
    type: str = strawberry.field(description="Who acted: user, api_key or system.")
    id: str | None = strawberry.field(description="User or key id.")
    name: str | None = strawberry.field(description="The user's name, or the key's name and prefix.")
    email: str | None = strawberry.field(description="The user's email.")


@strawberry.type(description="A change to the organisation's configuration. Immutable.")
class ActivityEvent:
    id: strawberry.ID = strawberry.field(description="Event id (`act_…`).")
    org_id: str = strawberry.field(description="The organisation.")
    actor: Actor = strawberry.field(description="Who made the change.")
    action: str = strawberry.field(description="What was done, e.g. agent.deleted, api_key.created.")
    target_type: str | None = strawberry.field(description="Kind of thing changed.")
    target_id: str | None = strawberry.field(description="Id of the thing changed.")
    target_name: str | None = strawberry.field(description="Its name at the time.")
    metadata: JSON = strawberry.field(description="Details: changed fields, previous and new values.")
    occurred_at: datetime = strawberry.field(description="When.")
    source_ip: str | None = strawberry.field(description="Client address of the request.")
    user_agent: str | None = strawberry.field(description="User agent of the request.")
    checksum: str | None = strawberry.field(description='"sha256:…" over the event\'s content.')

    @classmethod
    def from_model(cls, event: EventRow) -> ActivityEvent:
        return cls(
            id=strawberry.ID(event.id),
            org_id=event.org_id,
            actor=Actor(type=event.actor_type, id=event.actor_id, name=event.actor_name, email=event.actor_email),
            action=event.action,
            target_type=event.target_type,
            target_id=event.target_id,
            target_name=event.target_name,
            metadata=event.metadata_,
            occurred_at=event.occurred_at,
            source_ip=event.source_ip,
            user_agent=event.user_agent,
            checksum=event.checksum,
        )


@strawberry.input(description="Which activity events. All conditions must hold.")
class ActivityFilter:
    target_type: list[str] | None = strawberry.field(default=None, description="Any of these target types.")
    action: list[str] | None = strawberry.field(
        default=None, description="Any of these actions; `agent.*` selects a family."
    )
    actor_id: str | None = strawberry.field(default=None, description="Only this user or key.")
    target_id: str | None = strawberry.field(default=None, description="Only this target.")
    from_: datetime | None = strawberry.field(default=None, name="from", description="At or after.")
    to: datetime | None = strawberry.field(default=None, description="Before.")
    search: str | None = strawberry.field(
        default=None, description="Text in the action, target or actor name, actor email or metadata."
    )

    def to_query(self) -> service.ActivityQuery:
        return service.ActivityQuery(
            target_types=self.target_type,
            actions=self.action,
            actor_id=self.actor_id,
            target_id=self.target_id,
            occurred_from=self.from_,
            occurred_to=self.to,
            search=self.search.strip() if self.search and self.search.strip() else None,
        )


ActivityEventConnection = Connection[ActivityEvent]


@strawberry.type
class ActivityQuery:
    @strawberry.field(description="The organisation's own audit trail, newest first. Users only.")
    async def activity(
        self,
        info: Info,
        filter: Annotated[ActivityFilter | None, strawberry.argument(description="Conditions.")] = None,
        first: First = None,
        after: After = None,
        last: Last = None,
        before: Before = None,
    ) -> ActivityEventConnection:
        page = page_request(first, after, last, before, types=(datetime, str))
        query = (filter or ActivityFilter()).to_query()
        rows = await service.list_activity(
            await info.context.db(),
            query,
            page=page,
        )
        return build_connection(
            rows, page=page, to_node=ActivityEvent.from_model, sort_key=lambda e: (e.occurred_at, e.id)
        )
