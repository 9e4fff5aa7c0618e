"""Benchmarks (not tests): each module is runnable with ``python -m bench.<name>`` and prints one JSON
line of results followed by a short human summary. See README "Benchmarks"."""
