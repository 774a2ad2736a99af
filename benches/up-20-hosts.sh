#!/usr/bin/env bash
# Benchmark (not a test): wall time of `lvslab up` and of a no-op second `up`
# for 20 hosts with 30 steps each, all reached over SSH on loopback (one real
# sshd on 127.0.0.1, 20 separate connections). Every step writes under a
# temporary directory. Needs root, openssh-server, and a release build:
#   cargo build --release && benches/up-20-hosts.sh
#
# SSH commands run through the login user's shell; root's bash may source a
# slow ~/.bashrc on every round trip (on this project's machines, `pyenv init`
# costs ~100 ms). BENCH_USER=sh (the default) logs in as a throwaway user whose
# shell is /bin/sh, created and removed by this script; BENCH_USER=root measures
# with root's own shell.
set -euo pipefail
BENCH_USER=${BENCH_USER:-sh}
HOSTS=${HOSTS:-20}
STEPS=${STEPS:-30}
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${LVSLAB:-$root/target/release/lvslab}
[ -x "$bin" ] || { echo "build first: cargo build --release" >&2; exit 1; }
tmp=$(mktemp -d)
user=root
cleanup() {
  kill "$(cat "$tmp/sshd.pid" 2>/dev/null)" 2>/dev/null || true
  [ "$user" = root ] || userdel "$user" 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT
if [ "$BENCH_USER" = sh ]; then
  user=lvslab-bench-$$
  useradd -M -d "$tmp" -s /bin/sh -p "*" "$user"   # "*": no password, but not locked
fi
chmod 755 "$tmp"
ssh-keygen -q -t ed25519 -N '' -f "$tmp/hostkey"
ssh-keygen -q -t ed25519 -N '' -f "$tmp/userkey"
cp "$tmp/userkey.pub" "$tmp/authorized_keys"
mkdir -p "$tmp/w" && chown "$user" "$tmp/w"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mkdir -p /run/sshd
cat > "$tmp/sshd_config" <<CONF
Port $port
ListenAddress 127.0.0.1
HostKey $tmp/hostkey
AuthorizedKeysFile $tmp/authorized_keys
PidFile $tmp/sshd.pid
StrictModes no
PasswordAuthentication no
UsePAM no
MaxStartups 200
MaxSessions 200
CONF
/usr/sbin/sshd -f "$tmp/sshd_config"
sleep 0.5

{
  echo "lab: bench"
  echo "mode: dr"
  echo "provider: ssh"
  echo "networks: { lan: { cidr: 10.77.0.0/24 } }"
  echo "defaults:"
  echo "  init: daemon"
  echo "  ssh: { host: 127.0.0.1, port: $port, user: $user, key: $tmp/userkey, known_hosts: $tmp/known_hosts }"
  echo "hosts:"
  for h in $(seq 1 "$HOSTS"); do
    echo "  h$h:"
    echo "    role: client"
    echo "    interfaces: [{ network: lan }]"
    echo "    steps:"
    echo "      - directory: { path: $tmp/w/h$h, mode: \"0755\" }"
    echo "        why: bench"
    for s in $(seq 2 "$STEPS"); do
      if [ $((s % 3)) -eq 0 ]; then
        echo "      - command: { name: c$s, check: \"test -f $tmp/w/h$h/c$s\", run: \"touch $tmp/w/h$h/c$s\", revert: \"rm -f $tmp/w/h$h/c$s\" }"
      else
        echo "      - file: { path: $tmp/w/h$h/f$s, content: \"host h$h step $s\\n\" }"
      fi
      echo "        why: bench"
    done
  done
} > "$tmp/bench.yaml"

export LVSLAB_STATE_DIR=$tmp/state HOME=$tmp SSH_AUTH_SOCK=/nonexistent
t() { local s e; s=$(date +%s.%N); "$@" > "$tmp/out" 2>/dev/null || { cat "$tmp/out"; exit 1; }; e=$(date +%s.%N); echo "$e - $s" | bc; }
recap() { awk -v h="$HOSTS" 'NR>2 {o+=$2; c+=$3; f+=$4} END {print "  ok " o ", changed " c ", failed " f " (" h " hosts)"}' "$tmp/out"; }
first=$(t "$bin" up "$tmp/bench.yaml" --accept-new-host-keys); recap
second=$(t "$bin" up "$tmp/bench.yaml"); recap
down=$(t "$bin" down "$tmp/bench.yaml"); recap
echo "hosts=$HOSTS steps/host=$STEPS login=$user"
printf 'up (fresh):      %6.2f s\n' "$first"
printf 'up (no change):  %6.2f s\n' "$second"
printf 'down:            %6.2f s\n' "$down"
