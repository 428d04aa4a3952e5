"""Benchmarks of charrnn_fast against cuDNN / nn.LSTM (run with `python bench/run.py`).

A package so that run.py's helpers (config, providers, check, timing, report,
compare) import as `bench.<module>` and never shadow an installed module.
"""
