#!/usr/bin/env bash
# Formats the Swift sources with swift-format (in the toolchain) and the checked-in .swift-format;
# `scripts/format.sh --check` changes nothing and fails, naming each place, where a file is not formatted.
set -euo pipefail
cd "$(dirname "$0")/.."
paths=(Package.swift Sources Tests Fuzz)
if [ "${1:-}" = "--check" ]; then
    exec swift format lint --strict --recursive --parallel "${paths[@]}"
fi
exec swift format format --in-place --recursive --parallel "${paths[@]}"
