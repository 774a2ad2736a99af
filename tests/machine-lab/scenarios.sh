#!/usr/bin/env bash
# Machine-lab scenarios: lvslab on this machine drives real Debian 12
# machines (systemd, sshd, apt; tests/machine-lab/mlab) over SSH through a
# jump host, as a user with real VMs would. Run by tests/machine_lab.rs as
#   tests/machine-lab/mlab run tests/machine-lab/scenarios.sh \
#     client:11:public director:12:public,private web1:13:private web2:14:private
# with LVSLAB (the binary) in the environment. Prints `ok   NAME` / `FAIL NAME`
# per check and `N passed, M failed` at the end; exits 1 on any failure.
set -uo pipefail
: "${LVSLAB:?the lvslab binary}" "${MLAB_DIR:?}" "${MLAB_SSH:?}" "${MLAB_JUMP:?}"
S=$MLAB_SSH
work=$(mktemp -d /var/tmp/mlab-scen.XXXXXX)
export LVSLAB_STATE_DIR=$work/state
pass=0; fail=0; fails=()
ok() { echo "ok   $1"; pass=$((pass + 1)); }
bad() { echo "FAIL $1"; fail=$((fail + 1)); fails+=("$1"); }
check() { local name=$1; shift; if "$@"; then ok "$name"; else bad "$name"; fi; }
# run NAME EXPECTED-STATUS CMD...: run lvslab, keep its output in $out.
run() {
  local name=$1 want=$2; shift 2
  local t0=$SECONDS rc=0
  out=$("$@" 2>&1) || rc=$?
  echo "$out" > "$work/$(echo "$name" | tr -c 'a-zA-Z0-9\n' '_').log"
  if [ "$rc" = "$want" ]; then ok "$name: exits $want ($((SECONDS - t0)) s)"; else
    bad "$name: exits $rc, want $want ($((SECONDS - t0)) s)"; echo "$out" | tail -n 40 | sed 's/^/     | /'; fi
}
has() { grep -qF -- "$1" <<<"$out"; }
machines=(client director web1 web2)
num() { case $1 in client) echo 11;; director) echo 12;; web1) echo 13;; web2) echo 14;; esac; }
on() { local h=$1; shift; $S "10.10.0.$(num "$h")" "$@"; }

# What a machine is, for the before/after comparison of `down`: packages,
# enabled units (their links under /etc/systemd/system), every file under /etc and /var/www with its hash, sysctls
# (less the counters that move by themselves), addresses, routes, the IPVS
# table, iptables/nft rules.
snapshot() {
  on "$1" 'set +e
echo "## packages"; dpkg-query -W -f "\${db:Status-Abbrev} \${Package} \${Version}\n" | sort
echo "## files"; find /etc /var/www /var/lib/lvslab /usr/local -xdev -type f ! -path /etc/ld.so.cache -exec sha256sum {} + 2>/dev/null | cut -c1-16,65- | sort -k2
echo "## links (enabled units are the links under /etc/systemd/system)"; find /etc /var/www /var/lib/lvslab /usr/local -xdev -type l -printf "%p -> %l\n" 2>/dev/null | sort
echo "## directories"; find /etc /var/www /var/lib/lvslab /usr/local -xdev -type d 2>/dev/null | sort
echo "## sysctl"; sysctl -a 2>/dev/null | grep -v -E "^(kernel\.random\.|fs\.(dentry-state|file-nr|inode-nr|inode-state|quota)|kernel\.(ns_last_pid|pty\.nr)|net\.netfilter\.nf_conntrack_count|kernel\.sched_domain)" | sort
echo "## addresses"; ip -4 -o addr show | awk "{print \$2, \$4}" | sort
echo "## interfaces and their state"; ip -br link show | awk "{print \$1, \$2}" | sed "s/@[^ ]*//" | sort
echo "## routes"; ip -4 route show | sort
echo "## ipvs"; cat /proc/net/ip_vs 2>/dev/null
echo "## nft"; command -v nft >/dev/null && nft list ruleset
echo "## iptables"; command -v iptables-save >/dev/null && iptables-save | grep -v "^#"
true'
}

# Every machine's snapshot at once (they share the VM's two CPUs).
snapshots() {
  local h
  for h in "${machines[@]}"; do snapshot "$h" > "$work/$1-$h" & done
  wait
}

topology() {
  cat > "$work/nat.yaml" <<EOF
# The course's LVS-NAT lab on real machines, reached over SSH through a jump host.
lab: mnat
mode: nat
provider: ssh
defaults:
  packages: true
  persist: true
  ssh:
    user: root
    key: $MLAB_DIR/lab_key
    known_hosts: $MLAB_DIR/known_hosts
    jump: $MLAB_JUMP
networks:
  public:  { cidr: 192.168.4.0/24 }
  private: { cidr: 192.168.2.0/24 }
hosts:
  client:
    role: client
    ssh: { host: 10.10.0.11 }
    interfaces: [ { name: eth1, network: public, address: 192.168.4.10 } ]
  director:
    role: director
    ssh: { host: 10.10.0.12 }
    interfaces:
      - { name: eth1, network: public, address: 192.168.4.5 }
      - { name: eth2, network: private, address: 192.168.2.5 }
  web1:
    role: real_server
    ssh: { host: 10.10.0.13 }
    interfaces: [ { name: eth1, network: private, address: 192.168.2.100 } ]
  web2:
    role: real_server
    ssh: { host: 10.10.0.14 }
    interfaces: [ { name: eth1, network: private, address: 192.168.2.200 } ]
services:
  - name: http
    vip: 192.168.4.5
    port: 80
    protocol: tcp
    scheduler: wrr
    real_servers:
      - { host: web1, weight: 1 }
      - { host: web2, weight: 2 }
verify:
  client: client
  requests: 30
  tolerance: 0.2
EOF
}

