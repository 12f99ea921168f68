"""persons linked across records, and the number of evaluations each study's account planned for (issue 13)

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30 10:40:00

Idempotent: a database from before migrations is brought to the baseline by create_all of today's models, which
may already hold both.
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    inspector = sa.inspect(op.get_bind())
    if 'person' not in {column['name'] for column in inspector.get_columns('patient')}:
        op.add_column('patient', sa.Column('person', sqlmodel.sql.sqltypes.AutoString(), nullable=True))
    if 'ix_patient_person' not in {index['name'] for index in inspector.get_indexes('patient')}:
        op.create_index('ix_patient_person', 'patient', ['person'], unique=False)
    if not inspector.has_table('evaluationplan'):
        op.create_table('evaluationplan',
        sa.Column('study_id', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column('evaluations', sa.Integer(), nullable=False),
        sa.Column('declared_in_round', sa.Integer(), nullable=False),
        sa.Column('recorded_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint('study_id')
        )


def downgrade() -> None:
    op.drop_table('evaluationplan')
    op.drop_index('ix_patient_person', table_name='patient')
    with op.batch_alter_table('patient') as batch_op:
        batch_op.drop_column('person')
