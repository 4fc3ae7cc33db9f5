#!/usr/bin/env bash
# Mutation check of the test suite: plants each deliberate fault of
# tests/mutation/faults/ in a scratch copy of the source, rebuilds it
# incrementally, runs the tests the fault names and reports whether they
# caught it (at least one failed). The product's code has no fault switches:
# every fault is a small patch applied to the copy, then reverted.
#
# Usage: tests/mutation/run.sh [FAULT ...]     (default: every fault)
#   DSV3_MUTATION_DIR  scratch directory (default: build-mutation/ here, git-ignored)
#
# The first run builds the copy from scratch (minutes); later runs rebuild
# only what each fault touches. Exit status 0 when every fault was caught.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
work=${DSV3_MUTATION_DIR:-$root/build-mutation}
src=$work/src
bld=$work/build
jobs=${DSV3_JOBS:-2}

faults=()
if (($#)); then
  for name in "$@"; do faults+=("$root/tests/mutation/faults/${name%.patch}.patch"); done
else
  faults=("$root"/tests/mutation/faults/*.patch)
fi
for f in "${faults[@]}"; do
  [ -f "$f" ] || { echo "mutation: no fault $f" >&2; exit 2; }
done

# A fresh copy of the tracked and new files (mtimes kept, so the scratch
# build only recompiles what changed since the last run); files deleted
# from the tree since then are deleted from the copy too.
mkdir -p "$src"
files=$(cd "$root" && git ls-files --cached --others --exclude-standard | sort)
(cd "$src" && find . -type f | sed 's|^\./||' | sort) | comm -23 - <(echo "$files") |
  (cd "$src" && xargs -r -d '\n' rm -f)
(cd "$root" && echo "$files" | tr '\n' '\0' | tar --null -T - -cf -) | tar -xf - -C "$src"
if [ ! -f "$bld/build.ninja" ]; then
  cmake -G Ninja -S "$src" -B "$bld" -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_C_COMPILER=clang-22 -DCMAKE_CXX_COMPILER=clang++-22 -DLLVM_USE_LINKER=lld >/dev/null
fi
echo "mutation: building the unmutated copy in $bld"
ninja -C "$bld" -j"$jobs" >"$work/build.log" || { tail -20 "$work/build.log"; exit 2; }

caught=0 missed=0 broken=0
# A fault still applied when the script stops (Ctrl-C, an error) is
# reverted, so the next run's baseline is the unmutated tree.
applied=""
revert() {
  if [ -n "$applied" ]; then
    (cd "$src" && patch -p1 -R -s --no-backup-if-mismatch <"$applied") || true
    applied=""
  fi
}
trap revert EXIT
printf '%-30s %-8s %s\n' fault result "failing tests"
for f in "${faults[@]}"; do
  name=$(basename "$f" .patch)
  tests=$(sed -n 's/^# tests: //p' "$f")
  if ! (cd "$src" && patch -p1 -s --dry-run --no-backup-if-mismatch <"$f" >/dev/null); then
    printf '%-30s %-8s %s\n' "$name" BROKEN "(the patch no longer applies to the tree)"
    broken=$((broken + 1))
    continue
  fi
  (cd "$src" && patch -p1 -s --no-backup-if-mismatch <"$f")
  applied=$f
  # A fresh compile cache: a mutated compiler must not reuse objects
  # compiled by the unmutated one.
  export DSV3C_CACHE_DIR=$work/cache-$name
  rm -rf "$DSV3C_CACHE_DIR"
  if ! ninja -C "$bld" -j"$jobs" >"$work/$name.build.log" 2>&1; then
    result=BROKEN failing="(does not build: $work/$name.build.log)"
    broken=$((broken + 1))
  elif ctest --test-dir "$bld" -R "$tests" -j"$jobs" --output-on-failure \
      >"$work/$name.log" 2>&1; then
    result=MISSED failing="(all of '$tests' passed: $work/$name.log)"
    missed=$((missed + 1))
  else
    result=caught
    # gtest names from ctest's summary; for lit, the failing test files.
    failing=$( (sed -n 's/^[[:space:]]*[0-9]* - \([^ ]*\) .*/\1/p' "$work/$name.log" | grep -v '^lit$'
                sed -n 's/^FAIL: DSV3 :: \([^ ]*\).*/lit:\1/p' "$work/$name.log") | sort -u | tr '\n' ' ')
    caught=$((caught + 1))
  fi
  revert
  printf '%-30s %-8s %s\n' "$name" "$result" "$failing"
done
ninja -C "$bld" -j"$jobs" >"$work/build.log"
echo "mutation: $caught caught, $missed missed, $broken did not build (of ${#faults[@]})"
[ "$missed" -eq 0 ] && [ "$broken" -eq 0 ]
