"""Benchmarks of manybrains against its peers; ``python -m benchmarks.harness`` runs them all.

A package so that worker processes of every library (forkserver, spawn, loky, Dask) can import
the task functions by name from ``benchmarks.workloads``.
"""
