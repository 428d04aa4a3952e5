"""Triton kernels of the LSTM recurrence, installed as charrnn_fast.kernels."""
