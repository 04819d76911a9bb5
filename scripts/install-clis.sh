#!/usr/bin/env bash
# Install the agent CLIs agentfleet drives (claude, opencode) at the versions pinned in
# tools/package-lock.json, into a project-local folder: never a global install.
#
# Usage: scripts/install-clis.sh [TOOLS_DIR]
#   TOOLS_DIR defaults to $AGENTFLEET_TOOLS_DIR, else .agentfleet/tools
#
# Idempotent: a second run with the same lock file changes nothing and needs no network.
# Both packages' postinstall steps only copy the native binary out of a platform package
# that npm itself installed from the registry; nothing is fetched when an agent runs.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="${1:-${AGENTFLEET_TOOLS_DIR:-$root/.agentfleet/tools}}"
stamp="$dest/.installed-lock.sha256"

if ! command -v npm >/dev/null 2>&1; then
    echo "install-clis: npm is needed (Node.js 20 or newer)" >&2
    exit 1
fi

mkdir -p "$dest"
want="$(sha256sum "$root/tools/package-lock.json" | cut -d' ' -f1)"
if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" \
      && -x "$dest/node_modules/.bin/claude" && -x "$dest/node_modules/.bin/opencode" ]]; then
    echo "install-clis: already installed in $dest"
    exit 0
fi

cp "$root/tools/package.json" "$root/tools/package-lock.json" "$dest/"
# `npm install` rather than `npm ci`: the lock records only the platform packages the
# registry served for this OS, and `npm ci` refuses a lock that lacks the other
# platforms' optional dependencies. Versions and integrity still come from the lock.
npm install --prefix "$dest" --no-save --no-audit --no-fund --loglevel=error

"$dest/node_modules/.bin/claude" --version
"$dest/node_modules/.bin/opencode" --version
echo "$want" >"$stamp"
echo "install-clis: installed into $dest"
