#!/usr/bin/env bash
# Submit an esper-ab sweep as a Ray Job.
#
#   RAY_ADDRESS=http://HEAD:8265 jobs/submit.sh search_spaces/g2_fairness_cnn.yaml \
#       --tracking-uri http://MLFLOW_HOST:5000
#
# PYTHON is the interpreter *on the cluster* that has esper-ab installed (default: the venv
# that cluster.yaml creates). Token auth: the client needs the cluster's token in
# ~/.ray/auth_token (or RAY_AUTH_TOKEN) and RAY_AUTH_MODE=token, which this script sets when
# a token is present and RAY_AUTH_MODE is unset.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ $# -lt 1 ]]; then
  echo "usage: RAY_ADDRESS=http://HEAD:8265 jobs/submit.sh SPACE.yaml [esper-ab sweep options]" >&2
  exit 2
fi
: "${RAY_ADDRESS:?set RAY_ADDRESS to the head's dashboard, e.g. http://127.0.0.1:8265}"
PYTHON="${PYTHON:-\$HOME/esper-ab/.venv/bin/python}"
if [[ -z "${RAY_AUTH_MODE:-}" ]] && { [[ -n "${RAY_AUTH_TOKEN:-}" ]] || [[ -f "${RAY_AUTH_TOKEN_PATH:-$HOME/.ray/auth_token}" ]]; }; then
  export RAY_AUTH_MODE=token
fi
RAY="${RAY:-ray}"
exec "$RAY" job submit --address "$RAY_ADDRESS" --working-dir . \
  --runtime-env jobs/runtime_env.yaml -- \
  "$PYTHON" jobs/sweep_job.py "$@"
