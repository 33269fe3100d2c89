"""The schema is a product: printed from the code, camelCase, described, limited."""

from __future__ import annotations

import json
from pathlib import Path

from graphql import GraphQLInputObjectType, GraphQLObjectType
from graphql import build_schema as parse_sdl
from npm_tools import npm_packages, run_node

from app.api.schema import print_sdl
from support import error_code, gql, register

SCHEMA_FILE = Path(__file__).resolve().parents[2] / "schema.graphql"


def test_schema_graphql_matches_the_code():
    printed = print_sdl()
    assert SCHEMA_FILE.read_text() == printed, (
        "schema.graphql is out of date: run `.venv/bin/agentrail print-schema > schema.graphql`"
    )


GRAPHQL_SCHEMA_LINTER_VERSION = "3.0.1"
# style only: the schema lists fields and values in the order that reads best, not alphabetically
SORTING_RULES = {
    "type-fields-sorted-alphabetically",
    "input-object-fields-sorted-alphabetically",
    "enum-values-sorted-alphabetically",
}
LINTER_SCRIPT = r"""
const { spawnSync } = require('child_process');
const bin = require.resolve('graphql-schema-linter/lib/cli.js');
const done = spawnSync(process.execPath, [bin, '--format', 'json', process.argv[2]], { encoding: 'utf8' });
process.stdout.write(done.stdout);
"""


def test_graphql_schema_linter_is_clean():
    """graphql-schema-linter (npm, pinned) with all its rules, the alphabetical-order ones aside."""
    folder = npm_packages({"graphql-schema-linter": GRAPHQL_SCHEMA_LINTER_VERSION, "graphql": "16.15.0"})
    done = run_node(folder, LINTER_SCRIPT, str(SCHEMA_FILE))
    assert done.returncode == 0, done.stderr
    errors = json.loads(done.stdout)["errors"]
    counted = [e for e in errors if e["rule"] not in SORTING_RULES]
    print(
        f"\ngraphql-schema-linter {GRAPHQL_SCHEMA_LINTER_VERSION}: {len(errors)} errors, {len(counted)} outside sorting"
    )
    assert not counted, "\n".join(f"{e['rule']}: {e['message']}" for e in counted)


def test_every_field_is_described_and_camel_case():
    schema = parse_sdl(SCHEMA_FILE.read_text())
    for name, type_ in schema.type_map.items():
        if name.startswith("__"):
            continue
        assert name[0].isupper(), name
        if isinstance(type_, GraphQLObjectType | GraphQLInputObjectType):
            for field_name, field in type_.fields.items():
                assert field.description, f"{name}.{field_name} has no description"
                assert "_" not in field_name, f"{name}.{field_name} is not camelCase"
                for arg_name in getattr(field, "args", {}) or {}:
                    assert "_" not in arg_name, f"{name}.{field_name}({arg_name}) is not camelCase"


async def test_depth_limit_rejects_before_any_resolver_runs(client, settings, monkeypatch):
    from app.orgs import service

    calls = []
    original = service.get_organization

    async def counting(*args, **kwargs):
        calls.append(1)
        return await original(*args, **kwargs)

    monkeypatch.setattr(service, "get_organization", counting)
    account = await register(client)
    calls.clear()
    too_deep = (
        'query Deep { me { organization { id } } t: __type(name: "Query") ' + _nest(settings.max_query_depth + 2) + " }"
    )
    result = await gql(client, too_deep, token=account.token)
    assert error_code(result) == "BAD_USER_INPUT"
    assert "depth" in result["errors"][0]["message"].lower()
    assert calls == []


def _nest(levels: int) -> str:
    inner = "name"
    for _ in range(levels):
        inner = f"fields {{ type {{ {inner} }} }}"
    return "{ " + inner + " }"


async def test_alias_and_token_limits(client, settings):
    account = await register(client)
    aliases = " ".join(f"a{i}: me {{ kind }}" for i in range(settings.max_query_aliases + 1))
    result = await gql(client, "query { " + aliases + " }", token=account.token)
    assert error_code(result) == "BAD_USER_INPUT"
    tokens = "query { me { " + " ".join("kind" for _ in range(settings.max_query_tokens)) + " } }"
    result = await gql(client, tokens, token=account.token)
    assert error_code(result) == "BAD_USER_INPUT"


async def test_syntax_errors_have_a_code(client):
    result = await gql(client, "query { me { ")
    assert error_code(result) == "BAD_USER_INPUT"


async def test_get_queries_work(client):
    response = await client.get("/graphql", params={"query": "{ __typename }"})
    assert response.status_code == 200
    assert response.json() == {"data": {"__typename": "Query"}}
