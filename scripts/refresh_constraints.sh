#!/usr/bin/env bash
# Refresh constraints.txt: resolve the newest versions pyproject.toml allows (with the test and
# distributed extras) in a throw-away venv, run the suite against them, and pin what was resolved.
#   scripts/refresh_constraints.sh          # writes constraints.txt when the suite passes
set -euo pipefail
cd "$(dirname "$0")/.."
venv=$(mktemp -d)/venv
python3 -m venv "$venv"
"$venv/bin/pip" install -q --disable-pip-version-check -e ".[test,distributed]"
"$venv/bin/python" -m pytest -q -p no:cacheprovider
{
  sed -n '1,/^# Resolved on/{/^# Resolved on/d;p}' constraints.txt
  echo "# Resolved on $(date +%Y-%m-%d) with Python $("$venv/bin/python" -c 'import platform; print(platform.python_version())')."
  "$venv/bin/pip" freeze --exclude-editable --disable-pip-version-check | grep -v '^#'
} > constraints.txt.new
mv constraints.txt.new constraints.txt
rm -rf "$(dirname "$venv")"
git --no-pager diff --stat constraints.txt || true
