"""The REST foundation: the OpenAPI 3.1 document generated from the routes (validated with openapi-spec-validator),
Swagger UI with its assets from a package, and the documented error shape for unknown routes and methods."""

from __future__ import annotations

from openapi_spec_validator import validate
from openapi_spec_validator.versions.shortcuts import get_spec_version


async def test_the_openapi_document_is_valid_3_1_and_lists_every_rest_route(client, app):
    response = await client.get("/api/v1/openapi.json")
    assert response.status_code == 200
    spec = response.json()
    validate(spec)
    assert str(get_spec_version(spec)).endswith("3.1.0") or spec["openapi"] == "3.1.0"
    from starlette.routing import Route

    for route in app.routes:
        if isinstance(route, Route) and route.path.startswith("/api/v1/"):
            path = route.path
            for method in route.methods - {"HEAD"}:
                assert method.lower() in spec["paths"][path], (method, path)
    login = spec["paths"]["/api/v1/auth/login"]["post"]
    assert login["security"] == []
    # the auth routes' bodies are in the document, request and response (pydantic models, not hand-written)
    schemas = spec["components"]["schemas"]

    def schema(ref: dict) -> dict:
        return schemas[ref["$ref"].rsplit("/", 1)[1]]

    login_in = schema(login["requestBody"]["content"]["application/json"]["schema"])
    assert login_in["required"] == ["email", "password"] and login_in["additionalProperties"] is False
    signed_in = schema(login["responses"]["200"]["content"]["application/json"]["schema"])
    assert {"accessToken", "organization", "refreshToken", "user"} <= set(signed_in["required"])
    assert set(schemas["OrganizationOut"]["properties"]) == {"id", "name", "email", "plan"}
    for path, method, status in [
        ("/api/v1/auth/register", "post", "201"),
        ("/api/v1/auth/refresh", "post", "200"),
        ("/api/v1/auth/me", "patch", "200"),
        ("/api/v1/auth/api-keys", "post", "201"),
    ]:
        operation = spec["paths"][path][method]
        assert "requestBody" in operation and "content" in operation["responses"][status], (method, path)
    created = schema(
        spec["paths"]["/api/v1/auth/api-keys"]["post"]["responses"]["201"]["content"]["application/json"]["schema"]
    )
    assert {"key", "id", "name"} <= set(created["required"])
    assert "content" in spec["paths"]["/api/v1/auth/me"]["get"]["responses"]["200"]
    # seed 000's, 001's and 003's routes are documented too (beside OTLP's POST /v1/traces, the GET)
    assert {"get", "post"} <= set(spec["paths"]["/v1/traces"])
    for path in ("/v1/audit/export", "/v1/metrics", "/v1/webhooks", "/v1/webhooks/test", "/api/v1/audit/export"):
        assert path in spec["paths"], path
    assert "/v1/organizations/{organization_id}/audit-log/export" in spec["paths"]
    assert spec["components"]["schemas"]["ErrorBody"]["required"] == ["error", "status", "code"]


async def test_swagger_ui_is_served_from_the_package(client):
    page = await client.get("/api/docs")
    assert page.status_code == 200 and "/api/v1/openapi.json" in page.text
    assert "cdn" not in page.text.lower() and "https://" not in page.text
    bundle = await client.get("/api/docs/swagger-ui-bundle.js")
    assert bundle.status_code == 200 and bundle.headers["content-type"].startswith(
        ("text/javascript", "application/javascript")
    )
    assert (await client.get("/api/docs/swagger-ui.css")).status_code == 200
    missing = await client.get("/api/docs/../../etc/passwd")
    assert missing.status_code == 404


async def test_unknown_routes_and_methods_answer_the_error_shape(client):
    missing = await client.get("/api/v1/no-such-thing")
    assert missing.status_code == 404
    assert missing.json() == {"error": "no route GET /api/v1/no-such-thing", "status": 404, "code": "NOT_FOUND"}
    wrong = await client.put("/api/v1/billing/prices")
    assert wrong.status_code == 405
    assert wrong.json()["status"] == 405 and wrong.json()["code"] == "METHOD_NOT_ALLOWED" and wrong.json()["error"]
    assert "GET" in wrong.headers["allow"]


def test_readme_endpoint_table_matches_the_routes():
    from pathlib import Path

    from app.main import domain_routes
    from app.rest.openapi import endpoints_table

    text = (Path(__file__).parents[2] / "README.md").read_text()
    start, end = "<!-- rest-endpoints:start -->\n", "<!-- rest-endpoints:end -->"
    current = text.split(start, 1)[1].split(end, 1)[0]
    assert current == endpoints_table(domain_routes()), (
        "README.md's REST table is out of date: agentrail rest-endpoints"
    )
