#!/usr/bin/env bash
# Runs the ECG pipeline locally (FnApiRunner), setting up .venv with pinned dependencies first if needed.
#   ./run_local.sh                 demo: generate 600 TRAIN / 400 TEST synthetic records once, run the
#                                  pipeline, train the model and predict TEST, all in the demo folder
#   ./run_local.sh ARGS...         run `python -m beam_pipeline ARGS...` on your data, e.g.
#                                  ./run_local.sh --train_dir TRAIN --labels reference.txt --test_dir TEST --output_dir out
# The demo folder is outside the repository: $ECG_DEMO_DIR if set, else
# ${XDG_CACHE_HOME:-$HOME/.cache}/ecg-beam-pipeline/demo, holding data/ (the generated records) and
# output/ (TFRecords, model, predictions). ECG_DEMO_QUICK=1 runs the same steps on 40 TRAIN / 12 TEST
# records with 3 epochs, a smoke test of the installation (less than half the full demo's CPU time).
set -euo pipefail
repo="$(cd "$(dirname "$0")" && pwd)"
source "$repo/scripts/ensure_venv.sh"
if [[ $# -gt 0 ]]; then
  exec python -m beam_pipeline "$@"
fi

demo="${ECG_DEMO_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/ecg-beam-pipeline/demo}"
data="$demo/data" out="$demo/output"
if [[ "${ECG_DEMO_QUICK:-0}" == 1 ]]; then
  records=(--train 40 --test 12) training=(--epochs 3)
else
  records=(--train 600 --test 400) training=()
fi
python -m beam_pipeline.synthetic --output_dir "$data" "${records[@]}" --seed 0
python -m beam_pipeline --train_dir "$data/TRAIN" --labels "$data/reference.txt" --test_dir "$data/TEST" \
  --output_dir "$out/tfrecords"
if [[ -f "$repo/trainer/__main__.py" ]]; then
  python -m trainer --data_dir "$out/tfrecords" --model_dir "$out/model" ${training[@]+"${training[@]}"}
  python -m trainer.predict --model_dir "$out/model" --data_dir "$out/tfrecords" --split test \
    --output "$out/predictions.csv"
fi
echo
echo "Demo finished, in $demo (set ECG_DEMO_DIR to use another folder; delete it to start afresh):"
echo "  synthetic records (TRAIN/, TEST/, reference.txt, test_answers.txt): $data/"
echo "  TFRecords, transform graph, errors, run summary, report:            $out/tfrecords/"
[[ -d "$out/model" ]] && echo "  model (serving/, metrics.json, report/, logs/):                    $out/model/"
[[ -f "$out/predictions.csv" ]] && echo "  TEST predictions (record_id,probability,predicted_label,true_label): $out/predictions.csv"
for old in demo_data demo_output; do
  [[ -e "$repo/$old" ]] && echo "  (an earlier version wrote $repo/$old; it is no longer used)"
done
exit 0
