"""Issue 20.1-2: members and invitations, several organisations per user, through graphql/members.graphql."""

from __future__ import annotations

import sqlalchemy as sa

from support import GraphQLWebSocket, emailed_token, error_code, gql, register


async def _invite(client, runtime, inviter, email: str, role: str = "MEMBER") -> tuple[dict, str]:
    sent = await gql(client, "InviteMember", {"email": email, "role": role}, token=inviter.token)
    assert "errors" not in sent, sent
    return sent["data"]["inviteMember"], await emailed_token(runtime, email, "invitation")


async def _join(client, runtime, owner, email: str, role: str = "MEMBER") -> tuple[str, str]:
    """Invited and accepted as a new account: (user id, access token)."""
    _, token = await _invite(client, runtime, owner, email, role)
    accepted = await gql(client, "AcceptInvitation", {"token": token, "name": "New", "password": "p" * 12})
    assert "errors" not in accepted, accepted
    data = accepted["data"]["acceptInvitation"]
    return data["user"]["id"], data["accessToken"]


async def _activity(runtime, action: str) -> list[sa.Row]:
    async with runtime.db.engine.connect() as conn:
        query = sa.text("SELECT * FROM activity_events WHERE action = :a ORDER BY occurred_at")
        return list((await conn.execute(query, {"a": action})).all())


async def test_invite_accept_and_list(client, runtime):
    owner = await register(client, org="Acme")
    invitation, token = await _invite(client, runtime, owner, "Ann@Example.com", "ADMIN")
    assert invitation["status"] == "PENDING" and invitation["email"] == "ann@example.com"
    async with runtime.db.engine.connect() as conn:
        stored = (await conn.execute(sa.text("SELECT token_hash FROM invitations"))).scalar_one()
    assert token not in stored and len(stored) == 64  # hashed
    accepted = await gql(client, "AcceptInvitation", {"token": token, "name": "Ann", "password": "p" * 12})
    data = accepted["data"]["acceptInvitation"]
    assert data["user"]["role"] == "ADMIN" and data["organization"]["name"] == "Acme"
    # single use
    again = await gql(client, "AcceptInvitation", {"token": token, "name": "Ann", "password": "p" * 12})
    assert error_code(again) == "BAD_USER_INPUT"
    members = (await gql(client, "Members", {}, token=owner.token))["data"]["members"]["edges"]
    assert [(m["node"]["user"]["email"], m["node"]["role"]) for m in members] == [
        (owner.email, "OWNER"),
        ("ann@example.com", "ADMIN"),
    ]
    listed = (await gql(client, "Invitations", {}, token=owner.token))["data"]["invitations"]["edges"]
    assert listed[0]["node"]["status"] == "ACCEPTED"
    assert await _activity(runtime, "member.invited") and await _activity(runtime, "member.joined")
    # the new account's address is verified by the invitation; its token signs in
    me = await gql(client, "Me", token=data["accessToken"])
    assert me["data"]["me"]["user"]["emailVerified"] is True


async def test_invitation_rejections_write_nothing(client, runtime, settings):
    owner = await register(client)
    _, admin = await _join(client, runtime, owner, "admin@example.com", "ADMIN")
    _, member = await _join(client, runtime, owner, "member@example.com")
    assert (
        error_code(await gql(client, "InviteMember", {"email": "x@example.com", "role": "MEMBER"}, token=member))
        == "FORBIDDEN"
    )
    # an admin cannot grant the owner role
    refused = await gql(client, "InviteMember", {"email": "x@example.com", "role": "OWNER"}, token=admin)
    assert error_code(refused) == "FORBIDDEN"
    assert (
        error_code(await gql(client, "InviteMember", {"email": "nope", "role": "MEMBER"}, token=owner.token))
        == "BAD_USER_INPUT"
    )
    assert (
        error_code(
            await gql(client, "InviteMember", {"email": "member@example.com", "role": "MEMBER"}, token=owner.token)
        )
        == "CONFLICT"
    )
    async with runtime.db.engine.connect() as conn:
        assert (await conn.execute(sa.text("SELECT count(*) FROM invitations"))).scalar_one() == 2
    for bad in ("", "x" * 300, "not-a-token"):
        result = await gql(client, "AcceptInvitation", {"token": bad, "name": "N", "password": "p" * 12})
        assert error_code(result) == "BAD_USER_INPUT"


async def test_revoke_resend_and_expiry(client, runtime):
    owner = await register(client)
    invitation, first = await _invite(client, runtime, owner, "bob@example.com")
    resent = await gql(client, "ResendInvitation", {"id": invitation["id"]}, token=owner.token)
    assert "errors" not in resent
    second = await emailed_token(runtime, "bob@example.com", "invitation")
    assert second != first
    stale = await gql(client, "AcceptInvitation", {"token": first, "name": "B", "password": "p" * 12})
    assert error_code(stale) == "BAD_USER_INPUT"
    revoked = await gql(client, "RevokeInvitation", {"id": invitation["id"]}, token=owner.token)
    assert revoked["data"]["revokeInvitation"]["status"] == "REVOKED"
    assert error_code(await gql(client, "AcceptInvitation", {"token": second, "name": "B", "password": "p" * 12}))
    assert error_code(await gql(client, "RevokeInvitation", {"id": invitation["id"]}, token=owner.token)) == "CONFLICT"
    # expired after 7 days
    _, third = await _invite(client, runtime, owner, "cy@example.com")
    async with runtime.db.engine.begin() as conn:
        await conn.execute(sa.text("UPDATE invitations SET expires_at = now() - interval '1 second'"))
    result = await gql(client, "AcceptInvitation", {"token": third, "name": "C", "password": "p" * 12})
    assert error_code(result) == "BAD_USER_INPUT"
    async with runtime.db.engine.connect() as conn:
        ages = (await conn.execute(sa.text("SELECT expires_at - created_at FROM invitations"))).scalars().all()
    assert all(age.days <= 7 for age in ages)


