"""The Ed25519 keys that sign digests: registering the configured one, rotation, and which keys to trust.

The private key is the process's (`Runtime.signer`: AGENTRAIL_AUDIT_SIGNING_KEY or the data folder's
`audit_signing_key`, app.runtime.secrets); its public half is registered in `audit_signing_keys` with the
time from which it signs. When the configured key changes, the new key is registered, the previous one's
validity ends, and the new key signs a statement about the previous one (`previous_key_signature`); when the
previous private key is at hand (`agentrail rotate-signing-key`), it also endorses the new one.

Trust: a verifier starts from a key it trusts by other means (the configured key for `agentrail verify`; the
auditor's `--public-key` for the offline verifier) and follows these statements in either direction; a key
in the table that no trusted key vouches for (one an attacker inserted) is not trusted.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlmodel import col, select

from app.audit.models import AuditDigest, AuditSigningKey
from app.db import AsyncSession, Database, global_text, utcnow
from app.integrity import Signer, key_statement, verify_ed25519

_LOCK = global_text("SELECT pg_advisory_xact_lock(1095062347, 0)")  # "AKEY": one registration at a time


class RetiredKeyError(RuntimeError):
    """The configured signing key was retired: a retired key does not sign again (configure a new one)."""


async def register(db: Database, signer: Signer, *, previous: Signer | None = None) -> AuditSigningKey:
    """Makes `signer` the current signing key (a no-op when it already is). `previous`: the current key's
    private half, to endorse the new one with (rotation)."""
    async with db.system_session() as session:
        current = (await session.exec(select(AuditSigningKey).where(col(AuditSigningKey.valid_to).is_(None)))).first()
        if current is not None and current.id == signer.key_id:
            return current
        await session.execute(_LOCK)
        current = (await session.exec(select(AuditSigningKey).where(col(AuditSigningKey.valid_to).is_(None)))).first()
        if current is not None and current.id == signer.key_id:
            return current
        if await session.get(AuditSigningKey, signer.key_id) is not None:
            raise RetiredKeyError(f"signing key {signer.key_id} was retired")
        now = utcnow().replace(microsecond=0)  # digests' created_at has whole seconds
        key = AuditSigningKey(id=signer.key_id, public_key=signer.public_key, valid_from=now)
        if current is not None:
            current.valid_to = now
            key.previous_key_id = current.id
            key.previous_key_signature = signer.sign(
                key_statement(current.id, current.public_key, current.valid_from, now)
            )
            if previous is not None and previous.key_id == current.id:
                key.endorsement = previous.sign(key_statement(key.id, key.public_key, key.valid_from, None))
            session.add(current)
        session.add(key)
        await session.commit()
        return key


async def list_keys(session: AsyncSession) -> list[AuditSigningKey]:
    """Every signing key, oldest first: what the well-known URL and GraphQL publish."""
    return list((await session.exec(select(AuditSigningKey).order_by(col(AuditSigningKey.valid_from)))).all())


@dataclass(frozen=True, slots=True)
class TrustedKey:
    key_id: str
    public_key: bytes
    valid_from: datetime | None  # None: unbounded (the root, when it is not registered yet)
    valid_to: datetime | None


def trust_from(rows: list[Any], root: bytes) -> dict[str, TrustedKey]:
    """The keys `root` vouches for, directly or through the rotation statements of `rows` (objects or dicts
    with AuditSigningKey's fields). Pure: the offline verifier has its own copy of these rules."""
    from app.integrity import key_id as id_of

    by_id = {r.id: r for r in rows}
    root_id = id_of(root)
    registered = by_id.get(root_id)
    if registered is not None and bytes(registered.public_key) != root:
        registered = None  # a row under the root's id with another key: not the root
    trusted = {
        root_id: TrustedKey(
            root_id,
            root,
            registered.valid_from if registered else None,
            registered.valid_to if registered else None,
        )
    }
    changed = True
    while changed:
        changed = False
        for row in rows:
            if row.id in trusted:
                continue
            public = bytes(row.public_key)
            if id_of(public) != row.id:
                continue
            # backwards: a trusted successor signed a statement about this key
            for successor in rows:
                if successor.previous_key_id == row.id and successor.id in trusted and successor.previous_key_signature:
                    statement = key_statement(row.id, public, row.valid_from, row.valid_to)
                    if verify_ed25519(trusted[successor.id].public_key, statement, successor.previous_key_signature):
                        trusted[row.id] = TrustedKey(row.id, public, row.valid_from, row.valid_to)
                        changed = True
                        break
            if row.id in trusted:
                continue
            # forwards: a trusted predecessor endorsed this key
            if row.previous_key_id in trusted and row.endorsement:
                statement = key_statement(row.id, public, row.valid_from, None)
                if verify_ed25519(trusted[row.previous_key_id].public_key, statement, row.endorsement):
                    trusted[row.id] = TrustedKey(row.id, public, row.valid_from, row.valid_to)
                    changed = True
    return trusted


async def trusted_keys(session: AsyncSession, root: bytes) -> dict[str, TrustedKey]:
    return trust_from(await list_keys(session), root)


def signature_problem(keys: dict[str, TrustedKey], digest: AuditDigest, payload: dict[str, Any]) -> str | None:
    """Why a version 2 digest's signature is not to be trusted, or None."""
    key = keys.get(digest.key_id or "")
    if key is None:
        return "a digest is signed by a key that no trusted key vouches for (the signing key was replaced)"
    if not verify_ed25519(key.public_key, payload, digest.signature):
        return "a digest's signature does not match its content"
    if (key.valid_from is not None and digest.created_at < key.valid_from) or (
        key.valid_to is not None and digest.created_at > key.valid_to
    ):
        return "a digest was signed outside its key's validity period"
    return None


def public_key_pem(public_key: bytes) -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    key = Ed25519PublicKey.from_public_bytes(public_key)
    pem = key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return pem.decode()


def key_fields(row: Any) -> dict[str, Any]:
    return {
        "key_id": row.id,
        "algorithm": "Ed25519",
        "public_key": base64.b64encode(bytes(row.public_key)).decode(),
        "public_key_pem": public_key_pem(bytes(row.public_key)),
        "valid_from": row.valid_from,
        "valid_to": row.valid_to,
        "previous_key_id": row.previous_key_id,
        "previous_key_signature": row.previous_key_signature,
        "endorsement": row.endorsement,
    }
