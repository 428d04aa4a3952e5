"""char-rnn: Karpathy's character-level language models on charrnn_fast.LSTM.

The application layer: corpora, vocabulary, memory-mapped data, the CharRNN
model, training (single process or DDP), checkpoints, sampling and
visualisation. It imports the library (`charrnn_fast`), never the reverse.
Entry points: the `charrnn-fast` console script and `python -m charrnn_fast.charrnn`.
"""