wait_ssh() {
  local h=$1 i
  for i in $(seq 1 90); do on "$h" true 2>/dev/null && return 0; sleep 1; done
  return 1
}

scenario_nat() {
  local t0=$SECONDS h
  echo "== nat: the course's LVS-NAT lab over SSH, packages installed by apt, persisted"
  topology
  snapshots before
  check "nat: the machines start without the lab's packages" \
    bash -c "! grep -qE ' (ipvsadm|apache2|keepalived|curl) ' $work/before-director $work/before-web1 $work/before-client"
  run "nat: validate" 0 "$LVSLAB" validate "$work/nat.yaml"
  run "nat: up (installs, provisions, verifies)" 0 "$LVSLAB" up "$work/nat.yaml"
  local up_out=$out
  check "nat: up assigned the lab's addresses (finding 1)" has "address 192.168.2.100/24 on eth1"
  check "nat: up installed apache2 with apt" has "packages installed: apache2"
  check "nat: up installed curl on the director for verify (finding 2)" grep -qF "] director: packages installed: curl" <<<"$up_out"
  check "nat: curl is installed on the director" bash -c "$S 10.10.0.12 dpkg -s curl 2>/dev/null | grep -qx 'Status: install ok installed'"
  check "nat: verify passed within up" has "VERIFY mnat PASSED"
  check "nat: web1 runs apache2 (a systemd unit)" bash -c "$S 10.10.0.13 systemctl is-active apache2 | grep -qx active"
  check "nat: web1 serves its own page (asked from the director)" bash -c "$S 10.10.0.12 curl -s http://192.168.2.100/ | grep -q web1"
  check "nat: the real servers' default route goes through the DIP" bash -c "$S 10.10.0.13 ip route show default | grep -q 'via 192.168.2.5'"
  run "nat: a second up" 0 "$LVSLAB" up "$work/nat.yaml" --no-verify
  check "nat: a second up changes nothing" bash -c "[ \"\$(grep -cE '^(client|director|web1|web2) +[0-9]+ +0 +0 ' <<<\"\$0\")\" = 4 ]" "$out"
  run "nat: drift on the fresh lab" 0 "$LVSLAB" drift "$work/nat.yaml"
  echo "     nat up..drift took $((SECONDS - t0)) s"

  echo "== reboot: every machine rebooted, nothing run by lvslab"
  local t1=$SECONDS
  local init_before; init_before=$(on web1 ps -o lstart= -p 1)
  $S labvm 'for m in client director web1 web2; do machinectl reboot $m; done' || bad "reboot: machinectl reboot"
  sleep 3
  for h in "${machines[@]}"; do check "reboot: $h answers over SSH again" wait_ssh "$h"; done
  echo "     reboot of 4 machines took $((SECONDS - t1)) s"
  check "reboot: web1 really rebooted (its PID 1 started anew)" bash -c "a=\$($S 10.10.0.13 ps -o lstart= -p 1); [ -n \"\$a\" ] && [ -n '$init_before' ] && [ \"\$a\" != '$init_before' ]"
  check "reboot: web1's lab address came back by itself" bash -c "$S 10.10.0.13 ip -4 addr show dev eth1 | grep -q 192.168.2.100/24"
  check "reboot: the director's IPVS table came back by itself" bash -c "$S 10.10.0.12 ipvsadm -Sn | grep -q '192.168.4.5:80'"
  check "reboot: the director forwards again (ip_forward)" bash -c "[ \"\$($S 10.10.0.12 cat /proc/sys/net/ipv4/ip_forward)\" = 1 ]"
  run "reboot: verify passes without up" 0 "$LVSLAB" verify "$work/nat.yaml"
  run "reboot: drift is clean (no restart needed: finding 3)" 0 "$LVSLAB" drift "$work/nat.yaml"
  echo "     reboot proof took $((SECONDS - t1)) s"

  echo "== down: every machine as it was before up"
  local t2=$SECONDS
  run "down" 0 "$LVSLAB" down "$work/nat.yaml"
  # (ip_vs is loaded by the VM at boot, as on a host that loads it itself: the
  # module step is ok from the start and never recorded, so `kept` is not
  # exercised here.)
  check "down: no kernel module is reported reverted" bash -c "! grep -E 'reverted .*kernel module' <<<\"\$0\"" "$out"
  echo "     down took $((SECONDS - t2)) s"
  snapshots after
  for h in "${machines[@]}"; do
    if diff -u "$work/before-$h" "$work/after-$h" > "$work/diff-$h"; then
      ok "down: $h is as before up (packages, units, /etc, /var/www, sysctls, addresses, links, routes, IPVS, rules)"
    else
      bad "down: $h differs from before up"
      grep -E '^[-+][^-+]' "$work/diff-$h" | head -n 30 | sed 's/^/     | /'
    fi
  done
  echo "     packages before/after on web1: $(grep -c '^ii' "$work/before-web1") / $(grep -c '^ii' "$work/after-web1")"
  echo "     nat took $((SECONDS - t0)) s"
}

scenario_nat
echo "$pass passed, $fail failed"
if [ "$fail" -gt 0 ]; then printf 'failed: %s\n' "${fails[@]}"; exit 1; fi
rm -rf "$work"
