#!/usr/bin/env bash
# The Windows part of CI, run on this Linux machine under Wine (called from .ci/run; also runs
# on its own): installs what is missing (mingw, Wine, the Rust target), builds the
# ProcessPrng stand-in DLL into a fresh Wine prefix under target/, then runs the library's and
# the CLI's tests for x86_64-pc-windows-gnu under Wine (the library's unit tests,
# tests/windows.rs for segments and values, tests/map_procs.rs for maps, each across real
# processes) and their lints for that target, the seed's parent and child and a handle-API
# program against shmem.dll, and the C library's own tests (crates/shmem-ffi/tests/c, the
# portable ones, and tests/windows) built with mingw against shmem.dll's import library. Any
# failing step fails the script (set -e), with the step named.
set -euo pipefail
cd "$(dirname "$0")/.."

TARGET=x86_64-pc-windows-gnu
step() { echo "windows.sh: $*" >&2; }
trap 'echo "windows.sh: FAILED at line $LINENO: $BASH_COMMAND" >&2' ERR

need=()
command -v x86_64-w64-mingw32-gcc >/dev/null || need+=(gcc-mingw-w64-x86-64)
command -v x86_64-w64-mingw32-g++ >/dev/null || need+=(g++-mingw-w64-x86-64)
command -v wine >/dev/null || need+=(wine wine64)
if [ ${#need[@]} -gt 0 ]; then
  step "installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need[@]}"
fi
if ! rustup target list --installed | grep -qx "$TARGET"; then
  step "adding the Rust target $TARGET"
  rustup target add "$TARGET"
fi

# A fresh prefix per run, so nothing from an earlier run (or the user's ~/.wine) is reused.
target_dir=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
export WINEPREFIX="$target_dir/wine-prefix"
export WINEDEBUG=-all
export WINEDLLOVERRIDES="mscoree,mshtml="   # no Mono/Gecko install dialogs
unset DISPLAY
# A server left running for an earlier prefix at this path would outlive its deleted
# directory: stop it first.
if [ -d "$WINEPREFIX" ]; then
  wineserver -k 2>/dev/null || true
  wineserver -w 2>/dev/null || true # -k only asks; wait until it has exited
fi
rm -rf "$WINEPREFIX"
step "creating the Wine prefix $WINEPREFIX"
wineboot -i >/dev/null 2>&1
wineserver -w

# Rust's standard library imports ProcessPrng from bcryptprimitives.dll, which this Wine lacks.
step "building the ProcessPrng stand-in"
x86_64-w64-mingw32-gcc -O2 -shared -o "$WINEPREFIX/drive_c/windows/system32/bcryptprimitives.dll" \
  .ci/windows/bcryptprimitives.c .ci/windows/bcryptprimitives.def -ladvapi32

# One long-lived wineserver, so the tests never see Wine's own start-up as a leaked process.
wineserver -p
trap 'wineserver -k || true' EXIT

export CARGO_TARGET_X86_64_PC_WINDOWS_GNU_RUNNER=wine

# Wine now and then loses a program it was asked to start: a non-zero exit without a word
# from the program (once in about a dozen runs of this script here; never in 140 reruns of the
# same program since, idle or loaded). Such a run is reported with its exit code and run once
# more under a name of its own (NAME-again: the first may have left a segment), with Wine's
# error and exception channels on, so that the log says what happened; a second failure fails.
wine_again() { # PROGRAM NAME [ARGS...]
  local rc=0
  wine "$@" || rc=$?
  [ "$rc" -eq 0 ] && return 0
  echo "windows.sh: 'wine $*' exited with $rc; once more, with WINEDEBUG=err+seh" >&2
  local prog=$1 name=$2
  shift 2
  WINEDEBUG=err+seh wine "$prog" "$name-again" "$@"
}
step "cargo test -p named-shm --target $TARGET (under Wine)"
cargo test -p named-shm --target "$TARGET"
step "cargo clippy -p named-shm --target $TARGET"
cargo clippy -p named-shm --target "$TARGET" --all-targets -- -D warnings
step "cargo test -p shmem-cli --target $TARGET (under Wine)"
cargo test -p shmem-cli --target "$TARGET"
cargo clippy -p shmem-cli --target "$TARGET" --all-targets -- -D warnings

# The seed's DLL on its own platform: shmem.dll (DllMain attaches the default segment), and the
# seed's parent and child (examples/windows, the seed's code unchanged) built against it with
# mingw. The parent's child must read the string; a child run alone afterwards reads "" (the
# segment was freed with the parent's last handle).
step "shmem.dll and the seed's parent and child"
cargo clippy -p shmem-ffi --target "$TARGET" -- -D warnings
cargo build -p shmem-ffi --target "$TARGET"
lib="$target_dir/$TARGET/debug"
seed="$target_dir/seed-windows"
rm -rf "$seed"
mkdir -p "$seed"
cp "$lib/shmem.dll" "$seed/"
for p in parent child; do
  x86_64-w64-mingw32-g++ -w -o "$seed/$p.exe" "examples/windows/$p.cpp" -L"$lib" -lshmem
done
# SHMEM_COMPAT_NAME: a name of this run's own, so a parallel run cannot interfere.
export SHMEM_COMPAT_NAME="ci-seed-$$"
out=$(cd "$seed" && wine parent.exe child.exe | tr -d '\r')
echo "$out"
grep -qx "Child process read from shared memory: This is a test string" <<<"$out" || {
  echo "windows.sh: the seed's child did not read the parent's string" >&2
  exit 1
}
alone=$(cd "$seed" && wine child.exe | tr -d '\r')
[ "$alone" = "Child process read from shared memory: " ] || {
  echo "windows.sh: a child run alone read '$alone', not an empty string" >&2
  exit 1
}
unset SHMEM_COMPAT_NAME
# The handle API of the same DLL (examples/windows/handles.c checks every result itself).
# Persistent segments go to a directory of this run's own (a Windows path for the DLL).
segdir="$target_dir/windows-segments"
rm -rf "$segdir"
mkdir -p "$segdir"
SHMEM_DIR=$(winepath -w "$segdir" 2>/dev/null)
export SHMEM_DIR
x86_64-w64-mingw32-gcc -Wall -Wextra -Werror -o "$seed/handles.exe" examples/windows/handles.c \
  -Icrates/shmem-ffi/include -L"$lib" -lshmem
(cd "$seed" && wine_again handles.exe "ci-handles-$$")

# The C library's own tests: the portable programs of tests/c (the handle API's contract,
# persistent segments and shmem_unlink included; shmem_close racing the other calls; shmem_wake;
# the version) as they are, and tests/windows (two processes sharing a value, a holder
# terminated). Each must exit 0 with its line; afterwards nothing is left in the directory.
step "the C library's tests against shmem.dll"
ctests="$target_dir/ctests-windows"
rm -rf "$ctests"
mkdir -p "$ctests"
cp "$lib/shmem.dll" "$ctests/"
cbuild() { # NAME SOURCE
  x86_64-w64-mingw32-gcc -std=c11 -O1 -Wall -Wextra -Werror -o "$ctests/$1.exe" "$2" \
    -Icrates/shmem-ffi/include -Icrates/shmem-ffi/tests/c -L"$lib" -lshmem \
    -static-libgcc -Wl,-Bstatic -lpthread -Wl,-Bdynamic
}
crun() { # WANT PROGRAM ARGS...: runs it, checks its exit and its output's first line
  local want=$1
  shift
  local out
  out=$(cd "$ctests" && wine_again "$@" | tr -d '\r')
  [ "$(head -n1 <<<"$out")" = "$want" ] || {
    echo "windows.sh: $1 printed '$out', not '$want'" >&2
    exit 1
  }
}
for t in handles close_race wake version; do cbuild "$t" "crates/shmem-ffi/tests/c/$t.c"; done
cbuild two_processes crates/shmem-ffi/tests/windows/two_processes.c
SHMEM_COMPAT_NAME="ci-ctests-$$" crun ok handles.exe "ci-c-handles-$$"
crun "ok 50 rounds" close_race.exe "ci-c-race-$$" 50
crun "-12 wait cancelled by shmem_wake" wake.exe "ci-c-wake-$$"
crun "libshmem/$(sed -n 's/^version = "\(.*\)"/\1/p' crates/shmem-ffi/Cargo.toml)" version.exe "ci-c-version-$$"
crun ok two_processes.exe "ci-c-two-$$"
left=$(ls -A "$segdir")
[ -z "$left" ] || {
  echo "windows.sh: the C tests left files in $segdir: $left" >&2
  exit 1
}
unset SHMEM_DIR
step "all Windows checks passed"
