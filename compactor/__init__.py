"""The compactor, a pipeline stage: table maintenance through Trino's Iceberg procedures
(`python -m compactor.compact`). Imports only the core (`questlog`).
"""
