"""`make bench`: every stage of Questlog against a baseline written in this directory, measured in
the same run on the same machine (shared machines are noisy: only the ratios travel).

Run: `make bench` (all cases, full size, within the budget of `benchmarks.context.SIZES`) or `make bench CASE=router`; underneath,
`python -m benchmarks --case all --size full`. See `python -m benchmarks --help`.
"""
