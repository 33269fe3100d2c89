"""The one place tenancy lives (app.db): scoped sessions see only their organisation."""

from __future__ import annotations

import pytest
from sqlmodel import select

from app.db import SYSTEM, TenancyError, new_id
from app.orgs.models import ApiKey, Organization


async def _seed(runtime) -> tuple[str, str]:
    async with runtime.db.system_session() as session:
        a, b = Organization(id=new_id("org"), name="A"), Organization(id=new_id("org"), name="B")
        session.add_all([a, b])
        await session.flush()
        for org in (a, b):
            session.add(
                ApiKey(
                    id=new_id("key"),
                    org_id=org.id,
                    name=org.name,
                    prefix="aa_live_x",
                    secret_hash=new_id("h"),
                )
            )
        await session.commit()
        return a.id, b.id


async def test_scoped_session_sees_only_its_organisation(runtime):
    org_a, org_b = await _seed(runtime)
    async with runtime.db.tenant_session(org_a) as session:
        keys = (await session.exec(select(ApiKey))).all()
        assert [k.org_id for k in keys] == [org_a]
        other = (await session.exec(select(ApiKey).where(ApiKey.org_id == org_b))).all()
        assert other == []
    async with runtime.db.system_session() as session:
        assert len((await session.exec(select(ApiKey))).all()) == 2


async def test_unscoped_session_is_refused(runtime):
    await _seed(runtime)
    async with runtime.db.session(org_id=None) as session:
        with pytest.raises(TenancyError):
            await session.exec(select(ApiKey))


async def test_writing_into_another_organisation_is_refused(runtime):
    org_a, org_b = await _seed(runtime)
    async with runtime.db.tenant_session(org_a) as session:
        session.add(ApiKey(id=new_id("key"), org_id=org_b, name="x", prefix="p", secret_hash="h2"))
        with pytest.raises(TenancyError):
            await session.flush()
    async with runtime.db.tenant_session(org_a) as session:
        key = ApiKey(id=new_id("key"), name="stamped", prefix="p", secret_hash="h3")
        session.add(key)
        await session.commit()
        assert key.org_id == org_a
    with pytest.raises(TenancyError):
        async with runtime.db.tenant_session(SYSTEM):
            pass
