#!/usr/bin/env bash
# make ansible-test: the hotagent_patch role (rollout.yml) against three inventory hosts on the
# local connection, each with its own socket folder and its own demo server under the agent.
#  1. host_c's check fails after its switch: host_c is reverted (v1, generation 0), host_a and
#     host_b stay switched (v2, generation 1), the play fails.
#  2. the canary (host_a) fails: max_fail_percentage stops the rollout, host_b and host_c are
#     never touched.
set -euo pipefail
: "${AGENT:?}" "${HOTCTL:?}" "${DEMO_DIR:?}" "${VENV:?}"
AGENT=$(realpath "$AGENT") HOTCTL=$(realpath "$HOTCTL") DEMO_DIR=$(realpath "$DEMO_DIR")
VENV=$(realpath -m "$VENV")
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ANSIBLE_CORE=${ANSIBLE_CORE:-ansible-core==2.17.7}
if [[ ! -x $VENV/bin/ansible-playbook ]]; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "$ANSIBLE_CORE"
fi
WORK=$(mktemp -d "${TMPDIR:-/tmp}/hotagent-ansible.XXXXXX")
PIDS=()
cleanup() {
    local p
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
export ANSIBLE_LOCAL_TEMP=$WORK/ansible-tmp ANSIBLE_REMOTE_TEMP=$WORK/ansible-tmp
export ANSIBLE_NOCOLOR=1 ANSIBLE_RETRY_FILES_ENABLED=0 ANSIBLE_ROLES_PATH=$HERE/roles

fail() { echo "ansible-test: $*" >&2; exit 1; }

# start HOST: a demo server (linked against libgreet v1) under the agent, in HOST's socket folder.
declare -A PORT PID
start() {
    mkdir -m 700 -p "$WORK/$1/sockets"
    HOTAGENT_SOCKET_DIR=$WORK/$1/sockets LD_PRELOAD=$AGENT "$DEMO_DIR/server" 0 > "$WORK/$1/out" &
    PID[$1]=$!
    PIDS+=($!)
    local i
    for i in $(seq 200); do
        if [[ -S $WORK/$1/sockets/${PID[$1]}.sock ]] || ls "$WORK/$1/sockets" 2>/dev/null | grep -q "${PID[$1]}"; then
            if grep -q '^listening on' "$WORK/$1/out"; then break; fi
        fi
        sleep 0.05
    done
    PORT[$1]=$(sed -n 's/^listening on 127.0.0.1:\([0-9]*\)$/\1/p' "$WORK/$1/out")
    [[ -n ${PORT[$1]} ]] || fail "$1: the server did not start"
}

# version HOST: what HOST's server answers to /version.
version() {
    local line
    exec 3<>"/dev/tcp/127.0.0.1/${PORT[$1]}"
    echo /version >&3
    read -r -t 5 line <&3
    exec 3<&-
    printf '%s\n' "$line"
}

generation() {
    HOTAGENT_SOCKET_DIR=$WORK/$1/sockets "$HOTCTL" --pid "${PID[$1]}" --json status |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["generation"])'
}

# expect HOST VERSION GENERATION
expect() {
    local v g
    v=$(version "$1"); g=$(generation "$1")
    [[ $v == *"libgreet $2"* && $g == "$3" ]] || fail "$1: answers '$v' at generation $g, expected $2 at $3"
    echo "  $1: $2, generation $3"
}

# inventory FAILING_HOST: each host's check asks its server for v2; the failing host's asks for v3.
inventory() {
    local h want
    {
        echo "fleet:"
        echo "  hosts:"
        for h in host_a host_b host_c; do
            want=v2
            [[ $h == "$1" ]] && want=v3
            cat <<YAML
    $h:
      ansible_connection: local
      ansible_python_interpreter: $VENV/bin/python
      hotagent_socket_dir: $WORK/$h/sockets
      hotagent_selector: ["--pid", "${PID[$h]}"]
      hotagent_check: >-
        exec 3<>/dev/tcp/127.0.0.1/${PORT[$h]}; echo /version >&3; read -r l <&3;
        [[ \$l == *"libgreet $want"* ]]
YAML
        done
    } > "$WORK/inventory.yml"
}

play() {
    local rc=0
    "$VENV/bin/ansible-playbook" -i "$WORK/inventory.yml" "$HERE/rollout.yml" \
        -e hotagent_hosts=fleet -e hotagent_hotctl="$HOTCTL" \
        -e hotagent_patch="$DEMO_DIR/v2/libgreet.so" -e 'ansible_shell_executable=/bin/bash' \
        > "$WORK/play.log" 2>&1 || rc=$?
    grep -E '^(PLAY RECAP|host_)' "$WORK/play.log" | sed 's/^/  /' || true
    return $rc
}

for h in host_a host_b host_c; do start "$h"; done

echo "== rollout 1: host_c's check fails after its switch"
inventory host_c
if play; then cat "$WORK/play.log"; fail "the play succeeded although host_c failed"; fi
grep -q 'reverted' "$WORK/play.log" || { cat "$WORK/play.log"; fail "host_c was not reported reverted"; }
expect host_a v2 1
expect host_b v2 1
expect host_c v1 0

echo "== rollout 2 (after rolling host_a and host_b back): the canary host_a fails, the rest is untouched"
for h in host_a host_b; do HOTAGENT_SOCKET_DIR=$WORK/$h/sockets "$HOTCTL" --pid "${PID[$h]}" rollback > /dev/null; done
inventory host_a
if play; then cat "$WORK/play.log"; fail "the play succeeded although the canary failed"; fi
expect host_a v1 0
expect host_b v1 0
expect host_c v1 0
grep -q 'host_b' "$WORK/play.log" && { cat "$WORK/play.log"; fail "host_b was reached after the canary failed"; }
echo "ansible-test: ok"
