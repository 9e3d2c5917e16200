"""Benchmarks of the network. ``make bench`` (``python -m bench``) runs every
``bench/bench_*.py`` module's ``main()`` and writes the figures to
docs/benchmarks.md. Never part of ``make test``."""
