"""Benchmarks of fastinfl against the NumPy / SciPy / scikit-learn code a user would write."""
