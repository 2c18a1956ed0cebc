#!/bin/bash
# Two multi_worker processes on 127.0.0.1 beside one process: demo preset,
# 3 epochs x 20 steps, global batch 8; prints each run's last-epoch time.
# Run from the repository root after `make demo` wrote data/synthetic.
set -e
out=${1:-/tmp/mw_bench}
rm -rf $out; mkdir -p $out
S="--set train.epochs=3 --set train.steps_per_epoch=20 --set data.val_json="
keras-solo train --config training/demo.yaml $S --out $out/one > $out/one.log 2>&1
for k in 0 1; do
  TF_CONFIG="{\"cluster\":{\"worker\":[\"127.0.0.1:23516\",\"127.0.0.1:23517\"]},\"task\":{\"type\":\"worker\",\"index\":$k}}" \
    keras-solo train --config training/demo.yaml $S --set train.strategy=multi_worker --out $out/two > $out/two_$k.log 2>&1 &
done
wait
for f in one two_0; do echo "$f: $(grep -o '20/20 - [0-9.]*s' $out/$f.log | tail -1) (last epoch, 20 steps x 8 images)"; done
