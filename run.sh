#!/usr/bin/env bash
# The main job, set-up included: prepare the complete works of Shakespeare,
# train a char-rnn on charrnn_fast.LSTM, and sample from it.
# On a CPU: the default recipe of `charrnn-fast train` (docs/charrnn.md: "The default recipe"),
# 6 minutes of training. On a GPU: 3 x 512, bf16 (not yet run on a GPU).
# Running it again resumes the same run (nothing is overwritten).
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"

[ -f data/shakespeare/vocab.json ] || charrnn-fast prepare shakespeare

if python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  ckpt=cv/shakespeare_gpu
  args=(--rnn_size 512 --num_layers 3 --dropout 0.25 --batch_size 128 --seq_length 100
        --max_epochs 20 --eval_val_every 1000 --device cuda --dtype bfloat16)
else
  ckpt=cv/shakespeare
  args=(--device cpu)  # everything else: the defaults, measured for this budget
fi
if [ -f "$ckpt/last.pt" ]; then
  charrnn-fast train --checkpoint_dir "$ckpt" --resume "${args[@]}"
else
  charrnn-fast train --data_dir data/shakespeare --checkpoint_dir "$ckpt" "${args[@]}"
fi
charrnn-fast sample "$ckpt" -n 1000 --temperature 0.8 --prime "ROMEO:" --seed 1
