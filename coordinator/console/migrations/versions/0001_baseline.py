"""baseline: the console database as create_all made it

Revision ID: 0001
Revises: 
Create Date: 2026-11-30 09:15:54.637434
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op


revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('console_run',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('study_id', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('rounds', sa.Integer(), nullable=False),
    sa.Column('launched_by', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('launched_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('flwr_run_id', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.Column('stopped_by', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.Column('stopped_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('console_run', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_console_run_name'), ['name'], unique=True)

    op.create_table('web_access_token',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('role', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('token_hash', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('revoked_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('web_access_token', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_web_access_token_name'), ['name'], unique=True)
        batch_op.create_index(batch_op.f('ix_web_access_token_token_hash'), ['token_hash'], unique=True)

    op.create_table('web_action_log',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('actor', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('role', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('action', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('target', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('outcome', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('detail', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('client', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('web_action_log', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_web_action_log_action'), ['action'], unique=False)
        batch_op.create_index(batch_op.f('ix_web_action_log_actor'), ['actor'], unique=False)
        batch_op.create_index(batch_op.f('ix_web_action_log_at'), ['at'], unique=False)

    op.create_table('web_session',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('token_hash', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('access_token_id', sa.Integer(), nullable=False),
    sa.Column('csrf_token', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('expires_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('last_seen', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('web_session', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_web_session_access_token_id'), ['access_token_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_web_session_token_hash'), ['token_hash'], unique=True)



def downgrade() -> None:
    with op.batch_alter_table('web_session', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_web_session_token_hash'))
        batch_op.drop_index(batch_op.f('ix_web_session_access_token_id'))

    op.drop_table('web_session')
    with op.batch_alter_table('web_action_log', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_web_action_log_at'))
        batch_op.drop_index(batch_op.f('ix_web_action_log_actor'))
        batch_op.drop_index(batch_op.f('ix_web_action_log_action'))

    op.drop_table('web_action_log')
    with op.batch_alter_table('web_access_token', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_web_access_token_token_hash'))
        batch_op.drop_index(batch_op.f('ix_web_access_token_name'))

    op.drop_table('web_access_token')
    with op.batch_alter_table('console_run', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_console_run_name'))

    op.drop_table('console_run')
