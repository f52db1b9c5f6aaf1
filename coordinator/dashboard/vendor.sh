#!/usr/bin/env bash
# Copies the pinned front-end libraries (package-lock.json) into static/vendor, which the Go
# binary embeds: the dashboard never loads anything from a CDN. Run after changing package.json.
set -euo pipefail
cd "$(dirname "$0")"
npm ci --no-audit --no-fund
cp node_modules/chart.js/dist/chart.umd.js static/vendor/chart.umd.js
cp node_modules/chart.js/LICENSE.md static/vendor/chart.js-LICENSE.md
# axe-core checks the dashboard's accessibility in the browser test; it is never served.
cp node_modules/axe-core/axe.min.js ../../deploy/e2e/testdata/axe.min.js
cp node_modules/axe-core/LICENSE ../../deploy/e2e/testdata/axe-core-LICENSE
echo "vendored axe-core $(node -p 'require("./node_modules/axe-core/package.json").version') for the browser test"
# hyparquet and fzstd read the Parquet downloads in the end-to-end tests (a reader not written
# here); they are never served.
js=../../deploy/e2e/testdata/js/node_modules
rm -rf "$js/hyparquet" "$js/fzstd" && mkdir -p "$js/hyparquet" "$js/fzstd"
cp -r node_modules/hyparquet/src node_modules/hyparquet/package.json node_modules/hyparquet/LICENSE "$js/hyparquet/"
cp -r node_modules/fzstd/esm node_modules/fzstd/package.json node_modules/fzstd/LICENSE "$js/fzstd/"
echo "vendored chart.js $(node -p 'require("./node_modules/chart.js/package.json").version')"
