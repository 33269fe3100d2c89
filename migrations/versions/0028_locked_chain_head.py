"""locked chain head: one round trip for the chain step's lock and the head it reads

`agentrail_locked_chain_head(ns, org, stream)` takes the organisation's exclusive advisory lock of the stream
(the one sealing takes) and returns the chain head (chain_index, entry_hash) of `activity_events`, or of `audit_logs` (when retention removed
every record, the newest retention cut's: app.audit.retention).
The head is read by a statement of its own, inside the function, after the lock is granted: a VOLATILE function
takes a fresh snapshot for each statement, so it sees the commit of the writer it waited for (a head read by the
statement that waited would not, and two writers would fork the chain).

Revision ID: 0028
Revises: 0027
Create Date: 2026-12-04 18:55:00
"""

from alembic import op

revision = "0028"
down_revision = "0027"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE OR REPLACE FUNCTION agentrail_locked_chain_head(ns integer, org text, stream text)
        RETURNS TABLE (chain_index bigint, entry_hash bytea)
        LANGUAGE plpgsql VOLATILE AS $$
        #variable_conflict use_column
        BEGIN
            PERFORM pg_advisory_xact_lock(ns, hashtext(org));
            IF stream = 'activity' THEN
                RETURN QUERY SELECT e.chain_index, e.entry_hash FROM activity_events e
                    WHERE e.org_id = org ORDER BY e.chain_index DESC LIMIT 1;
            ELSE
                RETURN QUERY SELECT h.chain_index, h.entry_hash FROM (
                    (SELECT a.chain_index, a.entry_hash FROM audit_logs a
                     WHERE a.org_id = org ORDER BY a.chain_index DESC LIMIT 1)
                    UNION ALL
                    (SELECT c.through_index, decode(c.chain_head, 'hex') FROM audit_retention_cuts c
                     WHERE c.org_id = org ORDER BY c.sequence DESC LIMIT 1)
                ) AS h ORDER BY h.chain_index DESC LIMIT 1;
            END IF;
        END
        $$
        """
    )


def downgrade() -> None:
    op.execute("DROP FUNCTION IF EXISTS agentrail_locked_chain_head(integer, text, text)")
