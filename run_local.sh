#!/usr/bin/env bash
# Runs the ECG pipeline locally (FnApiRunner), setting up .venv with pinned dependencies first if needed.
#   ./run_local.sh                 demo: generate 600 TRAIN / 400 TEST synthetic records once, run the
#                                  pipeline, train the model and predict TEST
#   ./run_local.sh ARGS...         run `python -m beam_pipeline ARGS...` on your data, e.g.
#                                  ./run_local.sh --train_dir TRAIN --labels reference.txt --test_dir TEST --output_dir out
set -euo pipefail
repo="$(cd "$(dirname "$0")" && pwd)"
source "$repo/scripts/ensure_venv.sh"
if [[ $# -gt 0 ]]; then
  exec python -m beam_pipeline "$@"
fi

data="$repo/demo_data" out="$repo/demo_output"
python -m beam_pipeline.synthetic --output_dir "$data" --train 600 --test 400 --seed 0
python -m beam_pipeline --train_dir "$data/TRAIN" --labels "$data/reference.txt" --test_dir "$data/TEST" \
  --output_dir "$out/tfrecords"
if [[ -f "$repo/trainer/__main__.py" ]]; then
  python -m trainer --data_dir "$out/tfrecords" --model_dir "$out/model"
  python -m trainer.predict --model_dir "$out/model" --data_dir "$out/tfrecords" --split test \
    --output "$out/predictions.csv"
fi
echo
echo "Demo finished. Results:"
echo "  TFRecords, transform graph, errors, run summary: $out/tfrecords/ (run_summary.json)"
[[ -d "$out/model" ]] && echo "  model (serving/, metrics.json, logs/):            $out/model/"
[[ -f "$out/predictions.csv" ]] && echo "  TEST predictions:                                $out/predictions.csv"
exit 0
