"""each patient's enrolment index on the consent registry, cached by the consent gate (issue 15, node/consent_gate.py)

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30 16:00:00

Idempotent: a database from before migrations is brought to the baseline by create_all of today's models, which
may already hold the columns. Existing patients have no index cached: the gate resolves it on its next read.
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    present = {column['name'] for column in sa.inspect(op.get_bind()).get_columns('patient')}
    if 'registry_index' not in present:
        op.add_column('patient', sa.Column('registry_index', sa.Integer(), nullable=True))
    if 'registry_index_of' not in present:
        op.add_column('patient', sa.Column('registry_index_of', sqlmodel.sql.sqltypes.AutoString(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('patient') as batch_op:
        batch_op.drop_column('registry_index_of')
        batch_op.drop_column('registry_index')
