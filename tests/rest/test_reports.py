"""REST /api/v1/reports as seed 002 documents it, its request example verbatim: statuses as the document writes
them (`pending` … `ready`), then the download."""

from __future__ import annotations

import asyncio

from support import register


async def test_request_poll_download_delete(client, runtime):
    account = await register(client)
    bearer = {"Authorization": f"Bearer {account.token}"}
    made = await client.post(
        "/api/v1/reports",
        json={"type": "compliance_summary", "from": "2026-01-01T00:00:00Z", "to": "2026-03-31T23:59:59Z"},
        headers=bearer,
    )
    assert made.status_code == 201, made.text
    report = made.json()
    assert (
        report["status"] == "pending" and report["type"] == "compliance_summary" and report["createdAt"].endswith("Z")
    )
    report_id = report["id"]
    # the worker's job, run here as the worker runs it
    from app.reports import service

    await service.build(runtime, account.org_id, report_id)
    for _ in range(50):
        status = (await client.get(f"/api/v1/reports/{report_id}", headers=bearer)).json()
        if status["status"] == "ready":
            break
        await asyncio.sleep(0.1)
    assert status["status"] == "ready" and status["downloadUrl"]
    download = await client.get(f"/api/v1/reports/{report_id}/download", headers=bearer)
    assert download.status_code == 200 and "attachment" in download.headers["content-disposition"]
    listed = (await client.get("/api/v1/reports?status=READY", headers=bearer)).json()["reports"]
    assert [r["id"] for r in listed] == [report_id]
    bad = await client.post("/api/v1/reports", json={"type": "horoscope", "from": "x", "to": "y"}, headers=bearer)
    assert bad.status_code == 400
    assert (await client.delete(f"/api/v1/reports/{report_id}", headers=bearer)).json() == {
        "id": report_id,
        "deleted": True,
    }
    assert (await client.get(f"/api/v1/reports/{report_id}", headers=bearer)).status_code == 404
