#!/usr/bin/env bash
# The text language-model study (conf/experiment/text_lm.yaml, issue 17 item 5) in one GPU call, resumable: the six
# models (kda, gdn, mamba2, mla, mla_nope, hybrid_3to1) on data/text_lm/, lm-eval's offline tasks at the end of each
# run, then `python -m arena.report`; the sweep, report and packing are scripts/gpu_sweep.sh's (REPORT=1): runs and
# report in $OUT/text_lm_runs.tgz without the checkpoints (~0.4 GB a run at 22M parameters, past the device's 16 MiB
# a file), beside the report's Markdown and the sweep log.
# Each call runs until TIME_LIMIT; carry `results/runs/text_lm` (unpacked here from that archive) into the next call
# and the same command skips every finished run (config_hash, as scripts/gpu_sweep.sh does); a run TIME_LIMIT stopped
# has no checkpoint in the archive, so it starts again.
#   bash scripts/gpu_text_lm.sh                          # carry: .whl (hydra, lm-eval wheels) and data (the corpus)
#   N_JOBS=6 bash scripts/gpu_text_lm.sh                 # all six at once
#   EXTRA="train.steps=2000" bash scripts/gpu_text_lm.sh # more overrides
#   EXPERIMENT=text_lm_mini bash scripts/gpu_text_lm.sh  # the CPU mini end to end (tests/test_text_lm.py runs it)
# The corpus is built here (python scripts/make_text_lm_corpus.py: it needs apt-get, so not on the GPU machine) and
# carried; failing that the GPU call builds it from a carried data/cache/r-cran-janeaustenr_1.0.0-1_all.deb.
# Afterwards, here: tar xzf text_lm_runs.tgz; python -m arena.report results/runs/text_lm --out results/<date>_text_lm
set -uo pipefail
EXPERIMENT=${EXPERIMENT:-text_lm}  # text_lm | text_lm_mini
case "$EXPERIMENT" in
  text_lm) data=data/text_lm; source=austen ;;
  text_lm_mini) data=data/text_lm_mini; source=tiny_stories ;;
  *) echo "gpu_text_lm: EXPERIMENT=$EXPERIMENT must be text_lm or text_lm_mini" >&2; exit 2 ;;
esac
N_JOBS=${N_JOBS:-3}                # runs sharing the GPU as processes
EXTRA=${EXTRA:-}                   # more overrides
# seconds for the sweep: with the wheel install before (~30 s) and the report and packing after, the call stays
# within 9 minutes of the device tool's 10
TIME_LIMIT=${TIME_LIMIT:-420}
# shellcheck source=scripts/gpu_env.sh
. scripts/gpu_env.sh               # .whl/*.whl into /tmp/site, PYTHONPATH, the card and stack
if ls .whl/lm_eval/*.whl >/dev/null 2>&1; then  # lm-eval and what it needs beyond the GPU image (datasets, ...)
  python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target /tmp/site \
    .whl/lm_eval/*.whl 2>/dev/null
fi
export HF_DATASETS_OFFLINE=1 HF_HUB_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1
python3 -c 'import pyarrow, lm_eval, datasets; print("lm_eval", lm_eval.__version__, "datasets", datasets.__version__,
"pyarrow", pyarrow.__version__)' \
  || echo "gpu_text_lm: lm-eval does not import: the runs train and record lm_eval_error instead of scores"
if [ ! -f "$data/corpus.jsonl" ]; then
  python3 scripts/make_text_lm_corpus.py --source "$source" --out "$data" \
    || { echo "gpu_text_lm: no $data/corpus.jsonl and it cannot be built here: carry data" >&2; exit 2; }
fi
cat "$data/PROVENANCE.txt"
EXPERIMENT=$EXPERIMENT N_JOBS=$N_JOBS EXTRA=$EXTRA TIME_LIMIT=$TIME_LIMIT REPORT=1 bash scripts/gpu_sweep.sh
