"""The Faust router: `events` -> `events.<event_type>` or `events.dlq`.

Run: `faust -A faust_app.app worker -l info`.
"""
