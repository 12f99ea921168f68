"""The console's routers, by resource: session, studies, runs, activity (JSON API) and pages (HTML)."""
