"""a portal session holds the consent key wrapped for it (docs/portal.md, Key custody)

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30 16:20:00

Idempotent, like 0003 and 0004. Sessions opened before have no wrap: their changes open the sealed key, as before.
"""

import sqlalchemy as sa
from alembic import op


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    inspector = sa.inspect(op.get_bind())
    if 'consent_key_wrap' not in {column['name'] for column in inspector.get_columns('portalsession')}:
        op.add_column('portalsession', sa.Column('consent_key_wrap', sa.LargeBinary(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('portalsession') as batch_op:
        batch_op.drop_column('consent_key_wrap')
