"""Pytest plugins: fixtures shared by the test modules, one module per backend."""
