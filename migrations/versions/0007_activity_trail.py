"""activity trail: actor and target names, user agent, checksum; immutable like audit records

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("activity_events", sa.Column("actor_name", sqlmodel.sql.sqltypes.AutoString(length=200)))
    op.add_column("activity_events", sa.Column("actor_email", sqlmodel.sql.sqltypes.AutoString(length=320)))
    op.add_column("activity_events", sa.Column("target_name", sqlmodel.sql.sqltypes.AutoString(length=200)))
    op.add_column("activity_events", sa.Column("user_agent", sqlmodel.sql.sqltypes.AutoString(length=300)))
    op.add_column("activity_events", sa.Column("checksum", sqlmodel.sql.sqltypes.AutoString(length=80)))
    op.create_index("ix_activity_events_org_target", "activity_events", ["org_id", "target_type", "target_id"])
    op.create_index("ix_activity_events_org_actor", "activity_events", ["org_id", "actor_id", "occurred_at"])
    # the function comes from 0003 (audit records)
    op.execute(
        "CREATE TRIGGER activity_events_immutable BEFORE UPDATE OR DELETE ON activity_events "
        "FOR EACH ROW EXECUTE FUNCTION agentrail_reject_audit_change()"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS activity_events_immutable ON activity_events")
    op.drop_index("ix_activity_events_org_actor", table_name="activity_events")
    op.drop_index("ix_activity_events_org_target", table_name="activity_events")
    for column in ("checksum", "user_agent", "target_name", "actor_email", "actor_name"):
        op.drop_column("activity_events", column)
