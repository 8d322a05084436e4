#!/usr/bin/env bash
# Set up a fresh machine: system packages (bubblewrap for the code sandbox, Prometheus for the operator
# tests), a virtualenv in .venv, and MiMo Serve with its SDK installed editable.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}

need_apt=()
command -v bwrap >/dev/null || need_apt+=(bubblewrap)
command -v prometheus >/dev/null || need_apt+=(prometheus)
command -v promtool >/dev/null || need_apt+=(prometheus)
command -v g++ >/dev/null || need_apt+=(g++)
command -v chromium >/dev/null || need_apt+=(chromium)  # headless: the load-test report test renders its page
if ((${#need_apt[@]})); then
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
    echo "setup: installing ${need_apt[*]} with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
  else
    echo "setup: please install these Debian packages: ${need_apt[*]}" >&2
  fi
fi

[[ -x $VENV/bin/python ]] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
# torch first and pinned: 2.13.0 is the CPU build on this project's machines (never a multi-GB CUDA wheel).
"$VENV/bin/python" -m pip install -q "torch==2.13.0"
"$VENV/bin/python" -m pip install -q -e sdk/python -e ".[dev,torch]"
echo "setup: done ($("$VENV/bin/python" --version), $("$VENV/bin/mimo-serve" --help >/dev/null && echo mimo-serve ok))"
