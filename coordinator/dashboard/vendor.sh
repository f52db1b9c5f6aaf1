#!/usr/bin/env bash
# Copies the pinned front-end libraries (package-lock.json) into static/vendor, which the Go
# binary embeds: the dashboard never loads anything from a CDN. Run after changing package.json.
set -euo pipefail
cd "$(dirname "$0")"
npm ci --no-audit --no-fund
cp node_modules/chart.js/dist/chart.umd.js static/vendor/chart.umd.js
cp node_modules/chart.js/LICENSE.md static/vendor/chart.js-LICENSE.md
echo "vendored chart.js $(node -p 'require("./node_modules/chart.js/package.json").version')"
