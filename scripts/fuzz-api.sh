#!/usr/bin/env bash
# Fuzzes hearthd's control API with schemathesis, from the OpenAPI document hearthd serves.
#
# A real hearthd runs in a network namespace of its own (created here, never touching the
# host's network) with firecracker-sim as its VMM and a kernel and a root filesystem image
# imported, so creates succeed. schemathesis reaches its TCP listener (bearer token) on the
# namespace's loopback through `ip netns exec`, and runs the examples, coverage, fuzzing and
# stateful phases with every check. Meanwhile hearthd's health is polled once a second over
# its Unix socket. The script fails on any server error, any spec-conformance failure, any
# request that does not answer within the request timeout (a hang), a health probe that
# does not answer, or hearthd dying.
#
# Builds nothing: run `cargo build --workspace` first (or name the binaries, see below).
# Needs root (network namespaces), `ip`, `mkfs.ext4`, `curl` and schemathesis (`st`,
# `pip install schemathesis`).
#
# Environment (all optional):
#   HEARTH_BIN_DIR     where hearthd, hearthctl and firecracker-sim are (target/debug)
#   HEARTHD, HEARTHCTL, HEARTH_FC_SIM   each binary on its own
#   SCHEMATHESIS       the schemathesis command (st)
#   FUZZ_MAX_EXAMPLES  examples per operation and phase (default 200)
#   FUZZ_BUDGET        seconds schemathesis may run before the run counts as hung (400;
#                      23 operations since exec and archive, about 240 s on 2 busy cores)
#   FUZZ_SEED          schemathesis seed (default: random, printed)
#   FUZZ_KEEP          1 keeps the work directory (logs, reports) after the run
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${HEARTH_BIN_DIR:-$ROOT/target/debug}
HEARTHD=${HEARTHD:-$BIN/hearthd}
HEARTHCTL=${HEARTHCTL:-$BIN/hearthctl}
FC_SIM=${HEARTH_FC_SIM:-$BIN/firecracker-sim}
ST=${SCHEMATHESIS:-st}
MAX_EXAMPLES=${FUZZ_MAX_EXAMPLES:-200}
BUDGET=${FUZZ_BUDGET:-900} # one worker: ~2-6 min here, depending on the load
SEED=${FUZZ_SEED:-$((RANDOM * 32768 + RANDOM))}
# Longer than any answer but a long poll (whose timeout the config below bounds): a request
# still open after this is a hang.
REQUEST_TIMEOUT=20
PORT=7070

