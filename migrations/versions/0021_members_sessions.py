"""memberships, invitations, sign-in sessions, emailed tokens: a person may belong to several organisations

Sign-in sessions hold rotating refresh tokens (a MAC over id, generation and salt: only the salt is stored);
user tokens are single-use emailed tokens (password reset, email verification), stored hashed.

Users lose `org_id` and `role` to `memberships` (backfilled: one each, from the user's organisation and role);
`last_org_id` keeps where sign-in lands; `email_verified_at` (existing accounts count as verified).

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-03 14:30:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "memberships",
        sa.Column("id", sa.String(length=40), primary_key=True),
        sa.Column("org_id", sa.String(length=40), sa.ForeignKey("organizations.id"), nullable=False),
        sa.Column("user_id", sa.String(length=40), sa.ForeignKey("users.id"), nullable=False),
        sa.Column("role", sa.String(length=20), nullable=False),
        sa.Column("joined_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_active_at", sa.DateTime(timezone=True), nullable=True),
        sa.UniqueConstraint("org_id", "user_id", name="uq_memberships_org_user"),
    )
    op.create_index("ix_memberships_user_id", "memberships", ["user_id"])
    op.execute(
        "INSERT INTO memberships (id, org_id, user_id, role, joined_at)"
        " SELECT 'mem_' || substring(id from 5), org_id, id, role, created_at FROM users"
    )
    op.add_column("users", sa.Column("last_org_id", sa.String(length=40), nullable=True))
    op.add_column("users", sa.Column("email_verified_at", sa.DateTime(timezone=True), nullable=True))
    op.execute("UPDATE users SET last_org_id = org_id, email_verified_at = created_at")
    op.drop_index("ix_users_org_id", table_name="users")
    op.drop_column("users", "org_id")
    op.drop_column("users", "role")

    op.create_table(
        "invitations",
        sa.Column("id", sa.String(length=40), primary_key=True),
        sa.Column("org_id", sa.String(length=40), sa.ForeignKey("organizations.id"), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("role", sa.String(length=20), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False, unique=True),
        sa.Column("invited_by", sa.String(length=40), sa.ForeignKey("users.id"), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("accepted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("accepted_by", sa.String(length=40), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_invitations_org_id_created_at", "invitations", ["org_id", "created_at"])

    op.create_table(
        "sign_in_sessions",
        sa.Column("id", sa.String(length=40), primary_key=True),
        sa.Column("user_id", sa.String(length=40), sa.ForeignKey("users.id"), nullable=False),
        sa.Column("org_id", sa.String(length=40), sa.ForeignKey("organizations.id"), nullable=False),
        sa.Column("salt", sa.String(length=64), nullable=False),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_reason", sa.String(length=100), nullable=True),
        sa.Column("user_agent", sa.String(length=500), nullable=True),
        sa.Column("ip_address", sa.String(length=100), nullable=True),
        sa.Column("method", sa.String(length=20), nullable=False),
    )
    op.create_index("ix_sign_in_sessions_user_id", "sign_in_sessions", ["user_id", "created_at"])
    op.create_table(
        "user_tokens",
        sa.Column("id", sa.String(length=40), primary_key=True),
        sa.Column("user_id", sa.String(length=40), sa.ForeignKey("users.id"), nullable=False),
        sa.Column("purpose", sa.String(length=20), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False, unique=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_user_tokens_user_id", "user_tokens", ["user_id", "purpose"])


def downgrade() -> None:
    op.drop_table("user_tokens")
    op.drop_table("sign_in_sessions")
    op.drop_table("invitations")
    op.add_column("users", sa.Column("org_id", sa.String(length=40), nullable=True))
    op.add_column("users", sa.Column("role", sa.String(length=20), nullable=True))
    op.execute(
        "UPDATE users u SET org_id = m.org_id, role = m.role FROM (SELECT DISTINCT ON (user_id) user_id, org_id,"
        " role FROM memberships ORDER BY user_id, joined_at) m WHERE m.user_id = u.id"
    )
    op.execute("DELETE FROM users WHERE org_id IS NULL")
    op.alter_column("users", "org_id", nullable=False)
    op.alter_column("users", "role", nullable=False)
    op.create_foreign_key("users_org_id_fkey", "users", "organizations", ["org_id"], ["id"])
    op.create_index("ix_users_org_id", "users", ["org_id"])
    op.drop_column("users", "email_verified_at")
    op.drop_column("users", "last_org_id")
    op.drop_table("memberships")
