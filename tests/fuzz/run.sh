#!/usr/bin/env bash
# libFuzzer targets for libspendpol (being written); see tests/fuzz/README.md.
set -euo pipefail
echo "fuzz: no targets yet"
