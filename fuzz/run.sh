#!/usr/bin/env bash
# Runs the segment fuzzer for SECONDS (default 60) and removes its private /dev/shm directory
# afterwards, whatever happens. Needs `cargo install cargo-fuzz`.
set -u
cd "$(dirname "$0")/.."
secs=${1:-60}
RUSTC_BOOTSTRAP=1 cargo fuzz run segment -s none -- -max_total_time="$secs" -timeout=10
status=$?
rm -rf /dev/shm/shmem-fuzz-*
exit $status
