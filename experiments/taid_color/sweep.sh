#!/usr/bin/env bash
# The colorization study's runs (experiments/taid_color/README.md), two at a time, one thread each:
#   bash experiments/taid_color/sweep.sh ../shared/data multirun/taid_color
# <out>/s<steps>/gray: plain gray + the decoder; <out>/s<steps>/taid_color_g<λ>: the learned gray;
# <out>/s<steps>_through_clamp/...: the same with the old quantiser (gradient through the clamp, no
# out-of-range penalty), to measure what the change does; <out>/s1000_small: 1 residual block per network.
set -euo pipefail
data=${1:?usage: sweep.sh DATA_ROOT OUT_DIR}
out=${2:?usage: sweep.sh DATA_ROOT OUT_DIR}
python=${PYTHON:-python}
jobs=()
for steps in 1000 4000; do
  common="experiment=color_study data_root=$data trainer.max_steps=$steps baseline=false"
  jobs+=("$common model=gray hydra.run.dir=$out/s$steps/gray")
  for g in 0.001 0.01 0.1 0.2 0.3 0.5 1; do
    jobs+=("$common model.loss_weights.guidance=$g hydra.run.dir=$out/s$steps/taid_color_g$g")
  done
  for g in 0.001 0.01 0.1; do
    jobs+=("$common model.loss_weights.guidance=$g model.quantize_through_clamp=true model.loss_weights.out_of_range=0 hydra.run.dir=$out/s${steps}_through_clamp/taid_color_g$g")
  done
done
# networks of about the independent reference's size (1 residual block each: 32k parameters, not 88k)
small="experiment=color_study data_root=$data baseline=false +upscaler.net.n_blocks=1"
jobs+=("$small model=gray hydra.run.dir=$out/s1000_small/gray")
for g in 0.1 0.2; do
  jobs+=("$small +model.downscaler.n_blocks=1 model.loss_weights.guidance=$g hydra.run.dir=$out/s1000_small/taid_color_g$g")
done
printf '%s\n' "${jobs[@]}" | OMP_NUM_THREADS=1 xargs -P "${JOBS:-2}" -I{} sh -c \
  "dir=\$(echo '{}' | sed 's/.*hydra.run.dir=//'); [ -f \$dir/results.json ] && exit 0; mkdir -p \$dir; $python -m taid_car.run {} > \$dir.log 2>&1 || echo failed: \$dir"
