"""usage-log entries redacted when a patient is erased (issue 14 item 6, node/erase.py)

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30 13:10:00

Idempotent: a database from before migrations is brought to the baseline by create_all of today's models, which
may already hold the column. Existing entries name every patient they used: none redacted.
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    inspector = sa.inspect(op.get_bind())
    if 'redactions' not in {column['name'] for column in inspector.get_columns('roundusage')}:
        op.add_column('roundusage', sa.Column('redactions', sqlmodel.sql.sqltypes.AutoString(), nullable=False,
                                              server_default='[]'))


def downgrade() -> None:
    with op.batch_alter_table('roundusage') as batch_op:
        batch_op.drop_column('redactions')
