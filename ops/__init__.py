"""The operator's tools: the `questlog` CLI, the local stack runner, status, top, load, replay and the
fault suite. They may import anything; no stage imports them (`make lint` checks it).
"""
