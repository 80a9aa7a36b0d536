#!/bin/bash
# A sweep on SLURM through Hydra's submitit launcher (conf/hydra/launcher/slurm.yaml): one SLURM job
# per configuration, submitted from the login node; this command returns when all jobs finished.
#   scripts/slurm/sweep.sh gpu method=sltt,bptt seed=0,1,2 data=cifar10
set -euo pipefail
PARTITION=${1:?usage: scripts/slurm/sweep.sh <partition> [overrides...]}
shift
exec "${PY:-.venv/bin/python}" src/train.py -m hydra/launcher=slurm hydra.launcher.partition="$PARTITION" \
  trainer=ddp trainer.devices="${DEVICES:-4}" resume=auto "$@"
