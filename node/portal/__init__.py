"""The patient portal each hospital node serves (FastAPI): enrolment, login, studies, consent, rounds.

See docs/portal.md. `create_app` in node/portal/app.py builds the application.
"""
