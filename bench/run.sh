#!/usr/bin/env bash
# make bench (being written); see bench/README.md.
set -euo pipefail
echo "bench: not written yet" >&2
exit 1
