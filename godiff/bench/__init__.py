"""Benchmarks: godiff and classical global optimisation on the same problems and budget."""
