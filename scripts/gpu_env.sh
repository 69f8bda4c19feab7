# Sourced by the device-call scripts (gpu_multi_call.sh, gpu_control_call.sh), from the repository root with
# .device/ carried: unpacks the Unsloth bundle, points Python, the tokenizer and the model cache at it, and sets
# OUT (the results folder that comes back) and SP (torch's site-packages, for compileall).
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT" /tmp/site
tar xzf .device/unsloth-site.tgz -C /tmp/site
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 OUT \
  ASCIITUNE_TOKENIZER=$PWD/.device/smollm2-tokenizer ASCIITUNE_CACHE=/tmp/atcache
SP=$(python3 -c 'import os, torch; print(os.path.dirname(os.path.dirname(torch.__file__)))')
