#!/usr/bin/env bash
# The test command: builds everything (warnings are errors) and runs the test suite.
# Extra arguments go to `dotnet test` (e.g. --filter "FullyQualifiedName~Model").
set -uo pipefail
cd "$(dirname "$0")"
dotnet build Reservoir.slnx -c Release -nologo -v q || exit 1
log=$(mktemp)
dotnet test tests/Reservoir.Tests -c Release --no-build -nologo --logger "console;verbosity=normal" "$@" 2>&1 | tee "$log" | grep -vE "^\s+Passed [A-Z]"
rc=${PIPESTATUS[0]}
passed=$(grep -E "^\s+Passed: +[0-9]+" "$log" | tail -1 | grep -oE "[0-9]+" || echo 0)
failed=$(grep -E "^\s+Failed: +[0-9]+" "$log" | tail -1 | grep -oE "[0-9]+" || echo 0)
[ "$rc" != 0 ] && [ "$failed" = 0 ] && failed=1
rm -f "$log"
echo "${passed:-0} passed, ${failed} failed"
exit "$rc"
