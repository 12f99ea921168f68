"""baseline: the node database as create_all made it

Revision ID: 0001
Revises: 
Create Date: 2026-11-30 09:15:48.834555
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op


revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('consentrelay',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('account_id', sa.Integer(), nullable=False),
    sa.Column('study_id', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('action', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('status', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('block', sa.Integer(), nullable=True),
    sa.Column('tx_hash', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.Column('reason', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.Column('failure_status', sa.Integer(), nullable=True),
    sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('finished_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    sa.Column('pseudonym', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.Column('nonce', sa.Integer(), nullable=True),
    sa.Column('deadline', sa.Integer(), nullable=True),
    sa.Column('valid_from', sa.Integer(), nullable=True),
    sa.Column('valid_until', sa.Integer(), nullable=True),
    sa.Column('signature', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('waiting', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('consentrelay', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_consentrelay_account_id'), ['account_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_consentrelay_status'), ['status'], unique=False)

    op.create_table('devicecookie',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('token_hash', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('account_id', sa.Integer(), nullable=False),
    sa.Column('expires_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('devicecookie', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_devicecookie_account_id'), ['account_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_devicecookie_token_hash'), ['token_hash'], unique=True)

    op.create_table('enrolmentcode',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('code_hash', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('record_number', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('expires_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('used_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('enrolmentcode', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_enrolmentcode_code_hash'), ['code_hash'], unique=True)
        batch_op.create_index(batch_op.f('ix_enrolmentcode_record_number'), ['record_number'], unique=False)

    op.create_table('loginfailure',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('kind', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('subject', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('loginfailure', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_loginfailure_at'), ['at'], unique=False)
        batch_op.create_index(batch_op.f('ix_loginfailure_kind'), ['kind'], unique=False)
        batch_op.create_index(batch_op.f('ix_loginfailure_subject'), ['subject'], unique=False)

    op.create_table('patient',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('record_number', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('pseudonym', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('consent_key', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.Column('cohort', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('kind', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('source', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('clinical', sa.LargeBinary(), nullable=False),
    sa.Column('imported_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('patient', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_patient_cohort'), ['cohort'], unique=False)
        batch_op.create_index(batch_op.f('ix_patient_kind'), ['kind'], unique=False)
        batch_op.create_index(batch_op.f('ix_patient_pseudonym'), ['pseudonym'], unique=True)
        batch_op.create_index(batch_op.f('ix_patient_record_number'), ['record_number'], unique=True)

    op.create_table('portalaccount',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('username', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('record_number', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('pseudonym', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('consent_address', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('key_custody', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('password_salt', sa.LargeBinary(), nullable=False),
    sa.Column('password_hash', sa.LargeBinary(), nullable=False),
    sa.Column('key_salt', sa.LargeBinary(), nullable=False),
    sa.Column('sealed_key', sa.LargeBinary(), nullable=False),
    sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('portalaccount', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_portalaccount_pseudonym'), ['pseudonym'], unique=True)
        batch_op.create_index(batch_op.f('ix_portalaccount_record_number'), ['record_number'], unique=True)
        batch_op.create_index(batch_op.f('ix_portalaccount_username'), ['username'], unique=True)

    op.create_table('portalsession',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('token_hash', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('account_id', sa.Integer(), nullable=False),
    sa.Column('csrf_token', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('expires_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('last_seen', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('portalsession', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_portalsession_account_id'), ['account_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_portalsession_token_hash'), ['token_hash'], unique=True)

    op.create_table('privacyspend',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('study_id', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('round', sa.Integer(), nullable=False),
    sa.Column('release', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('value', sa.Float(), nullable=True),
    sa.Column('noise_multiplier', sa.Float(), nullable=False),
    sa.Column('sample_rate', sa.Float(), nullable=False),
    sa.Column('steps', sa.Integer(), nullable=False),
    sa.Column('delta', sa.Float(), nullable=False),
    sa.Column('epsilon_after', sa.Float(), nullable=False),
    sa.Column('recorded_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('privacyspend', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_privacyspend_study_id'), ['study_id'], unique=False)

    op.create_table('roundrefusal',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('study_id', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('round', sa.Integer(), nullable=False),
    sa.Column('phase', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('code', sa.Integer(), nullable=False),
    sa.Column('reason', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('recorded_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('roundrefusal', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_roundrefusal_study_id'), ['study_id'], unique=False)

    op.create_table('roundusage',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('study_id', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('round', sa.Integer(), nullable=False),
    sa.Column('phase', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('block', sa.Integer(), nullable=False),
    sa.Column('commitment', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('pseudonyms', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('recorded_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('status', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('roundusage', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_roundusage_status'), ['status'], unique=False)
        batch_op.create_index(batch_op.f('ix_roundusage_study_id'), ['study_id'], unique=False)

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

    op.create_table('patientsource',
    sa.Column('pseudonym', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('identifier_system', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('provenance', sa.LargeBinary(), nullable=True),
    sa.Column('updated_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['pseudonym'], ['patient.pseudonym'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('pseudonym')
    )


def downgrade() -> None:
    op.drop_table('patientsource')
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
    with op.batch_alter_table('roundusage', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_roundusage_study_id'))
        batch_op.drop_index(batch_op.f('ix_roundusage_status'))

    op.drop_table('roundusage')
    with op.batch_alter_table('roundrefusal', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_roundrefusal_study_id'))

    op.drop_table('roundrefusal')
    with op.batch_alter_table('privacyspend', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_privacyspend_study_id'))

    op.drop_table('privacyspend')
    with op.batch_alter_table('portalsession', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_portalsession_token_hash'))
        batch_op.drop_index(batch_op.f('ix_portalsession_account_id'))

    op.drop_table('portalsession')
    with op.batch_alter_table('portalaccount', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_portalaccount_username'))
        batch_op.drop_index(batch_op.f('ix_portalaccount_record_number'))
        batch_op.drop_index(batch_op.f('ix_portalaccount_pseudonym'))

    op.drop_table('portalaccount')
    with op.batch_alter_table('patient', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_patient_record_number'))
        batch_op.drop_index(batch_op.f('ix_patient_pseudonym'))
        batch_op.drop_index(batch_op.f('ix_patient_kind'))
        batch_op.drop_index(batch_op.f('ix_patient_cohort'))

    op.drop_table('patient')
    with op.batch_alter_table('loginfailure', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_loginfailure_subject'))
        batch_op.drop_index(batch_op.f('ix_loginfailure_kind'))
        batch_op.drop_index(batch_op.f('ix_loginfailure_at'))

    op.drop_table('loginfailure')
    with op.batch_alter_table('enrolmentcode', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_enrolmentcode_record_number'))
        batch_op.drop_index(batch_op.f('ix_enrolmentcode_code_hash'))

    op.drop_table('enrolmentcode')
    with op.batch_alter_table('devicecookie', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_devicecookie_token_hash'))
        batch_op.drop_index(batch_op.f('ix_devicecookie_account_id'))

    op.drop_table('devicecookie')
    with op.batch_alter_table('consentrelay', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_consentrelay_status'))
        batch_op.drop_index(batch_op.f('ix_consentrelay_account_id'))

    op.drop_table('consentrelay')
