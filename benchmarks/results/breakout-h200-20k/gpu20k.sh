#!/bin/bash
# Breakout variants of `wmrl run` at 20k steps side by side on one GPU, then `wmrl eval --agent`
# (probes, Spearman) on each; json/jsonl/logs tarred into $OUT. Stopped at $LIMIT s.
set -u
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
DEV=${DEV:-cuda}; BUDGET=${BUDGET:-20000}; LIMIT=${LIMIT:-280}; R=${R:-/tmp/g20}; OUT=${OUT:-/tmp/gpuout}
mkdir -p $R $OUT
T0=$(date +%s)
(nvidia-smi -L; python3 -c "import torch; print(torch.__version__, torch.cuda.is_available())") > $R/machine.txt 2>&1
run() { name=$1; shift; python3 -m wmrl run --config breakout --out $R/$name --budget $BUDGET --device $DEV --no-progress --set run.eval_episodes=4 "$@" > $R/$name.log 2>&1; echo "run exit $? at $(( $(date +%s) - T0 )) s" >> $R/$name.log
  python3 -m wmrl eval --agent $R/$name --episodes 1 > $R/$name-eval.log 2>&1; echo "eval exit $? at $(( $(date +%s) - T0 )) s" >> $R/$name-eval.log; }
KP=learner.model.latent=keypoints
run base &
run kp $KP &
run shift learner.shift=4 &
run mg learner.model_grad=true &
run mg-shift learner.model_grad=true learner.shift=4 &
run kp-shift $KP learner.shift=4 &
run base-s1 run.seed=1 &
run kp-s1 $KP run.seed=1 &
pack() { tar czf $OUT/.r.tgz -C $R --warning=no-file-changed --exclude='*.pt' --exclude='*.tmp' --exclude=data --exclude=encoder . ; mv $OUT/.r.tgz $OUT/runs20k.tgz; }
while [ -n "$(jobs -r)" ] && [ $(( $(date +%s) - T0 )) -lt $LIMIT ]; do pack; sleep 10; done
pkill -TERM -f -- "$R/"; sleep 2; pkill -KILL -f -- "$R/"; sleep 1
pack; for f in $R/*.log; do echo "== $f"; tail -n 2 $f; done