# Known, justified exclusions (keep this list short; each needs its reason):
#  1. GET /v1/events/stream is not fuzzed by schemathesis: an SSE stream never ends by
#     design, so every valid request would read until the request timeout and be reported
#     as a hang. It is probed below with curl instead (hostile `since`/`Last-Event-ID`,
#     bounded time, health checked after), and its parameters are tested in tests/api.
#  5. GET /v1/vms/{name}/execs/{id}/attach is a WebSocket (101, then a stream that lasts as
#     long as the session): plain HTTP requests can only be refused (400 by design), and a
#     real upgrade is a stream, not a request. It is probed below with curl (a non-upgrade
#     is 400, a bad id 400, an unknown VM 404), and tested with a WebSocket client in
#     tests/api/exec.rs.
#  6. VMs here run the simulator's own agent, which has no exec or file ops: those
#     operations answer 409 agent_unsupported (declared), never running anything. The
#     fuzzer must not drive a real agent: with the simulator that agent runs on this host.
#  7. The check ensure_resource_availability is off (turned off when two workers ran; one runs
#     now, see below, and turning it back on is untried): two workers ran stateful scenarios
#     against the same VM table and generated names collide (e.g. "2"), so one worker's
#     DELETE can land between the other's create and its next call: a right 404, reported as
#     "created resource not found" (seed 20261129; hearthd's log shows the delete in
#     between). A 404 after a real delete is tested in tests/api.
#  8. POST /v1/images/pull and /v1/images/import answer 200 and then stream NDJSON: a request
#     whose reference or archive turns out bad is an `error` event inside that 200, which the
#     checks read as "schema-violating request accepted", and a pull of a well-formed
#     reference would reach out to a real registry (this machine reaches none). They are
#     tested against a local registry in tests/oci_api.rs and tests/oci_registry.rs. (Not
#     fuzzed yet: making their up-front validation match the schema is open work.)
#  10. POST /v1/node/cordon and /v1/node/drain are not fuzzed: a cordon makes every later
#     create of the run answer 503 `cordoned` and a drain stops every VM, which would leave the
#     other operations nothing to reach. Both are tested in tests/api/policy.rs and
#     tests/e2e_policy.rs; GET /v1/node and uncordon are fuzzed.
#  11. POST /v1/vms/{name}/fork is fuzzed again (it was excluded from 2026-11-30: with seed
#     20261129 a fork answered 500 in `PUT /snapshot/load`, the restored drive's backing file
#     gone). Cause: the snapshot's state named the source VM's disk, which the load reopened.
#     Fixed in the snapshot and restore sagas (snapshots name their own disk checkpoint;
#     restores move onto their own disk before they run); tests/snapshots_disks.rs checks it.
EXCLUDE_PATHS=("/v1/events/stream" "/v1/vms/{name}/execs/{id}/attach" "/v1/images/pull" "/v1/images/import" "/v1/node/cordon" "/v1/node/drain")
#  2. The `timeout` of GET /v1/vms/{name}/wait is fixed to 1s: a long poll legitimately
#     lasts its timeout (up to 10m), which the request timeout would call a hang. The
#     timeout's parsing and bounds are unit-tested (src/api/query.rs).
#  3. createVm's `disk_size` comes from a list of sizes at least the imported rootfs's
#     (16 MiB): a smaller one is refused with 400 by design (issue 9: `invalid_field` naming
#     the range), and the schema cannot know image sizes. Too-small, unaligned and huge sizes
#     are tested in tests/api/hostile.rs; the negative phases still send any value.
#  4. positive_data_acceptance also accepts 422: a well-formed create naming an image that
#     does not exist (the generator cannot know the names) is refused as `unknown_image`,
#     and a well-formed import of a path that is not an image as `invalid_image`. 400 is
#     NOT accepted: schema-valid input the server refuses as invalid is a spec bug.

