#!/bin/sh
# SR-GNN on Amazon Beauty under KDSR's protocol (ratio split; parity: batch 256, best test epoch per metric), 15 epochs cap
export PATH=/work/main/.venv/bin:$PATH PYTHONPATH=/work/wt-baselines/src OMP_NUM_THREADS=1 PYTHONDONTWRITEBYTECODE=1
P=logs/params-beauty-cap15.yaml
date -u
python -u pipeline/train.py srgnn_parity --dataset beauty --params $P 2>&1 | grep -v "it/s\|s/it" | while IFS= read -r l; do echo "$(date -u +%T) $l"; done
python -u pipeline/evaluate.py srgnn_parity --dataset beauty --params $P 2>&1 | tail -3
date -u