async def test_an_existing_user_joins_a_second_organisation_and_switches(client, runtime):
    alice = await register(client, org="First")
    other = await register(client, org="Second")
    _, token = await _invite(client, runtime, other, alice.email, "VIEWER")
    # an existing account needs its password (or to be signed in as it)
    wrong = await gql(client, "AcceptInvitation", {"token": token, "password": "wrong password!"})
    assert error_code(wrong) == "BAD_USER_INPUT"
    joined = await gql(client, "AcceptInvitation", {"token": token}, token=alice.token)
    assert joined["data"]["acceptInvitation"]["organization"]["name"] == "Second"
    orgs = (await gql(client, "Organizations", token=alice.token))["data"]["organizations"]
    assert [(o["organization"]["name"], o["role"], o["current"]) for o in orgs] == [
        ("First", "OWNER", True),
        ("Second", "VIEWER", False),
    ]
    switched = await gql(client, "SwitchOrganization", {"id": other.org_id}, token=alice.token)
    data = switched["data"]["switchOrganization"]
    assert data["organization"]["name"] == "Second" and data["user"]["role"] == "VIEWER"
    # the old token (first organisation) no longer works: the session moved
    assert error_code(await gql(client, "Me", token=alice.token)) == "UNAUTHENTICATED"
    me = await gql(client, "Me", token=data["accessToken"])
    assert me["data"]["me"]["organization"]["id"] == other.org_id
    # sign-in lands in the last used one
    login = await gql(client, "Login", {"email": alice.email, "password": alice.password})
    assert login["data"]["login"]["organization"]["name"] == "Second"
    assert error_code(await gql(client, "SwitchOrganization", {"id": "org_nope"}, token=data["accessToken"])) == (
        "NOT_FOUND"
    )


async def test_roles_owners_and_removal(client, runtime, live_server):
    owner = await register(client)
    admin_id, admin = await _join(client, runtime, owner, "admin@example.com", "ADMIN")
    member_id, member = await _join(client, runtime, owner, "member@example.com")
    # an admin changes members but not owners
    changed = await gql(client, "UpdateMemberRole", {"userId": member_id, "role": "VIEWER"}, token=admin)
    assert changed["data"]["updateMemberRole"]["role"] == "VIEWER"
    assert (
        error_code(await gql(client, "UpdateMemberRole", {"userId": owner.user_id, "role": "MEMBER"}, token=admin))
        == "FORBIDDEN"
    )
    # the last owner stays an owner and cannot leave
    last = await gql(client, "UpdateMemberRole", {"userId": owner.user_id, "role": "ADMIN"}, token=owner.token)
    assert error_code(last) == "CONFLICT"
    assert error_code(await gql(client, "LeaveOrganization", token=owner.token)) == "CONFLICT"
    # removal: the member's token fails at once and an open subscription closes
    ws = await GraphQLWebSocket.connect(live_server, {"authorization": f"Bearer {member}"})
    assert (await ws.receive())["type"] == "connection_ack"
    await ws.subscribe("subscription { alerts { id } }")
    removed = await gql(client, "RemoveMember", {"userId": member_id}, token=admin)
    assert removed["data"]["removeMember"] is True
    assert error_code(await gql(client, "Me", token=member)) == "UNAUTHENTICATED"
    import websockets

    try:
        while True:
            await ws.receive(5)
    except websockets.ConnectionClosed as closed:
        assert closed.rcvd.code == 4403
    assert error_code(await gql(client, "RemoveMember", {"userId": member_id}, token=admin)) == "NOT_FOUND"
    # transfer: the admin becomes the owner, the owner an admin; then the former owner may leave
    moved = await gql(client, "TransferOwnership", {"userId": admin_id}, token=owner.token)
    assert moved["data"]["transferOwnership"]["role"] == "OWNER"
    roles = {
        e["node"]["user"]["id"]: e["node"]["role"]
        for e in (await gql(client, "Members", {}, token=admin))["data"]["members"]["edges"]
    }
    assert roles == {owner.user_id: "ADMIN", admin_id: "OWNER"}
    assert (await gql(client, "LeaveOrganization", token=owner.token))["data"]["leaveOrganization"] is True
    assert error_code(await gql(client, "Me", token=owner.token)) == "UNAUTHENTICATED"
    for action in ("member.role_changed", "member.removed", "organization.ownership_transferred", "member.left"):
        assert await _activity(runtime, action), action
    # a person in no organisation cannot sign in
    login = await gql(client, "Login", {"email": owner.email, "password": owner.password})
    assert error_code(login) == "FORBIDDEN"


async def test_another_organisations_members_are_invisible(client, runtime):
    alice = await register(client)
    bob = await register(client)
    assert error_code(await gql(client, "RemoveMember", {"userId": bob.user_id}, token=alice.token)) == "NOT_FOUND"
    assert (
        error_code(await gql(client, "UpdateMemberRole", {"userId": bob.user_id, "role": "VIEWER"}, token=alice.token))
        == "NOT_FOUND"
    )
    members = (await gql(client, "Members", {}, token=alice.token))["data"]["members"]["edges"]
    assert [m["node"]["user"]["id"] for m in members] == [alice.user_id]
