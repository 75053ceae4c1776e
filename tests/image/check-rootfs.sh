#!/usr/bin/env bash
# Checks the images' contents without a Docker engine: assembles each final root filesystem as the
# Dockerfile's last stages do — the binary, the shared libraries it links (what the distroless
# glibc base provides, plus libz for the agent), /etc/passwd with uid 65532 — with no shell and no
# fonts, then runs the binaries inside it under chroot as uid 65532. The operator renders figures
# there, proving the fonts are embedded.
#
# Usage: tests/image/check-rootfs.sh [TARGET_DIR]   (default: target/debug; builds nothing)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
bin_dir=${1:-target/debug}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

assemble() {
  local bin=$1 root=$work/$1
  mkdir -p "$root/usr/local/bin" "$root/etc" "$root/tmp" "$root/home/nonroot"
  chmod 1777 "$root/tmp"
  cp "$bin_dir/$bin" "$root/usr/local/bin/"
  # The dynamic loader and every library ldd names.
  for lib in $(ldd "$bin_dir/$bin" | awk '/=>/ {print $3} /ld-linux/ {print $1}'); do
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
  done
  printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$root/etc/passwd"
  echo "$root"
}

fail() { echo "image check FAILED: $*" >&2; exit 1; }

for bin in flmon-agent flmon-operator; do
  [ -x "$bin_dir/$bin" ] || fail "$bin_dir/$bin is not built (cargo build -p flmon-agent -p flmon-operator)"
  root=$(assemble "$bin")
  [ ! -e "$root/bin/sh" ] && [ ! -e "$root/usr/bin/sh" ] || fail "a shell got into the $bin root filesystem"
  find "$root" -name '*.ttf' -o -name '*.otf' -o -name 'fonts.conf' | grep -q . && fail "fonts in the $bin root filesystem"
  out=$(chroot --userspec=65532:65532 "$root" "/usr/local/bin/$bin" --version 2>&1) || fail "$bin does not run in its root filesystem: $out"
  echo "$bin runs as uid 65532 with no shell: $out"
done

# The operator renders the five figures and the report with no system fonts.
root=$work/flmon-operator
cat >"$root/tmp/server.json" <<'JSON'
{"schemaVersion": 1, "agent": {"pod": "fl-server", "uid": "u1", "role": "server"}, "nextSeq": 4, "oldestSeq": 1,
 "rounds": [
  {"seq": 1, "run_id": "r", "round": 1, "global_loss": 2.1, "global_accuracy": 0.41, "participants": 2, "expected_participants": 2, "duration_seconds": 12.5},
  {"seq": 2, "run_id": "r", "round": 2, "global_loss": 1.2, "global_accuracy": 0.72, "participants": 2, "expected_participants": 2, "duration_seconds": 11.0},
  {"seq": 3, "run_id": "r", "round": 3, "global_loss": 0.6, "global_accuracy": 0.88, "participants": 1, "expected_participants": 2, "duration_seconds": 14.0}]}
JSON
out=$(chroot --userspec=65532:65532 "$root" /usr/local/bin/flmon-operator render --history /tmp/server.json --out /tmp/out 2>&1) ||
  fail "flmon-operator render failed in its root filesystem: $out"
for f in training_progress.png training_progress.svg report.md; do
  [ -s "$root/tmp/out/$f" ] || fail "render wrote no $f in the root filesystem"
done
echo "flmon-operator rendered $(ls "$root/tmp/out" | wc -l) files with no system fonts"
