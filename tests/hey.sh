#!/usr/bin/env bash
# The load test: `hey -n 10000 -c 200` against /rpc with the convert_time payload.
# The token comes from $JWT, or from jwt.txt in the working directory.
#   URL=http://127.0.0.1:4444/rpc N=10000 C=200 tests/hey.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
url=${URL:-http://127.0.0.1:4444/rpc}
token=${JWT:-}
if [ -z "$token" ] && [ -f jwt.txt ]; then token=$(tr -d '[:space:]' < jwt.txt); fi
if [ -z "$token" ]; then
    echo "hey.sh: set JWT or write a token to jwt.txt (aio-mcp-gateway token create --sub loadtest > jwt.txt)" >&2
    exit 2
fi
command -v hey >/dev/null || { echo "hey.sh: install hey first (apt-get install hey, or go install github.com/rakyll/hey@latest)" >&2; exit 2; }
exec hey -n "${N:-10000}" -c "${C:-200}" -m POST \
    -T application/json \
    -H "Authorization: Bearer $token" \
    -D "$here/hey/payload.json" \
    "$url"
