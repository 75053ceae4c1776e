#!/usr/bin/env bash
# tied.sh PARENT_PID CLEANUP_DIR CMD...: runs CMD and ends it when PARENT_PID exits (a test binary
# that is killed or simply returns), then removes CLEANUP_DIR (may be empty). Test processes never
# outlive the tests that started them. PARENT_PID 0 means "no parent": run until stopped (`up`).
# When CMD dies by itself, CLEANUP_DIR is kept: it holds the logs that say why.
parent="$1" cleanup="$2"
shift 2
"$@" &
child=$!
stop() {
  kill -TERM "$child" 2>/dev/null
  for _ in $(seq 1 20); do kill -0 "$child" 2>/dev/null || break; sleep 0.5; done
  kill -KILL "$child" 2>/dev/null
  wait "$child" 2>/dev/null
  [ -n "$cleanup" ] && rm -rf "$cleanup"
  exit 0
}
trap stop TERM INT HUP
alive() { [ "$parent" = 0 ] || kill -0 "$parent" 2>/dev/null; }
while alive && kill -0 "$child" 2>/dev/null; do sleep 1 & wait $!; done
kill -0 "$child" 2>/dev/null || cleanup=""
stop
