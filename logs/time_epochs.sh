#!/bin/sh
# per-epoch wall time of each model on the default (synthetic) through `modalrec train`, 3 epochs, 1 thread
export PATH=/work/main/.venv/bin:$PATH PYTHONPATH=/work/wt-baselines/src OMP_NUM_THREADS=1 PYTHONDONTWRITEBYTECODE=1
for m in sasrec srgnn nova_pos fdsa unisrec difsr nova; do
  echo "== $m $(date +%s.%N)"
  python -u pipeline/train.py $m --params /tmp/params-timing-baselines.yaml 2>&1 | while IFS= read -r line; do echo "$(date +%s.%N) $line"; done | grep -v "it/s\|s/it" 
done
echo "== end $(date +%s.%N)"
