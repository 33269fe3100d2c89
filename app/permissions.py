"""Who may call what: the vocabulary of the per-domain declarations (`app/<domain>/auth.py`).

Each domain declares, once per operation (a GraphQL root field or a REST route), an `Access`: which kinds of
principal may call it (users, API keys, or anyone: public), the lowest role a user needs, the scope an API key
needs, and what it takes to act on something another principal owns. The API applies the declarations before
any resolver or route body runs (app/api/permissions.py); services receive an already-authorised principal.

Roles are ranked by their order in `Role` (highest first): VIEWER, at the end, ranks lowest: it may call every
operation declared `ANY_ROLE` (the reads) and nothing declared for MEMBER or above (every write).
API key scopes: a key holds INGEST, READ or FULL (which holds every scope); an operation names the one it needs.
"""

from __future__ import annotations

from dataclasses import dataclass

from app.errors import Forbidden, Unauthenticated
from app.principal import Principal, Role, Scope

_RANK = {role: rank for rank, role in enumerate(reversed(list(Role)))}


def rank(role: str | None) -> int:
    """Higher is more; an unknown or missing role ranks below every role."""
    try:
        return _RANK[Role(role)] if role is not None else -1
    except ValueError:
        return -1


def at_least(principal: Principal, role: Role) -> bool:
    return principal.is_user and rank(principal.role) >= _RANK[role]


ANY_ROLE = None  # users of every role, including any added later (a read-only role)


@dataclass(frozen=True)
class Access:
    action: str  # what the operation does, for error messages ("create agents")
    users: bool = True
    role: Role | None = ANY_ROLE  # the lowest role a user needs
    api_keys: Scope | None = None  # the scope an API key needs; None: API keys may not
    public: bool = False  # no credentials needed (credentials, when sent, are not read)
    signed_link: bool = False  # a signed download link stands in for credentials
    others: Role | None = None  # acting on what another principal owns (requested, created) needs this role
    note: str = ""  # shown in the permission matrix

    def authorize(self, principal: Principal | None) -> Principal | None:
        """The principal, when it may call the operation; UNAUTHENTICATED without one, FORBIDDEN otherwise."""
        if self.public:
            return principal
        if principal is None:
            raise Unauthenticated("authentication required: send `Authorization: Bearer <token>` or `X-API-Key`")
        if principal.is_user:
            if not self.users:
                raise Forbidden(f"a user cannot {self.action}; use an API key")
            if self.role is not None and not at_least(principal, self.role):
                raise Forbidden(f"only {roles_from(self.role)} may {self.action}")
        else:
            if self.api_keys is None:
                raise Forbidden(f"an API key cannot {self.action}; sign in as a user")
            if not principal.holds(self.api_keys):
                raise Forbidden(f"this API key lacks the {self.api_keys.value} scope needed to {self.action}")
        return principal

    def may_act_on(self, principal: Principal | None, owner_id: str | None) -> bool:
        """Whether the caller may act on a thing that `owner_id` owns: its owner always; others need `others`.
        A signed link (no principal) was given by someone who could."""
        if principal is None or self.others is None or (owner_id is not None and owner_id == principal.actor_id):
            return True
        return at_least(principal, self.others)

    def require_owner_or_role(self, principal: Principal, owner_id: str | None) -> None:
        """FORBIDDEN unless `may_act_on`: called by the service once it has loaded the thing (after NOT_FOUND)."""
        if not self.may_act_on(principal, owner_id):
            assert self.others is not None
            raise Forbidden(f"only {roles_from(self.others)} may {self.action} that someone else owns")


def roles_from(role: Role) -> str:
    """The roles from `role` up, in words: "owner or admin"."""
    roles = [r.value for r in Role if _RANK[r] >= _RANK[role]]
    return roles[0] if len(roles) == 1 else f"{', '.join(roles[:-1])} or {roles[-1]}"


# --- the usual shapes ---------------------------------------------------------------------------------
def public(action: str, note: str = "") -> Access:
    return Access(action, public=True, note=note)


def anyone(action: str, *, scope: Scope = Scope.READ, role: Role | None = ANY_ROLE, note: str = "") -> Access:
    """Users (of any role, or from `role` up: a write) and API keys with `scope`."""
    return Access(action, role=role, api_keys=scope, note=note)


def users(action: str, role: Role | None = Role.MEMBER, *, others: Role | None = None, note: str = "") -> Access:
    """Users only (API keys: FORBIDDEN), from `role` up; reads are declared `ANY_ROLE`."""
    return Access(action, role=role, others=others, note=note)


def managers(action: str, note: str = "") -> Access:
    """Owners and admins only."""
    return Access(action, role=Role.ADMIN, note=note)


@dataclass(frozen=True)
class Permissions:
    """One domain's declarations: GraphQL root fields as `Query.x` / `Mutation.x` / `Subscription.x`, REST
    routes as `METHOD /path` (the path as routed, with its `{parameters}`)."""

    domain: str
    operations: dict[str, Access]
