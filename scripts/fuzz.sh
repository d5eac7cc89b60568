#!/usr/bin/env bash
# Fuzzes the parsers that read what a server or a config file sends (S3 XML, GCS JSON, RESP, YAML config, source
# URLs) with libFuzzer, each for a bounded time: FUZZ_SECONDS (default 20) per target. The committed corpus in
# Fuzz/corpus/<target>/ seeds each run; new inputs go to a temporary copy, crashes to Fuzz/artifacts/ (exit 1).
# Needs the toolchain's libclang_rt.fuzzer (Swift on Linux ships it). Usage: scripts/fuzz.sh [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/../Fuzz"
seconds=${FUZZ_SECONDS:-20}
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(FuzzS3XML FuzzGCSJSON FuzzRESP FuzzYAMLConfig FuzzSourceURL)

echo "==> building fuzz targets (-sanitize=fuzzer)"
swift build -Xswiftc -sanitize=fuzzer
bin=$(swift build -Xswiftc -sanitize=fuzzer --show-bin-path)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p artifacts
failed=0
for target in "${targets[@]}"; do
    cp -r "corpus/$target" "$work/$target"
    echo "==> fuzzing $target for ${seconds}s"
    if ! "$bin/$target" "$work/$target" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
        -print_final_stats=1 -artifact_prefix="artifacts/$target-" > "$work/$target.log" 2>&1; then
        echo "FAILED: $target (input in Fuzz/artifacts/, log follows)"
        tail -40 "$work/$target.log"
        failed=$((failed + 1))
    else
        grep -E "stat::number_of_executed_units|stat::peak_rss_mb" "$work/$target.log" | tr '\n' ' ' || true
        echo
    fi
done
# Not in the "N passed, N failed" shape: the test runner's own summary stays the one CI reads.
if [ "$failed" -eq 0 ]; then echo "fuzz: ${#targets[@]} targets ran ${seconds}s each, no crash"; exit 0; fi
echo "fuzz: $failed of ${#targets[@]} targets crashed"
exit 1
