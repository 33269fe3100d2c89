"""Secrets never land: credentials are masked out of an audit record's content before it is written.

Public API
    mask_record(fields) -> (masked_fields, credential_masked)
        Masks the content fields of one record: the text fields `prompt`, `response` and the JSON fields
        `metadata`, `args`, `result` (any JSON value). Other keys are copied through untouched. The
        input is never mutated; containers in the result are new objects.
    mask_json(value) -> (masked_value, changed)      any JSON value (a bare string is masked as text)
    mask_text(text) -> (masked_text, changed)        secret-shaped substrings only
    is_secret_key(key) -> bool                       whether a JSON object key names a secret
    REDACTED = "[REDACTED]"; MaskingDepthError (a ValueError) for nesting beyond MAX_DEPTH.

`changed` / `credential_masked` is true when at least one value was actually replaced: a value that
already reads "[REDACTED]", an empty value or a placeholder ("****", "${DB_PASSWORD}", "<token>") is
left as it is, so masking a masked record again reports nothing.

1. Secret-like keys (JSON objects, any depth). A key is split into words on `-`, `_`, `.`, spaces and
   camelCase (`x-api-key`, `X_API_KEY` and `xApiKey` all give x/api/key; a trailing number is dropped:
   `password2`, `api_key_2`). It names a secret when
     - its joined words are a known name: password, passwd, pwd, passphrase, secret, client_secret,
       api_key, x-api-key, token, access/refresh/id/auth/session_token, auth, authorization, cookie,
       set-cookie, private_key, secret_key, access_key, credentials, creds, session_id, sessionid,
       jsessionid, otp, ...; or
     - its last word is token, secret(s), password(s), passwd, pwd, passphrase, credential(s), creds,
       cookie(s), auth or authorization (`githubToken`, `webhook_secret`, `basic_auth`), or a compound
       ending like that (`githubtoken`, `dbpassword`, `stripeapikey`); or
     - its last word is `key`/`keys` after a qualifier that is not a known benign one (`stripe_key`,
       `encryption_key`, `license_key`, `api_keys`); or
     - password, passphrase, secret or credential(s) appears anywhere in it (`password_hash`,
       `secret_key_base`).
   Deliberately NOT secret keys (their string values are still scanned for secret shapes, see 2):
     - counts and LLM vocabulary: `tokens`, `input_tokens`, `max_tokens`, `token_count`, `token_type`,
       `eos_token`, `pad_token`, and pagination cursors `next_token`, `page_token`, `NextToken`;
     - a bare `key`/`keys` (key/value lists) and benign qualified keys: `primary_key`, `sort_key`,
       `idempotency_key`, `cache_key`, `partition_key`, `public_key`, `publishable_key`, `object_key`;
     - words that merely contain the letters: `keyboard`, `monkey`, `author`, `oauth`, `passenger`,
       and `pass` on its own (a test verdict far more often than a password);
     - keys that describe a secret rather than hold it, whose last word is id, name, arn, type, count,
       length, policy, url, path, ref, prefix, expires, created, ... (`api_key_id`, `secret_name`,
       `password_length`, `token_prefix`, `auth_type`, `primary_key_column`).
   The value under a secret key becomes "[REDACTED]" whatever its type (a whole object under
   `credentials`, a list under `secrets`), except values that carry nothing: None, booleans, "", {},
   [] and placeholders. A small name/value object ({"name": "Authorization", "value": ...}, AWS tags
   {"Key": "db_password", "Value": ...}) whose name is a secret key has its value redacted too.
   In a list (command-line arguments), the item after a flag naming a secret (`--password`,
   `--api-key`, `-token`) is redacted. `PWD` holding an absolute path is the shell's working
   directory, not a password, and is kept.
2. Secret-shaped strings, in the text fields and in every string value at any depth (not in keys), are
   replaced in place, keeping the text around them (see `_RULES`): our keys aa_live_/aa_test_ and refresh
   tokens rt_ses_…; Stripe secret and restricted keys sk_/rk_ live/test and webhook secrets whsec_
   (publishable pk_ keys are public by design and kept); AWS access key ids (AKIA/ASIA/ABIA/ACCA + 16) and
   AWS secret keys labelled as such (aws_secret_access_key = ...); `Bearer <token>`; `Basic <base64 user:pass>`;
   Authorization and Cookie header values; GitHub ghp_/gho_/ghu_/ghs_/ghr_/github_pat_; GitLab
   glpat-; Slack xox?- tokens and hooks.slack.com webhook paths; OpenAI sk-/sk-proj-/sk-svcacct- and
   Anthropic sk-ant- keys; Hugging Face hf_; npm_; SendGrid SG.x.y; Google AIza keys; JWTs
   (eyJ.eyJ.sig); PEM private key blocks (an unterminated one is redacted to the end of the string);
   the password in scheme://user:password@host (the user is kept); and assignments in free text:
   `password=...`, `api_key: ...`, `"client_secret": "..."`, `?access_token=...`, `DB_PASSWORD=...`
   (only the value is replaced; `token_count=3` or `max_tokens: 5` are not assignments of a secret).

How it stays fast (and linear: hostile inputs are tested): the patterns are fixed and ours, precompiled,
without nested quantifiers. A string of up to 160 characters (most JSON values) is first checked against
one regex of every rule's trigger literals, and nothing else runs unless one is there. On longer strings
each rule begins with a literal (`_live_`, `eyJ`, `bearer`, `://`, ...) that the engine scans for about
as fast as str.find, rules needing a character (`_ - . : =`) are skipped when it is absent, and
case-insensitive rules run on a lower-cased copy of the same length so that spans map back one to one.
Assignments are found in one pass over the reversed lower-cased text, from each `:`/`=` back over the
keyword. All spans are merged and the string is rebuilt once. Key classification is cached.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Callable, Mapping
from functools import lru_cache
from typing import Any, NamedTuple

REDACTED = "[REDACTED]"
TEXT_FIELDS = ("prompt", "response")
JSON_FIELDS = ("metadata", "args", "result")
CONTENT_FIELDS = TEXT_FIELDS + JSON_FIELDS
# the other free text an agent supplies: secret-shaped substrings replaced as in the text fields
LABEL_FIELDS = ("action", "verb", "provider", "tenant_id")
# identifiers that records are matched by: one holding a secret is replaced whole by a digest of it, so that
# equal values stay equal (an idempotency key still deduplicates, a trace's spans still find each other)
IDENTIFIER_FIELDS = ("idempotency_key", "execution_id", "trace_id", "span_id", "parent_span_id")

# Ingest rejects nesting deeper than 32; masking tolerates twice that so the two never have to agree on
# how levels are counted, and refuses (rather than recursing without bound) beyond it.
MAX_DEPTH = 64


class MaskingDepthError(ValueError):
    """A JSON value nests deeper than MAX_DEPTH containers."""


# ---------------------------------------------------------------------------------------------------
# Secret-like keys


def _words(spaced: str) -> frozenset[str]:
    return frozenset(spaced.split())


_SECRET_NAMES = _words(
    """password passwd pwd passphrase secret secrets clientsecret apisecret apikey xapikey apitoken
    token accesstoken refreshtoken idtoken authtoken bearertoken sessiontoken xauthtoken xaccesstoken
    auth authorization proxyauthorization cookie cookies setcookie privatekey secretkey accesskey
    secretaccesskey credentials credential creds sessionid sessid jsessionid phpsessid sessionkey
    otp totp"""
)
# A last word that names the secret itself.
_SECRET_LAST = _words(
    """secret secrets password passwords passwd pwd passphrase credential credentials creds cookie
    cookies auth authorization"""
)
# Words that make any key secret, unless its last word is descriptive (_DESCRIPTIVE_LAST).
_SECRET_ANYWHERE = _words("password passwords passwd passphrase secret secrets credential credentials")
# `<qualifier>_token` that is a cursor or an LLM vocabulary/count term, not a credential.
_BENIGN_TOKEN = _words(
    """page next prev previous pagination continuation cursor sync eos bos pad unk sep cls mask stop
    start end special max min num total input output prompt completion reasoning cached cache cancel
    cancellation first last"""
)
# `<qualifier>_key` that is a database, cache or lookup key, or public by design.
_BENIGN_KEY = _words(
    """primary foreign sort partition hash range cache idempotency dedup dedupe deduplication public
    publishable object s3 bucket i18n translation lookup index group shard cluster row column table
    composite unique natural surrogate message event metric label tag config setting field attribute
    property dict map json cursor page state storage file path entity resource record item node list
    issue project hot sorting join lock queue stream topic redis option param parameter header prop
    react task job trace"""
)
# Compound last words without a separator (`githubtoken`): suffix -> qualifiers that keep it benign.
_COMPOUND_SUFFIXES: tuple[tuple[str, frozenset[str]], ...] = (
    ("token", _BENIGN_TOKEN),
    ("secret", frozenset()),
    ("password", frozenset()),
    ("passwd", frozenset()),
    ("apikey", frozenset()),
    ("privatekey", frozenset()),
    ("secretkey", frozenset()),
    ("accesskey", frozenset()),
    ("sessionid", frozenset()),
)
# Last words that describe a secret (its id, name, size, where it lives) rather than hold it.
_DESCRIPTIVE_LAST = _words(
    """id ids name names arn type types kind count length len size policy policies strength rules
    required enabled exists expiry expires expired expiration ttl at age changed updated created rotated
    version versions url uri endpoint path file ref location provider manager store source prefix
    suffix format scheme method mode status scope scopes label description limit limits usage field
    fields column columns env var variable"""
)
_WORD_RE = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")


@lru_cache(maxsize=8192)
def is_secret_key(key: str) -> bool:
    """Whether a JSON object key names a secret (rules in the module docstring)."""
    words = [w.lower() for w in _WORD_RE.findall(key)]
    while words and words[-1].isdigit():  # password2, api_key_2
        words.pop()
    if not words:
        return False
    if "".join(words) in _SECRET_NAMES:
        return True
    last = words[-1]
    prev = words[-2] if len(words) > 1 else ""
    if last in _DESCRIPTIVE_LAST:
        return False
    if last in ("key", "keys"):
        if prev and prev not in _BENIGN_KEY:
            return True
    elif last == "token":
        return prev not in _BENIGN_TOKEN
    elif last in _SECRET_LAST:
        return True
    if any(w in _SECRET_ANYWHERE for w in words):
        return True
    for suffix, benign in _COMPOUND_SUFFIXES:
        if last.endswith(suffix) and len(last) > len(suffix) and last[: -len(suffix)] not in benign:
            return True
    return False


_PLACEHOLDER_RE = re.compile(r"[*xX•#.\-]{1,64}|\$\{[^}]*\}|\{\{[^}]*\}\}|%\([^)]*\)s|<[^>]*>")
_NON_VALUES = _words("null none nil undefined true false")


def _is_placeholder(value: str) -> bool:
    # "****", "${DB_PASSWORD}", "{{ secrets.X }}", "<token>", "null": nothing secret to hide.
    return value == REDACTED or value.lower() in _NON_VALUES or _PLACEHOLDER_RE.fullmatch(value) is not None


def _is_working_directory(key: str, value: str) -> bool:
    return key.lower() == "pwd" and value.startswith(("/", "~"))


def _holds_secret(key: str, value: Any) -> bool:
    """Whether the value under a secret-like key has content worth redacting."""
    if value is None or isinstance(value, bool):
        return False
    if isinstance(value, str):
        return bool(value) and not _is_placeholder(value) and not _is_working_directory(key, value)
    if isinstance(value, Mapping | list | tuple):
        return len(value) > 0
    return True


# ---------------------------------------------------------------------------------------------------
# Secret-shaped strings

Span = tuple[int, int]


class _Rule(NamedTuple):
    name: str
    pattern: re.Pattern[str]
    lowered: bool  # run on the lower-cased text: the rule is case-insensitive
    needs: str  # skipped unless the text holds one of these characters ("" = always run)
    span: Callable[[re.Match[str], str], Span | None]  # (match, original text) -> span to redact or None
    triggers: tuple[str, ...]  # lower-case literals, one of which is inside any match


def _group(match: re.Match[str], text: str) -> Span | None:
    return match.span("s")


def _prefixed(prefixes: re.Pattern[str]) -> Callable[[re.Match[str], str], Span | None]:
    """A rule anchored on the `_` or `-` inside a token: the word before it must be a known prefix."""

    def span(match: re.Match[str], text: str) -> Span | None:
        start = match.start()
        # 8 characters hold the longest prefix plus the boundary character before it.
        found = prefixes.search(text, max(0, start - 8), start)
        if found is None:
            return None
        minimum = _MIN_BODY.get(found.group(), 0)
        if match.end() - start - 1 < minimum:
            return None
        return found.start(), match.end()

    return span


def _authorization(match: re.Match[str], text: str) -> Span | None:
    # Without a scheme word ("Authorization: required") only a long token with a digit is a credential.
    start, end = match.span("s")
    if match.group("scheme") is None and (end - start < 16 or not any(c.isdigit() for c in text[start:end])):
        return None
    return start, end


def _basic(match: re.Match[str], text: str) -> Span | None:
    # "Basic dXNlcjpwYXNz" is user:password in base64; "Basic authentication" is prose.
    start, end = match.span("s")
    value = text[start:end]
    try:
        decoded = base64.b64decode(value + "=" * (-len(value) % 4), validate=True)
    except (binascii.Error, ValueError):
        return None
    if b":" not in decoded or not all(32 <= byte < 127 for byte in decoded):
        return None
    return start, end


def _rule(
    name: str,
    triggers: str,
    pattern: str,
    needs: str = "",
    span: Callable[[re.Match[str], str], Span | None] = _group,
    *,
    lowered: bool = False,
) -> _Rule:
    return _Rule(name, re.compile(pattern, re.S), lowered, needs, span, tuple(triggers.split()))


# Minimum length after the `_`/`-` for prefixes whose tokens are long (shorter ones are prose or ids).
_MIN_BODY = dict.fromkeys(("gho", "ghp", "ghr", "ghs", "ghu", "hf"), 30) | {"npm": 36, "glpat": 20, "sk": 20}
_TOKEN68 = "[a-z0-9._~+/-]"  # bearer token characters (RFC 6750), on lower-cased text

# Each pattern starts with a literal so that the engine scans for it as fast as str.find and tries the
# rest only where it occurs. A boundary that belongs before the literal is a lookbehind placed right after
# it (`eyJ(?<![A-Za-z0-9_-]eyJ)`), and token families are anchored on their `_` or `-` and check the
# prefix afterwards. A match consumes its whole run of token characters, so scanning stays linear.
_RULES: tuple[_Rule, ...] = (
    _rule(
        "pem_private_key",
        "-----begin",
        r"(?P<s>-----BEGIN[A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----"
        r"(?:.*?-----END[A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----|.*))",
        "-",
    ),
    # aa_live_/aa_test_ (ours), sk_/rk_ live/test (Stripe secret and restricted keys)
    _rule(
        "agentrail_stripe_key",
        "_live_ _test_",
        r"_(?:live|test)_[A-Za-z0-9_-]{16,}",
        "_",
        _prefixed(re.compile(r"(?<![A-Za-z0-9])(?:aa|sk|rk)\Z")),
    ),
    _rule(
        "github_fine_grained_token",
        "github_pat_",
        r"_pat_[A-Za-z0-9_]{30,}",
        "_",
        _prefixed(re.compile(r"(?<![A-Za-z0-9_])github\Z")),
    ),
    # whsec_ (Stripe webhook secret), ghp_/gho_/ghu_/ghs_/ghr_ (GitHub), hf_ (Hugging Face), npm_
    _rule(
        "underscore_token",
        "whsec_ ghp_ gho_ ghu_ ghs_ ghr_ hf_ npm_",
        r"_[A-Za-z0-9+/=]{16,}",
        "_",
        _prefixed(re.compile(r"(?<![A-Za-z0-9])whsec\Z|(?<![A-Za-z0-9_])(?:gh[pousr]|hf|npm)\Z")),
    ),
    # sk-, sk-proj-, sk-svcacct-, sk-ant-api03- (OpenAI, Anthropic), glpat- (GitLab), xox?- (Slack)
    _rule(
        "dash_token",
        "sk- glpat- xox",
        r"-[A-Za-z0-9_-]{10,}",
        "-",
        _prefixed(re.compile(r"(?<![A-Za-z0-9_-])(?:sk|glpat|xox[abposre])\Z")),
    ),
    # our refresh tokens (app/orgs/credentials.py): rt_<session id>.<generation>.<MAC>
    _rule(
        "agentrail_refresh_token",
        "rt_ses_",
        r"(?P<s>rt_ses_(?<![A-Za-z0-9_]rt_ses_)[A-Za-z0-9]{10,40}\.[0-9]{1,9}\.[A-Za-z0-9_-]{20,})",
        ".",
    ),
    _rule(
        "jwt",
        "eyj",
        r"(?P<s>eyJ(?<![A-Za-z0-9_-]eyJ)[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*)",
        ".",
    ),
    _rule(
        "sendgrid_key",
        "sg.",
        r"(?P<s>SG\.(?<![A-Za-z0-9_-]SG\.)[A-Za-z0-9_-]{16,}\.[A-Za-z0-9_-]{16,})",
        ".",
    ),
    _rule(
        "slack_webhook",
        "hooks.slack.com",
        r"hooks\.slack\.com/(?:services|workflows|triggers)/(?P<s>[A-Za-z0-9_/-]{8,})",
        ".",
    ),
    # AIza… (Google API key), AKIA/ASIA/ABIA/ACCA… (AWS access key id)
    _rule(
        "google_or_aws_key_id",
        "aiza akia asia abia acca",
        r"(?P<s>A(?<![A-Za-z0-9_-]A)(?:Iza[A-Za-z0-9_-]{35}(?![A-Za-z0-9_-])"
        r"|(?:KIA|SIA|BIA|CCA)[A-Z0-9]{16}(?![A-Za-z0-9])))",
    ),
    # 40 base64 characters are only an AWS secret key when labelled as one.
    _rule(
        "aws_secret_key",
        "aws",
        r"aws[a-z0-9_ .-]{0,24}?secret[a-z0-9_ .-]{0,24}?[\\\"' \t:=>]{1,8}"
        r"(?P<s>[a-z0-9/+]{40})(?![a-z0-9/+=])",
        lowered=True,
    ),
    # A bearer token has a digit somewhere or is long: "bearer of bad news" is prose.
    _rule(
        "bearer_token",
        "bearer",
        r"bearer(?<![a-z0-9]bearer)[ \t]+(?P<s>(?:(?=" + _TOKEN68 + r"{0,1024}[0-9])" + _TOKEN68 + r"{8,}|"
        r"" + _TOKEN68 + r"{24,})=*)",
        lowered=True,
    ),
    _rule(
        "basic_credentials",
        "basic",
        r"basic(?<![a-z0-9]basic)[ \t]+(?P<s>[a-z0-9+/]{8,}={0,2})(?![a-z0-9+/=])",
        span=_basic,
        lowered=True,
    ),
    _rule(
        "authorization_header",
        "authorization",
        r"authorization(?<![a-z0-9]authorization)\\?[\"']?[ \t]*[:=][ \t]*\\?[\"']?"
        r"(?:(?P<scheme>basic|bearer|token|digest|negotiate|apikey)[ \t]+)?(?P<s>[^\s\"'\\,]+)",
        ":=",
        _authorization,
        lowered=True,
    ),
    # Cookie headers hold several name=value pairs: the rest of the line (or the quoted string) goes.
    _rule(
        "cookie_header",
        "cookie",
        r"cookie(?<![a-z0-9]cookie)\\?[\"']?[ \t]*[:=][ \t]*\\?[\"']?(?P<s>[^\s\"'\\][^\r\n\"'\\]*)",
        ":=",
        lowered=True,
    ),
    # scheme://user:password@host keeps the user; a raw `@` in the password runs to the last one.
    _rule("url_password", "://", r"://[^\s:/?#@\"'<>\\]*:(?P<s>[^\s/?#\"'<>\\]+)@", ":"),
)

# Assignments in free text: password=…, "api_key": "…", DB_PASSWORD: …, ?access_token=… The keyword
# must end right before the separator, so `token_count=3` and `max_tokens: 5` are not assignments.
# Because keywords end at the separator, one regex over the REVERSED lower-cased text, starting at each
# `:`/`=` and reading the keyword backwards, finds them all in a single pass (a forward alternation of
# keywords would be tried at every position).
_ASSIGNMENT_KEYWORDS = [
    *("password", "passwd", "passphrase", "secret", "token", "credential", "credentials"),
    *(f"{word}{sep}key" for word in ("secret", "api", "access", "private", "signing") for sep in "_-"),
    *("secretkey", "apikey", "accesskey", "privatekey", "signingkey"),
]
# Only as whole words: `bypass=`, `compass:`, `oauth:` and `author=` assign nothing secret.
_ASSIGNMENT_WORDS = ("pass", "pwd", "auth")
_ASSIGNMENT_TRIGGERS = ("pass", "pwd", "auth", "secret", "key", "token", "credential")
_ASSIGNMENT_BACKWARDS = re.compile(
    r"[:=][ \t]*[\"']?\\?(?P<k>"
    + "|".join(
        [re.escape(k[::-1]) for k in sorted(set(_ASSIGNMENT_KEYWORDS), key=len, reverse=True)]
        + [re.escape(k[::-1]) + "(?![a-z])" for k in _ASSIGNMENT_WORDS]
    )
    + ")"
)
_ASSIGNMENT_VALUE = re.compile(
    r"[=>]?[ \t]*(?:\\?\"(?P<s1>[^\"\\\r\n]+)|\\?'(?P<s2>[^'\\\r\n]+)"
    r"|(?P<s3>[^\s\"'\\,;&<>(){}\[\]=][^\s\"'\\,;&<>)}\]]*))"
)


def _assignment_spans(text: str, lowered: str, spans: list[Span]) -> None:
    size = len(text)
    # Separators inside a value already read are skipped: `password=password=…` stays linear.
    covered = 0
    for match in reversed(list(_ASSIGNMENT_BACKWARDS.finditer(lowered[::-1]))):
        separator = size - 1 - match.start()
        if separator < covered:
            continue
        value = _ASSIGNMENT_VALUE.match(text, separator + 1)
        if value is None:
            continue
        group = "s1" if value.group("s1") is not None else "s2" if value.group("s2") is not None else "s3"
        start, end = value.span(group)
        covered = end
        found = text[start:end]
        keyword = lowered[size - match.end("k") : size - match.start("k")]
        if _is_placeholder(found) or _is_working_directory(keyword, found):
            continue
        if found.startswith(("${", "{{", "%(")):  # a bare `${DB_PASSWORD}` stops at the brace
            continue
        spans.append((start, end))


_ASCII_LOWER = {c: c + 32 for c in range(ord("A"), ord("Z") + 1)}


def _lower(text: str) -> str:
    lowered = text.lower()
    if len(lowered) == len(text):
        return lowered
    # A few characters ("İ") grow when lower-cased; spans must map one to one, and our keywords are ASCII.
    return text.translate(_ASCII_LOWER)


def _trie_regex(words: set[str]) -> str:
    """One alternation of literals, factored by common prefixes (the engine tries far fewer branches)."""
    trie: dict[str, Any] = {}
    for word in words:
        node = trie
        for char in word:
            node = node.setdefault(char, {})
        node[""] = {}

    def build(node: dict[str, Any]) -> str:
        if "" in node:  # a shorter trigger already matches here
            return ""
        branches = [re.escape(char) + build(child) for char, child in sorted(node.items())]
        return branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"

    return build(trie)


# Short strings (most JSON values) are first checked against every trigger at once: one regex call
# instead of one per rule. On long strings the per-rule literal scans are cheaper than this alternation.
_GATE_MAX_LENGTH = 160
_GATE = re.compile(_trie_regex({t for rule in _RULES for t in rule.triggers} | set(_ASSIGNMENT_TRIGGERS)))


def _secret_spans(text: str) -> list[Span]:
    lowered = _lower(text)
    short = len(text) <= _GATE_MAX_LENGTH  # short strings have passed the gate in _mask_str
    spans: list[Span] = []
    for rule in _RULES:
        needs = rule.needs
        if needs and needs[0] not in text and (len(needs) == 1 or needs[1] not in text):
            continue
        if short:
            for trigger in rule.triggers:
                if trigger in lowered:
                    break
            else:
                continue
        for match in rule.pattern.finditer(lowered if rule.lowered else text):
            span = rule.span(match, text)
            if span is not None:
                spans.append(span)
    if (":" in text or "=" in text) and (not short or any(t in lowered for t in _ASSIGNMENT_TRIGGERS)):
        _assignment_spans(text, lowered, spans)
    return [span for span in spans if text[span[0] : span[1]] != REDACTED]


def _mask_str(text: str) -> str:
    """The masked string; the very same object when nothing was replaced."""
    # The gate only needs the lower-cased letters present, so plain lower() does here even where it
    # changes the length; _secret_spans re-lowers in a span-preserving way.
    if len(text) <= _GATE_MAX_LENGTH and _GATE.search(text.lower()) is None:
        return text
    spans = _secret_spans(text)
    if not spans:
        return text
    spans.sort()
    parts: list[str] = []
    cursor = 0
    current_start, current_end = spans[0]
    for start, end in spans[1:]:
        if start < current_end:  # overlapping findings (a JWT inside a Bearer header) are one secret
            current_end = max(current_end, end)
            continue
        parts += (text[cursor:current_start], REDACTED)
        cursor = current_end
        current_start, current_end = start, end
    parts += (text[cursor:current_start], REDACTED, text[current_end:])
    return "".join(parts)


def mask_text(text: str) -> tuple[str, bool]:
    """Replace secret-shaped substrings of `text` by "[REDACTED]"; return (text, whether any were)."""
    out = _mask_str(text)
    return out, out is not text


def mask_identifier(value: str) -> tuple[str, bool]:
    """An identifier that holds a secret, replaced whole by `redacted-` and 32 hex digits of its SHA-256 (a
    secret-shaped value is long and random: its digest does not give it away); others unchanged."""
    if _mask_str(value) is value:
        return value, False
    return "redacted-" + hashlib.sha256(value.encode()).hexdigest()[:32], True


# ---------------------------------------------------------------------------------------------------
# JSON values

_PAIR_NAME_KEYS = ("name", "key", "header", "parameter", "param")


def _pair_name(obj: Mapping[Any, Any]) -> str | None:
    """{"name": "Authorization", "value": ...}: the name, when the object is such a pair."""
    name = None
    has_value = False
    for key, item in obj.items():
        lowered = key.lower() if isinstance(key, str) else ""
        if lowered == "value":
            has_value = True
        elif lowered in _PAIR_NAME_KEYS and isinstance(item, str):
            name = item
    return name if has_value else None


_SCALARS = (int, float, bool, type(None))


def _walk(value: Any, depth: int, hit: list[bool]) -> Any:
    kind = type(value)
    if kind in _SCALARS:  # exact type checks first: abstract isinstance checks cost more than the rest
        return value
    if kind is str or isinstance(value, str):
        out = _mask_str(value)
        if out is not value:
            hit[0] = True
        return out
    if kind is dict or isinstance(value, Mapping):
        if depth >= MAX_DEPTH:
            raise MaskingDepthError(f"JSON nests deeper than {MAX_DEPTH} levels")
        secret_pair = False
        if 2 <= len(value) <= 4:
            name = _pair_name(value)
            secret_pair = name is not None and is_secret_key(name)
        result: dict[Any, Any] = {}
        for key, item in value.items():
            skey = key if type(key) is str else str(key)
            secret = is_secret_key(skey) or (secret_pair and skey.lower() == "value")
            if secret and _holds_secret(skey, item):
                result[key] = REDACTED
                hit[0] = True
            elif type(item) is str:  # the common case, inlined: a call per value is much of the cost
                out = _mask_str(item)
                if out is not item:
                    hit[0] = True
                result[key] = out
            elif type(item) in _SCALARS:
                result[key] = item
            else:
                result[key] = _walk(item, depth + 1, hit)
        return result
    if kind is list or isinstance(value, list | tuple):
        if depth >= MAX_DEPTH:
            raise MaskingDepthError(f"JSON nests deeper than {MAX_DEPTH} levels")
        items = [_walk(item, depth + 1, hit) for item in value]
        _mask_flag_values(items, hit)
        return items
    return value  # anything else passes unchanged


def _mask_flag_values(items: list[Any], hit: list[bool]) -> None:
    """Command-line arguments: the value after `--password`, `--api-key`, `-token`… is a secret."""
    for index in range(len(items) - 1):
        flag = items[index]
        if type(flag) is str and flag.startswith("-") and "=" not in flag and is_secret_key(flag.lstrip("-")):
            value = items[index + 1]
            if type(value) is str and not value.startswith("-") and _holds_secret(flag.lstrip("-"), value):
                items[index + 1] = REDACTED
                hit[0] = True


def mask_json(value: Any) -> tuple[Any, bool]:
    """Mask any JSON value (objects, lists, scalars; a string is masked as text). Returns (copy, changed)."""
    hit = [False]
    out = _walk(value, 0, hit)
    return out, hit[0]


def mask_record(fields: Mapping[str, Any]) -> tuple[dict[str, Any], bool]:
    """Mask `prompt`, `response`, `metadata`, `args` and `result` of one record, the secret-shaped parts of
    its labels (LABEL_FIELDS) and its identifiers that hold a secret (IDENTIFIER_FIELDS, see mask_identifier).

    Returns a new dict with every key of `fields` (other keys copied as they are) and
    `credential_masked`: whether anything was replaced.
    """
    hit = [False]
    out = dict(fields)
    for name in CONTENT_FIELDS:
        if out.get(name) is not None:
            out[name] = _walk(out[name], 0, hit)
    for name in LABEL_FIELDS:
        value = out.get(name)
        if type(value) is str:
            masked = _mask_str(value)
            if masked is not value:
                out[name], hit[0] = masked, True
    for name in IDENTIFIER_FIELDS:
        value = out.get(name)
        if type(value) is str:
            out[name], changed = mask_identifier(value)
            hit[0] = hit[0] or changed
    return out, hit[0]
