"""Secrets never land: app.masking, with real-looking (fake) keys of every kind.

Fake keys are assembled at run time (`"sk_" + "live_" + body`) so that this file itself never holds a
string that secret scanners or push protection would flag.
"""

import base64
import copy
import json
import random
import string
import time

import pytest

from app.masking import (
    MAX_DEPTH,
    REDACTED,
    MaskingDepthError,
    is_secret_key,
    mask_json,
    mask_record,
    mask_text,
)

_rng = random.Random(20240501)
ALNUM = string.ascii_letters + string.digits
UPPER_ALNUM = string.ascii_uppercase + string.digits
URLSAFE = ALNUM + "-_"


def body(length: int, alphabet: str = ALNUM) -> str:
    return "".join(_rng.choice(alphabet) for _ in range(length))


def b64url(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


JWT = ".".join(
    (
        b64url({"alg": "HS256", "typ": "JWT"}),
        b64url({"sub": "usr_01HX3K", "org": "org_01HX3K", "exp": 1767225600}),
        body(43, URLSAFE),
    )
)
PEM_BODY = "\n".join(body(64, ALNUM + "+/") for _ in range(5))
BEGIN, END = "-----" + "BEGIN", "-----" + "END"

# kind -> a realistic fake secret that is replaced as a whole
WHOLE_SECRETS = {
    "agentrail_live": "aa_" + "live_" + body(43, URLSAFE),
    "agentrail_test": "aa_" + "test_" + body(43, URLSAFE),
    "stripe_secret_live": "sk_" + "live_" + "51" + body(97),
    "stripe_secret_test": "sk_" + "test_" + "51" + body(30),
    "stripe_restricted": "rk_" + "live_" + "51" + body(60),
    "stripe_webhook": "wh" + "sec_" + body(32),
    "aws_access_key_id": "AK" + "IA" + body(16, UPPER_ALNUM),
    "aws_session_key_id": "AS" + "IA" + body(16, UPPER_ALNUM),
    "github_classic": "gh" + "p_" + body(36),
    "github_oauth": "gh" + "o_" + body(36),
    "github_app": "gh" + "s_" + body(36),
    "github_user_to_server": "gh" + "u_" + body(36),
    "github_fine_grained": "github_" + "pat_" + body(22) + "_" + body(59),
    "gitlab": "gl" + "pat-" + body(20, URLSAFE),
    "slack_bot": "xo" + "xb-" + "1234567890123-1234567890123-" + body(24),
    "slack_user": "xo" + "xp-" + "1234567890123-1234567890123-1234567890123-" + body(32, "0123456789abcdef"),
    "openai_legacy": "sk" + "-" + body(20) + "T3BlbkFJ" + body(20),
    "openai_project": "sk" + "-proj-" + body(156, URLSAFE),
    "openai_service_account": "sk" + "-svcacct-" + body(120, URLSAFE),
    "anthropic": "sk" + "-ant-api03-" + body(93, URLSAFE) + "AA",
    "huggingface": "hf" + "_" + body(34),
    "npm": "np" + "m_" + body(36),
    "sendgrid": "SG" + "." + body(22, URLSAFE) + "." + body(43, URLSAFE),
    "google_api_key": "AI" + "za" + "Sy" + body(33, URLSAFE),
    "jwt": JWT,
    "pem_rsa": f"{BEGIN} RSA PRIVATE KEY-----\n{PEM_BODY}\n{END} RSA PRIVATE KEY-----",
    "pem_pkcs8": f"{BEGIN} PRIVATE KEY-----\n{PEM_BODY}\n{END} PRIVATE KEY-----",
    "pem_openssh": f"{BEGIN} OPENSSH PRIVATE KEY-----\n{PEM_BODY}\n{END} OPENSSH PRIVATE KEY-----",
    "pem_encrypted": f"{BEGIN} ENCRYPTED PRIVATE KEY-----\n{PEM_BODY}\n{END} ENCRYPTED PRIVATE KEY-----",
    "pem_json_escaped": f"{BEGIN} EC PRIVATE KEY-----\\n{PEM_BODY[:64]}\\n{END} EC PRIVATE KEY-----",
}

AWS_SECRET = body(40, ALNUM + "/+")
BEARER = body(40, URLSAFE + ".~")
BASIC = base64.b64encode(b"deploy-bot:" + body(18).encode()).decode()
PASSWORD = "Tr0ub4d0r!" + body(8) + "$x"
SLACK_PATH = f"T0{body(8, UPPER_ALNUM)}/B0{body(8, UPPER_ALNUM)}/{body(24)}"

# kind -> (text with a secret, the same text masked): the context around the secret is kept
IN_CONTEXT = {
    "aws_secret_env": (f"aws_secret_access_key = {AWS_SECRET}", "aws_secret_access_key = [REDACTED]"),
    "aws_secret_prose": (f"AWS Secret Access Key: {AWS_SECRET}", "AWS Secret Access Key: [REDACTED]"),
    "bearer": (f"Authorization: Bearer {BEARER}", "Authorization: Bearer [REDACTED]"),
    "bearer_curl": (
        f"curl -H 'authorization: bearer {BEARER}' https://api.example.com",
        "curl -H 'authorization: bearer [REDACTED]' https://api.example.com",
    ),
    "bearer_jwt": (f"Bearer {JWT}", "Bearer [REDACTED]"),
    "basic_header": (f"Authorization: Basic {BASIC}", "Authorization: Basic [REDACTED]"),
    "basic_bare": (f"sent Basic {BASIC} upstream", "sent Basic [REDACTED] upstream"),
    "authorization_token_scheme": (
        f'"Authorization": "Token {body(40)}"',
        '"Authorization": "Token [REDACTED]"',
    ),
    "cookie_header": (
        f"Cookie: sessionid={body(32)}; csrftoken={body(32)}\nAccept: */*",
        "Cookie: [REDACTED]\nAccept: */*",
    ),
    "set_cookie_header": (
        f"Set-Cookie: __Host-session={body(40)}; Path=/; Secure; HttpOnly",
        "Set-Cookie: [REDACTED]",
    ),
    "url_postgres": (
        f"DATABASE_URL=postgres://app_user:{PASSWORD}@db.internal:5432/app",
        "DATABASE_URL=postgres://app_user:[REDACTED]@db.internal:5432/app",
    ),
    "url_redis_no_user": (f"redis://:{body(24)}@cache:6379/0", "redis://:[REDACTED]@cache:6379/0"),
    "url_raw_at_in_password": ("mongodb://u:p@ss@db:27017/x", "mongodb://u:[REDACTED]@db:27017/x"),
    "url_https": (
        f"fetch https://admin:{body(12)}@intranet.example.com/report",
        "fetch https://admin:[REDACTED]@intranet.example.com/report",
    ),
    "slack_webhook": (
        f"post to https://hooks.slack.com/services/{SLACK_PATH}",
        "post to https://hooks.slack.com/services/[REDACTED]",
    ),
    "assign_password": (f"password={PASSWORD}&user=bob", "password=[REDACTED]&user=bob"),
    "assign_env": (f"export DB_PASSWORD={PASSWORD}\nexit", "export DB_PASSWORD=[REDACTED]\nexit"),
    "assign_yaml": (f"api_key: {body(32)}\nregion: eu", "api_key: [REDACTED]\nregion: eu"),
    "assign_json_in_text": (
        f'config {{"client_secret": "{body(40)}", "client_id": "abc"}}',
        'config {"client_secret": "[REDACTED]", "client_id": "abc"}',
    ),
    "assign_escaped_json_in_text": (
        f'{{\\"password\\": \\"{PASSWORD}\\"}}',
        '{\\"password\\": \\"[REDACTED]\\"}',
    ),
    "assign_quoted_with_spaces": (f"passphrase = 'correct horse {body(8)}'", "passphrase = '[REDACTED]'"),
    "assign_query_string": (
        f"GET /cb?code=1&access_token={body(30)}&state=xyz",
        "GET /cb?code=1&access_token=[REDACTED]&state=xyz",
    ),
    "assign_camel_case": (f"githubToken: {body(20)}", "githubToken: [REDACTED]"),
    "assign_x_api_key": (f"X-Api-Key: {body(32)}", "X-Api-Key: [REDACTED]"),
    "assign_go_style": (f'secret := "{body(20)}"', 'secret := "[REDACTED]"'),
    "assign_odbc": (f"Server=db;Uid=sa;Pwd={PASSWORD};", "Server=db;Uid=sa;Pwd=[REDACTED];"),
    "assign_pass_word": (f"user=bob pass={PASSWORD}", "user=bob pass=[REDACTED]"),
    "assign_credentials": (f"credentials: {body(20)}", "credentials: [REDACTED]"),
}

PROSE = (
    "The support agent reviewed the ticket history, checked the refund policy and the shipping status, "
    "then drafted a reply for the customer explaining the next steps and the expected timeline. "
)


def test_every_kind_is_distinct_and_realistic() -> None:
    assert len(set(WHOLE_SECRETS.values())) == len(WHOLE_SECRETS)
    assert len(WHOLE_SECRETS) + len(IN_CONTEXT) >= 55


@pytest.mark.parametrize("kind", sorted(WHOLE_SECRETS))
def test_whole_secret_alone(kind: str) -> None:
    assert mask_text(WHOLE_SECRETS[kind]) == (REDACTED, True)


@pytest.mark.parametrize("kind", sorted(WHOLE_SECRETS))
def test_whole_secret_keeps_the_text_around_it(kind: str) -> None:
    secret = WHOLE_SECRETS[kind]
    assert mask_text(f"use key {secret} for the call") == (f"use key {REDACTED} for the call", True)
    assert mask_text(f"({secret})") == (f"({REDACTED})", True)
    assert mask_text(f'"{secret}"') == (f'"{REDACTED}"', True)


@pytest.mark.parametrize("kind", sorted(WHOLE_SECRETS))
def test_whole_secret_in_a_long_prompt(kind: str) -> None:
    # Long strings take the per-rule scan, short ones the combined gate: both must find everything.
    before, after = PROSE * 8, PROSE * 6
    masked, changed = mask_text(before + WHOLE_SECRETS[kind] + " " + after)
    assert changed
    assert masked == before + REDACTED + " " + after


@pytest.mark.parametrize("kind", sorted(IN_CONTEXT))
def test_secret_in_context(kind: str) -> None:
    text, expected = IN_CONTEXT[kind]
    assert mask_text(text) == (expected, True)


@pytest.mark.parametrize("kind", sorted(IN_CONTEXT))
def test_secret_in_context_in_a_long_prompt(kind: str) -> None:
    text, expected = IN_CONTEXT[kind]
    padding = PROSE * 10 + "\n"
    assert mask_text(padding + text + "\n" + padding) == (padding + expected + "\n" + padding, True)


def test_truncated_pem_block_is_redacted_to_the_end() -> None:
    text = f"key follows {BEGIN} RSA PRIVATE KEY-----\n{PEM_BODY[:100]}"
    assert mask_text(text) == ("key follows [REDACTED]", True)


def test_several_secrets_in_one_text() -> None:
    stripe = WHOLE_SECRETS["stripe_secret_live"]
    github = WHOLE_SECRETS["github_classic"]
    text = f"stripe={stripe}\ngh {github}\nurl https://u:{PASSWORD}@h/x\nplain words"
    masked, changed = mask_text(text)
    assert changed
    assert masked == "stripe=[REDACTED]\ngh [REDACTED]\nurl https://u:[REDACTED]@h/x\nplain words"


def test_overlapping_findings_make_one_redaction() -> None:
    # The JWT, the Bearer token and the Authorization value are the same characters.
    assert mask_text(f"Authorization: Bearer {JWT}") == ("Authorization: Bearer [REDACTED]", True)
    key = WHOLE_SECRETS["openai_project"]
    assert mask_text(f'"api_key": "{key}"') == ('"api_key": "[REDACTED]"', True)


# ---------------------------------------------------------------------------------------------------
# Things that must stay


NOT_SECRETS = [
    "The token limit is 4096 tokens; each token costs money and the model counts every token.",
    "Summarise the key points, then pass the result to the next tool.",
    "The bearer of bad news called; Bearer authentication is described in RFC 6750.",
    "Basic authentication is simple but weak.",
    "Authorization: required for all endpoints",
    "run 3f2b9c1e-8d4a-4e2b-9f61-0c7d5a3e9b12 finished",  # a UUID
    "sha256 e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",  # a digest
    "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
    "commit 4b825dc642cb6eb9a060e54bf8d69288fbee4904 on main",
    "ids log_01HX3K9Z8Q7W6E5R4T3Y2U1I0O key_01HX3K9Z8Q7W6E5R4T3Y2U1I0P agent_01HX3K9Z8Q7W6E5R4T3Y2U",
    "display prefix aa_live_Ab3x (the key itself is never shown again)",
    "publishable key pk_" + "live_" + "51" + body(30) + " is safe in a browser",
    "token_count=512 max_tokens: 1024 input_tokens=77 total_tokens: 589",
    "risk-assessment-of-the-quarterly-report and state-of-the-art multi-agent-orchestration",
    "task-abcdefghijklmnopqrstuvwxyz0123",
    "see https://docs.example.com:8443/guide?page=2#auth and mailto:ops@example.com",
    "https://user@example.com/repo.git",
    "DB_PASSWORD=${DB_PASSWORD} and secret: '****' and password: <your password> and token: null",
    "pwd=/home/agent PWD: /workspace",
    "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC7 deploy@host",  # a public key
    "-----BEGIN PUBLIC KEY-----\nMIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8A\n-----END PUBLIC KEY-----",
    "the author=Jane, oauth: enabled, compass: north, bypass=true",
    "Asia/Tokyo and ASIA is a continent; AKIA is not followed by 16 characters here",
    "",
]


@pytest.mark.parametrize("text", NOT_SECRETS)
def test_text_without_secrets_is_untouched(text: str) -> None:
    masked, changed = mask_text(text)
    assert (masked, changed) == (text, False)
    assert masked is text  # nothing was copied either
    padded = PROSE * 10 + text + "\n" + PROSE * 10
    assert mask_text(padded) == (padded, False)


SAFE_KEYS = [
    "token_count",
    "input_tokens",
    "output_tokens",
    "max_tokens",
    "tokens",
    "token_type",
    "tokenizer",
    "eos_token",
    "next_token",
    "NextToken",
    "page_token",
    "keyboard",
    "monkey",
    "key",
    "keys",
    "primary_key",
    "primary_key_column",
    "idempotencyKey",
    "idempotency_key",
    "cache_key",
    "sort_key",
    "public_key",
    "publishable_key",
    "api_key_id",
    "apiKeyPrefix",
    "secret_name",
    "secretArn",
    "password_length",
    "password_policy",
    "auth_type",
    "authorization_url",
    "author",
    "oauth",
    "pass",
    "passenger",
    "cookie_consent",
    "session",
    "model",
    "",
]

SECRET_KEYS = [
    "password",
    "Password",
    "PASSWORD",
    "passwd",
    "pwd",
    "db_password",
    "dbPassword",
    "new-password",
    "password_hash",
    "passphrase",
    "secret",
    "secrets",
    "client_secret",
    "clientSecret",
    "webhook_secret",
    "secret_key",
    "secret_key_base",
    "api_key",
    "apiKey",
    "APIKey",
    "apikey",
    "x-api-key",
    "X-API-KEY",
    "stripe_key",
    "stripeKey",
    "encryption_key",
    "private_key",
    "privateKey",
    "api_keys",
    "token",
    "access_token",
    "accessToken",
    "refresh_token",
    "id_token",
    "githubToken",
    "github_token",
    "csrf_token",
    "auth",
    "basic_auth",
    "authorization",
    "Authorization",
    "proxy-authorization",
    "cookie",
    "Cookie",
    "set-cookie",
    "Set-Cookie",
    "credentials",
    "credential",
    "session_id",
    "sessionId",
    "sessionid",
    "JSESSIONID",
    "aws_secret_access_key",
    "AWS_SECRET_ACCESS_KEY",
    "otp",
    "password2",
    "api_key_2",
]


@pytest.mark.parametrize("key", SECRET_KEYS)
def test_secret_keys(key: str) -> None:
    assert is_secret_key(key)


@pytest.mark.parametrize("key", SAFE_KEYS)
def test_keys_that_are_not_secrets(key: str) -> None:
    assert not is_secret_key(key)


def test_values_under_safe_keys_stay() -> None:
    value = {key: "plain value 123" for key in SAFE_KEYS} | {"token_count": 123, "max_tokens": 4096}
    assert mask_json(value) == (value, False)


# ---------------------------------------------------------------------------------------------------
# JSON


def test_secret_keys_are_redacted_whatever_the_value_type() -> None:
    value = {
        "password": "hunter2hunter2",
        "pin_code": 1234,
        "api_key": 123456789,
        "token": 3.5,
        "credentials": {"user": "bob", "password": "x", "extra": [1, 2]},
        "secrets": ["a", "b"],
        "model": "gpt-4o",
    }
    masked, changed = mask_json(value)
    assert changed
    assert masked == {
        "password": REDACTED,
        "pin_code": 1234,
        "api_key": REDACTED,
        "token": REDACTED,
        "credentials": REDACTED,
        "secrets": REDACTED,
        "model": "gpt-4o",
    }


def test_values_that_carry_nothing_stay_and_do_not_flag() -> None:
    value = {
        "password": None,
        "token": "",
        "auth": False,
        "credentials": {},
        "secrets": [],
        "api_key": "********",
        "client_secret": "${CLIENT_SECRET}",
        "access_token": "<token>",
        "refresh_token": REDACTED,
        "PWD": "/home/agent/work",
    }
    assert mask_json(value) == (value, False)


def test_nested_json_and_lists() -> None:
    stripe = WHOLE_SECRETS["stripe_secret_live"]
    aws_id = WHOLE_SECRETS["aws_access_key_id"]
    value = {
        "request": {
            "headers": {"Authorization": "Bearer abc.def.123", "Accept": "application/json"},
            "body": {"items": [{"sku": "A-1", "note": f"charge with {stripe} please"}, {"sku": "B-2"}]},
        },
        "env": [["AWS_ACCESS_KEY_ID", aws_id], ["REGION", "eu-west-1"]],
        "counts": {"token_count": 12, "tokens": [1, 2, 3]},
        "depth": {"a": {"b": {"c": {"d": {"githubToken": "ghtoken-value"}}}}},
    }
    masked, changed = mask_json(value)
    assert changed
    assert masked == {
        "request": {
            "headers": {"Authorization": REDACTED, "Accept": "application/json"},
            "body": {"items": [{"sku": "A-1", "note": "charge with [REDACTED] please"}, {"sku": "B-2"}]},
        },
        "env": [["AWS_ACCESS_KEY_ID", REDACTED], ["REGION", "eu-west-1"]],
        "counts": {"token_count": 12, "tokens": [1, 2, 3]},
        "depth": {"a": {"b": {"c": {"d": {"githubToken": REDACTED}}}}},
    }


def test_top_level_scalars_and_lists() -> None:
    key = WHOLE_SECRETS["anthropic"]
    assert mask_json(key) == (REDACTED, True)
    assert mask_json([1, "two", key, None, True]) == ([1, "two", REDACTED, None, True], True)
    assert mask_json(42) == (42, False)
    assert mask_json(None) == (None, False)
    assert mask_json((1, "x")) == ([1, "x"], False)


def test_name_value_pairs() -> None:
    value = {
        "headers": [
            {"name": "Authorization", "value": "Token abc"},
            {"name": "Content-Type", "value": "application/json"},
        ],
        "Tags": [{"Key": "db_password", "Value": "hunter2!"}, {"Key": "team", "Value": "payments"}],
    }
    masked, changed = mask_json(value)
    assert changed
    assert masked["headers"] == [
        {"name": "Authorization", "value": REDACTED},
        {"name": "Content-Type", "value": "application/json"},
    ]
    assert masked["Tags"] == [{"Key": "db_password", "Value": REDACTED}, {"Key": "team", "Value": "payments"}]


def test_command_line_flags() -> None:
    args = ["mysql", "--password", "hunter2!", "--user", "bob", "--api-key", "abc123", "-token", "x1y2"]
    args += ["--token-count", "5", "--password", "--verbose", "--auth"]
    masked, changed = mask_json({"argv": args})
    assert changed
    assert masked["argv"] == [
        "mysql",
        "--password",
        REDACTED,
        "--user",
        "bob",
        "--api-key",
        REDACTED,
        "-token",
        REDACTED,
        "--token-count",
        "5",
        "--password",
        "--verbose",
        "--auth",
    ]
    assert mask_json(["ls", "-la", "--max-tokens", "100"]) == (["ls", "-la", "--max-tokens", "100"], False)


def test_keys_are_not_rewritten() -> None:
    key = WHOLE_SECRETS["github_classic"]
    masked, changed = mask_json({key: "value"})
    assert (masked, changed) == ({key: "value"}, False)


def test_input_is_not_mutated_and_output_is_a_copy() -> None:
    value = {
        "password": "hunter2hunter2",
        "nested": {"note": "key " + WHOLE_SECRETS["agentrail_live"], "list": [{"token": "t0ken-value"}]},
        "safe": {"a": [1, 2]},
    }
    snapshot = copy.deepcopy(value)
    masked, changed = mask_json(value)
    assert changed
    assert value == snapshot
    assert masked is not value
    assert masked["safe"] is not value["safe"] and masked["safe"]["a"] is not value["safe"]["a"]
    masked["safe"]["a"].append(3)
    assert value == snapshot


def test_masking_twice_changes_nothing_more() -> None:
    value = {
        "prompt": f"password={PASSWORD} and {WHOLE_SECRETS['slack_bot']}",
        "token": "abc123abc123",
        "url": f"postgres://u:{PASSWORD}@db/app",
    }
    once, changed = mask_json(value)
    assert changed
    assert mask_json(once) == (once, False)


def test_depth_limit() -> None:
    deep: object = "aa_" + "live_" + body(43)
    for _ in range(32):
        deep = {"level": [deep]}
    assert mask_json(deep)[1]
    too_deep: object = "x"
    for _ in range(MAX_DEPTH + 1):
        too_deep = [too_deep]
    with pytest.raises(MaskingDepthError):
        mask_json(too_deep)
    assert issubclass(MaskingDepthError, ValueError)


# ---------------------------------------------------------------------------------------------------
# Records


def test_mask_record() -> None:
    fields = {
        "action": "tool_use",
        "agentId": "agent_01",
        "prompt": f"connect with postgres://svc:{PASSWORD}@db/prod",
        "response": None,
        "metadata": {"model": "gpt-4o", "api_key": "abcd1234abcd"},
        "args": ["--token", WHOLE_SECRETS["github_app"]],
        "result": {"ok": True},
    }
    snapshot = copy.deepcopy(fields)
    masked, credential_masked = mask_record(fields)
    assert credential_masked
    assert fields == snapshot
    assert masked == {
        "action": "tool_use",
        "agentId": "agent_01",
        "prompt": "connect with postgres://svc:[REDACTED]@db/prod",
        "response": None,
        "metadata": {"model": "gpt-4o", "api_key": REDACTED},
        "args": ["--token", REDACTED],
        "result": {"ok": True},
    }


def test_mask_record_without_secrets_reports_false() -> None:
    fields = {
        "prompt": PROSE * 10,
        "response": "Done: refund of 12.50 EUR issued, token_count=42.",
        "metadata": {"model": "gpt-4o-mini", "max_tokens": 1024, "session": "conv-8842"},
        "args": {"order_id": "ord_123", "primary_key": "id"},
        "result": [1, 2, {"status": "ok"}],
    }
    assert mask_record(fields) == (fields, False)
    assert mask_record({}) == ({}, False)


def test_mask_record_masks_labels_and_identifiers_and_copies_the_rest() -> None:
    # Every free-text field passes the masker (issue 15, item 9): labels have their secret-shaped parts replaced,
    # identifiers holding a secret become a digest of it (equal stays equal); other fields are copied as is.
    key = WHOLE_SECRETS["agentrail_live"]
    masked, credential_masked = mask_record(
        {"action": f"call {key}", "idempotency_key": key, "status": key, "prompt": "hello"}
    )
    assert masked["action"] == "call [REDACTED]" and masked["prompt"] == "hello" and masked["status"] == key
    assert masked["idempotency_key"].startswith("redacted-") and key not in masked["idempotency_key"]
    assert mask_record({"idempotency_key": key})[0]["idempotency_key"] == masked["idempotency_key"]
    assert credential_masked


# ---------------------------------------------------------------------------------------------------
# Linear time on hostile input (not a benchmark: generous bounds, catches catastrophic backtracking)

HOSTILE = [
    "a" * 200_000,
    "-" * 200_000,
    "_" * 200_000,
    "a-" * 100_000,
    "a_" * 100_000,
    "password=" * 20_000,
    "password:" * 20_000,
    "Bearer " + "a" * 200_000,
    "Basic " + "A" * 200_000,
    "://" + ":" * 100_000,
    "://a:" + "b" * 200_000,
    "aws" + " secret" * 20_000,
    "eyJ" + "a" * 100_000 + ".eyJ" + "b" * 100_000,
    "-----BEGIN PRIVATE KEY-----" * 5_000,
    "Cookie: " + "a=b; " * 40_000,
    "sk-" * 60_000,
    "A" * 200_000,
]


@pytest.mark.parametrize("text", HOSTILE, ids=lambda t: repr(t[:20]))
def test_hostile_input_is_linear(text: str) -> None:
    started = time.perf_counter()
    mask_text(text)
    assert time.perf_counter() - started < 1.0