die() { echo "fuzz-api: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "needs root (network namespaces)"
for b in "$HEARTHD" "$HEARTHCTL" "$FC_SIM"; do
    [ -x "$b" ] || die "$b not found: run cargo build --workspace (or set HEARTH_BIN_DIR)"
done
command -v "$ST" >/dev/null || die "schemathesis ($ST) not found: pip install schemathesis"
for c in ip mkfs.ext4 curl; do command -v "$c" >/dev/null || die "$c not found"; done

NS=hearth-fuzz-$$
WORK=$(mktemp -d /tmp/hfz.XXXXXX) # short: VM socket paths must fit in 108 bytes
SOCK=$WORK/hearthd.sock
HEARTHD_PID=
POLL_PID=
STARTED=$(date +%s)

cleanup() {
    local rc=$?
    [ -n "$POLL_PID" ] && kill "$POLL_PID" 2>/dev/null && wait "$POLL_PID" 2>/dev/null
    if [ -n "$HEARTHD_PID" ] && kill -0 "$HEARTHD_PID" 2>/dev/null; then
        kill -TERM "$HEARTHD_PID" 2>/dev/null
        for _ in $(seq 50); do kill -0 "$HEARTHD_PID" 2>/dev/null || break; sleep 0.2; done
        kill -KILL "$HEARTHD_PID" 2>/dev/null || true
        wait "$HEARTHD_PID" 2>/dev/null || true
    fi
    # VMMs hearthd spawned and left (it adopts rather than kills them on exit).
    for p in /proc/[0-9]*; do
        if { tr '\0' ' ' <"$p/cmdline"; } 2>/dev/null | grep -q -- "$WORK/run/"; then
            kill -KILL "${p#/proc/}" 2>/dev/null || true
        fi
    done
    ip netns del "$NS" 2>/dev/null || true
    if [ "${FUZZ_KEEP:-0}" = 1 ] || [ "$rc" != 0 ]; then
        echo "fuzz-api: logs and reports kept in $WORK" >&2
    else
        rm -rf "$WORK"
    fi
    echo "fuzz-api: $(( $(date +%s) - STARTED ))s, exit $rc" >&2
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- the namespace: loopback for the API, and an egress (a veth pair whose both ends stay in
# the namespace, with a default route over it) so NAT has an interface; no traffic leaves.
ip netns add "$NS"
ip -n "$NS" link set lo up
ip -n "$NS" link add wan0 type veth peer name wan1
ip -n "$NS" addr add 10.98.0.1/24 dev wan0
ip -n "$NS" addr add 10.98.0.2/24 dev wan1
ip -n "$NS" link set wan0 up
ip -n "$NS" link set wan1 up
ip -n "$NS" route add default via 10.98.0.2 dev wan0

# --- images: the smallest x86-64 ELF vmlinux that Firecracker (and so the simulator, which
# checks kernels as its loader does) starts: one PT_LOAD at 1 MiB holding `cli; hlt; jmp`
# (the same image as firecracker_sim::kernel::minimal_vmlinux), and a real ext4.
python3 - "$WORK/vmlinux" <<'EOF'
import struct, sys
HIMEM, CODE_OFF, HALT = 0x100000, 0x1000, b"\xfa\xf4\xeb\xfd"
ehdr = b"\x7fELF\x02\x01\x01\x00" + bytes(8) + struct.pack(
    "<HHIQQQIHHHHHH", 2, 0x3E, 1, HIMEM, 64, 0, 0, 64, 56, 1, 0, 0, 0)
phdr = struct.pack("<IIQQQQQQ", 1, 5, CODE_OFF, HIMEM, HIMEM, len(HALT), len(HALT), 0x1000)
open(sys.argv[1], "wb").write((ehdr + phdr).ljust(CODE_OFF, b"\0") + HALT)
EOF
truncate -s 16M "$WORK/rootfs.ext4"
mkfs.ext4 -q -F "$WORK/rootfs.ext4"

TOKEN=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
cat >"$WORK/hearthd.toml" <<EOF
data_dir = "$WORK/data"
run_dir = "$WORK/run"
firecracker_bin = "$FC_SIM"
[network]
pool_size = 2
[dns]
upstreams = ["10.98.0.2:53"]
[api]
socket = "$SOCK"
tcp_listen = "127.0.0.1:$PORT"
token = "$TOKEN"
[vm]
ready_timeout_secs = 5
shutdown_grace_secs = 1
term_grace_secs = 1
EOF

ip netns exec "$NS" "$HEARTHD" --config "$WORK/hearthd.toml" --log-level info \
    </dev/null >/dev/null 2>"$WORK/hearthd.log" &
HEARTHD_PID=$!

health() { timeout 5 "$HEARTHCTL" --socket "$SOCK" health >/dev/null 2>&1; }
for _ in $(seq 150); do health && break; kill -0 "$HEARTHD_PID" 2>/dev/null || break; sleep 0.2; done
health || { tail -n 30 "$WORK/hearthd.log" >&2; die "hearthd did not come up"; }
"$HEARTHCTL" --socket "$SOCK" image import vmlinux "$WORK/vmlinux" --kind kernel >/dev/null
"$HEARTHCTL" --socket "$SOCK" image import base "$WORK/rootfs.ext4" --kind rootfs >/dev/null
# A few VMs, so operations on /v1/vms/{name} reach more than 404 (the fuzzer is told
# their names below; it may stop, restart or delete them like any other).
VMS=(fz-a fz-b fz-c fz-d)
for vm in "${VMS[@]}"; do
    "$HEARTHCTL" --socket "$SOCK" vm create "$vm" --kernel vmlinux --rootfs base >/dev/null
done
echo "fuzz-api: hearthd $HEARTHD_PID up in namespace $NS, images and ${#VMS[@]} VMs made; seed $SEED"

# --- health, polled throughout: any probe that fails or takes over 5 s is recorded.
(
    while sleep 1; do
        t0=$(date +%s%N)
        if ! health; then
            echo "$(date -u +%T) health probe failed or took > 5 s" >>"$WORK/health.failures"
        fi
        echo "$(( ($(date +%s%N) - t0) / 1000000 ))" >>"$WORK/health.ms"
    done
) &
POLL_PID=$!

# --- schemathesis configuration (see the exclusions above).
cat >"$WORK/schemathesis.toml" <<EOF
request-timeout = $REQUEST_TIMEOUT
headers = { Authorization = "Bearer $TOKEN" }

[dictionaries.kernels]
values = ["vmlinux"]
[dictionaries.rootfs]
values = ["base"]
[dictionaries.disks]
values = [16777216, 16777728, 1073741824, 8796093022208]
[dictionaries.vms]
values = [$(printf '"%s", ' "${VMS[@]}")"gone"]

[checks.positive_data_acceptance]
expected-statuses = ["2xx", "401", "404", "409", "422"]

# Schemathesis's defaults plus 413: a body past the 64 KiB JSON limit (e.g. more exec
# arguments than maxItems allows, each long) is refused for its size before its fields.
[checks.negative_data_rejection]
expected-statuses = ["400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428", "429"]

[[operations]]
include-operation-id = "createVm"
# Mostly name the imported images, so creates succeed and the stateful phase has VMs.
parameters = { "body.kernel" = { dictionary = "kernels", probability = 0.8 }, "body.rootfs" = { dictionary = "rootfs", probability = 0.8 }, "body.disk_size" = { dictionary = "disks", probability = 1.0 } }
# (9) 400 is accepted here: 'from_snapshot' excludes 'kernel' and 'rootfs', and 'init'
# depends on how the image was built; the CreateVm schema is also VmInfo's 'spec' (where a
# restored VM has all three), so it does not encode the exclusion. Those refusals are 400
# 'invalid_field' naming the field, tested in tests/api. Negative data is still checked.
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "401", "404", "409", "422"]

[[operations]]
include-operation-id = "waitVm"
parameters = { "query.timeout" = "1s", "path.name" = { dictionary = "vms", probability = 0.5 } }
# A long poll that runs out (408) or whose state can no longer come (409) is an answer,
# not a refusal.
checks.positive_data_acceptance.expected-statuses = ["2xx", "401", "404", "408", "409"]

[[operations]]
include-operation-id = ["createExec", "listExecs", "getExec", "signalExec", "putArchive", "getArchive", "statArchive"]
parameters = { "path.name" = { dictionary = "vms", probability = 0.5 } }

[[operations]]
include-operation-id = ["publishPort", "unpublishPort"]
parameters = { "path.name" = { dictionary = "vms", probability = 0.5 } }
# 400 is accepted here: a well-formed mapping can still be unusable (a host address that is
# unspecified, multicast or broadcast, or a host port another of the VM's ports takes), which
# no schema can encode; the refusal names the
# mapping (tests in proto/src/api_publish.rs, nat/publish.rs). Negative data is still checked.
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "401", "404", "409", "422"]

[[operations]]
include-operation-id = ["getVm", "deleteVm", "startVm", "stopVm", "killVm", "restartVm", "setNat", "listPorts"]
parameters = { "path.name" = { dictionary = "vms", probability = 0.5 } }
EOF

EXCLUDES=()
for p in "${EXCLUDE_PATHS[@]}"; do EXCLUDES+=(--exclude-path "$p"); done

rc=0
cd "$WORK" # schemathesis keeps its example database in the current directory
# One worker: with two threads, hypothesis's concurrent `ast.parse` calls trip a CPython 3.11
# bug ("AST constructor recursion depth mismatch", a SystemError schemathesis reports as a
# runtime error and a failed run), seen twice on this machine kind's Python 3.11.7.
timeout --kill-after=10 "$BUDGET" ip netns exec "$NS" "$ST" --config-file "$WORK/schemathesis.toml" run \
    "http://127.0.0.1:$PORT/v1/openapi.json" \
    --checks all \
    --exclude-checks ensure_resource_availability \
    --phases examples,coverage,fuzzing,stateful \
    --max-examples "$MAX_EXAMPLES" \
    --seed "$SEED" \
    --workers 1 \
    --no-color \
    --report junit --report-dir "$WORK/report" \
    "${EXCLUDES[@]}" || rc=$?
if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
    echo "fuzz-api: schemathesis did not finish within ${BUDGET}s: a hang" >&2
fi

# --- the excluded stream, probed by hand: hostile resume points answer 400 at once, a valid
# one streams; nothing may pin hearthd (health is checked right after).
stream_status() { # args: token, query, extra curl args...
    local token=$1 q=$2; shift 2
    ip netns exec "$NS" curl -s -o /dev/null -w '%{http_code}' --max-time 3 \
        -H "Authorization: Bearer $token" "$@" "http://127.0.0.1:$PORT/v1/events/stream$q" || true
}
for q in "?since=9223372036854775808" "?since=18446744073709551615" "?since=-1" "?since=x" "?nope=1"; do
    s=$(stream_status "$TOKEN" "$q")
    [ "$s" = 400 ] || { echo "fuzz-api: stream $q answered $s, not 400" >&2; rc=1; }
done
s=$(stream_status "$TOKEN" "" -H "Last-Event-ID: 9223372036854775808")
[ "$s" = 400 ] || { echo "fuzz-api: stream Last-Event-ID 2^63 answered $s, not 400" >&2; rc=1; }
s=$(stream_status "$TOKEN" "?since=0")
# curl gives up after 3 s of an open stream: the status was 200 all the same.
[ "$s" = 200 ] || { echo "fuzz-api: stream ?since=0 answered $s, not 200" >&2; rc=1; }
s=$(stream_status wrong "?since=0")
[ "$s" = 401 ] || { echo "fuzz-api: stream with a wrong token answered $s, not 401" >&2; rc=1; }

# --- the excluded WebSocket attach, probed by hand: anything but an upgrade is 400 at once.
attach_status() { # args: vm, id, extra curl args...
    local vm=$1 id=$2; shift 2
    ip netns exec "$NS" curl -s -o /dev/null -w '%{http_code}' --max-time 3 \
        -H "Authorization: Bearer $TOKEN" "$@" "http://127.0.0.1:$PORT/v1/vms/$vm/execs/$id/attach" || true
}
s=$(attach_status fz-a s1)
[ "$s" = 400 ] || { echo "fuzz-api: attach without an upgrade answered $s, not 400" >&2; rc=1; }
s=$(attach_status fz-a 'bad..id' -H "Connection: Upgrade" -H "Upgrade: websocket")
[ "$s" = 400 ] || { echo "fuzz-api: attach with a bad id answered $s, not 400" >&2; rc=1; }
s=$(attach_status gone s1 -H "Connection: Upgrade" -H "Upgrade: websocket" \
    -H "Sec-WebSocket-Version: 13" -H "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==" \
    -H "Sec-WebSocket-Protocol: v5.channel.k8s.io")
[ "$s" = 404 ] || { echo "fuzz-api: attach to an unknown VM answered $s, not 404" >&2; rc=1; }

sleep 1
kill "$POLL_PID" 2>/dev/null; wait "$POLL_PID" 2>/dev/null || true
POLL_PID=
health || { echo "fuzz-api: hearthd does not answer health after the run" >&2; rc=1; }
kill -0 "$HEARTHD_PID" 2>/dev/null || { echo "fuzz-api: hearthd died" >&2; rc=1; }
if [ -s "$WORK/health.failures" ]; then
    echo "fuzz-api: health probes failed during the run:" >&2
    cat "$WORK/health.failures" >&2
    rc=1
fi
probes=$(wc -l <"$WORK/health.ms" 2>/dev/null || echo 0)
worst=$(sort -n "$WORK/health.ms" 2>/dev/null | tail -n 1)
echo "fuzz-api: $probes health probes, slowest ${worst:-?} ms"
if grep -q '"level":"CRIT"\|panicked' "$WORK/hearthd.log"; then
    echo "fuzz-api: hearthd logged a panic or critical error:" >&2
    grep '"level":"CRIT"\|panicked' "$WORK/hearthd.log" | head -n 5 >&2
    rc=1
fi
[ "$rc" = 0 ] && echo "fuzz-api: passed (seed $SEED)" || echo "fuzz-api: FAILED (seed $SEED)" >&2
exit "$rc"
