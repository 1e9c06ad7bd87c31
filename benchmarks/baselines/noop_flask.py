"""A do-nothing Flask app: the seed's route answers at once, POST /events reads the body and
answers 202, nothing is parsed or sent. Served like Questlog's collector (gunicorn, 2 workers x 8
threads), it is the ceiling of Flask on that server on this machine.

Run: gunicorn --bind 127.0.0.1:25002 --workers 2 --threads 8 benchmarks.baselines.noop_flask:app
"""

from __future__ import annotations

from flask import Flask, request

app = Flask(__name__)


@app.get("/purchase_a_sword")
def purchase_a_sword():
    return "Sword Purchased!\n"


@app.post("/events")
def events():
    request.get_data(cache=False)
    return '{"accepted": true}\n', 202, {"Content-Type": "application/json"}


@app.get("/healthz")
def healthz():
    return "ok\n"
