"""Benchmark suites; run with python -m benchmarks SUITE."""
