#!/bin/bash
# By hand (not in CI's default scenarios): the step language in a lab no
# shipped topology is — LVS-NAT with wlc and a UDP service, real servers
# taking `line`, `src:` and template steps with lab/group/host vars, a plain
# host with no role — brought up, brought up again unchanged, edited (weight
# and a line value), edited by hand (drift shows the line's diff, --fix
# repairs it), and taken down leaving nothing.
#   tests/kernel-lab/vm run tests/kernel-lab/steps-combo.sh target/debug/lvslab
L=$(realpath "$1")
export LVSLAB_STATE_DIR=/tmp/lvslab-state CI=true
pass=0 fail=0
ok() { echo "ok   $*"; pass=$((pass+1)); }
bad() { echo "FAIL $*"; fail=$((fail+1)); }
check() { local d=$1; shift; if "$@"; then ok "$d"; else bad "$d"; fi; }
mkdir -p /tmp/steps-combo/files && cd /tmp/steps-combo
echo "motd {{ not rendered }}" > files/motd
printf 'greeting={{ greeting }} tier={{ tier }} port={{ port }} host={{ host.name }}\n' > app.j2
# $1: weight of web2, $2: value of key `level`
gen() {
cat <<YAML
lab: combo
mode: nat
verify: { requests: 24 }
vars: { greeting: hello }
groups:
  webs: { hosts: [web1, web2], vars: { tier: back } }
networks:
  public: { cidr: 192.168.4.0/24 }
  private: { cidr: 192.168.2.0/24 }
hosts:
  client: { role: client, interfaces: [{ network: public, address: 192.168.4.10 }] }
  director: { role: director, interfaces: [{ network: public, address: 192.168.4.5 }, { network: private, address: 192.168.2.5 }] }
YAML
for w in web1 web2; do
n=${w#web}
cat <<YAML
  $w:
    role: real_server
    interfaces: [{ network: private, address: 192.168.2.10$n }]
    vars: { port: 8$n }
    steps:
      - line: { path: "/etc/combo-{{ host.name }}.conf", key: tier, value: "{{ tier }}" }
        why: t
      - line: { path: "/etc/combo-{{ host.name }}.conf", key: level, value: "$2" }
        why: t
      - file: { path: "/etc/combo-{{ host.name }}.motd", src: files/motd }
        why: t
      - file: { path: "/etc/combo-{{ host.name }}.app", template: app.j2 }
        why: t
YAML
done
cat <<YAML
  tools:
    steps:
      - line: { path: "/etc/combo-tools.conf", line: "x = 1" }
        why: a plain host
services:
  - { name: http, vip: 192.168.4.5, port: 80, scheduler: wlc, real_servers: [{ host: web1 }, { host: web2, weight: $1 }] }
  - { name: dns, vip: 192.168.4.5, port: 53, protocol: udp, scheduler: rr, real_servers: [{ host: web1 }, { host: web2 }] }
YAML
}
gen 2 info > t.yaml
out=$("$L" up t.yaml --provider netns 2>&1); rc=$?
echo "$out" | grep -E "^(VERIFY|FAIL|failed|error)|RECAP" -A0 | head -20
check "up exits 0" test $rc -eq 0
check "verify passed" grep -q "^VERIFY combo PASSED" <<<"$out"
check "web1 config" bash -c "'$L' exec t.yaml web1 -- cat /etc/combo-web1.conf | tee /dev/stderr | grep -qx 'level = info'"
check "web1 app" bash -c "'$L' exec t.yaml web1 -- cat /etc/combo-web1.app | tee /dev/stderr | grep -qx 'greeting=hello tier=back port=81 host=web1'"
check "web2 motd literal" bash -c "'$L' exec t.yaml web2 -- cat /etc/combo-web2.motd | grep -qF '{{ not rendered }}'"
check "plain host line" bash -c "'$L' exec t.yaml tools -- cat /etc/combo-tools.conf | grep -qx 'x = 1'"
out=$("$L" up t.yaml --no-verify 2>&1); rc=$?
check "second up exits 0 and changes nothing" bash -c "[ $rc -eq 0 ] && ! grep -q '^changed' <<<'$out'"
gen 1 debug > t.yaml
out=$("$L" up t.yaml 2>&1); rc=$?
echo "$out" | grep -E "^(changed|VERIFY|FAIL)" | head -20
check "edited up exits 0, verify passed" bash -c "[ $rc -eq 0 ] && grep -q '^VERIFY combo PASSED' <<<\"\$0\"" "$out"
check "edited line" bash -c "'$L' exec t.yaml web2 -- cat /etc/combo-web2.conf | tee /dev/stderr | grep -qx 'level = debug'"
"$L" exec t.yaml web1 -- sh -c "sed -i 's/level = debug/level = hand/' /etc/combo-web1.conf"
out=$("$L" drift t.yaml 2>&1); rc=$?
echo "$out" | head -20
check "drift exits 2 after a hand edit" test $rc -eq 2
check "drift shows the line diff" grep -q "+level = debug" <<<"$out"
"$L" drift t.yaml --fix >/dev/null 2>&1
out=$("$L" drift t.yaml 2>&1); rc=$?
check "drift clean after --fix" test $rc -eq 0
out=$("$L" down t.yaml 2>&1); rc=$?
check "down exits 0" test $rc -eq 0
left=$(ip netns list | grep lvslab-combo; ls /tmp/lvslab-state/combo 2>/dev/null)
check "nothing left" test -z "$left"
echo "$pass passed, $fail failed"
[ $fail -eq 0 ]
