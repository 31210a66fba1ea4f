#!/usr/bin/env bash
# Security (docs/security.md): a three-member cluster serving HTTPS with a
# test CA made here, with management, read and agent tokens. Raw HTTP shows
# the 401/403 answers and what each token may do; the CLI works with
# --token-file and explains itself without; an agent with the agent token
# registers and runs a kv service that a client reaches with the read token;
# the transfer secret reaches the agents' orders and nothing else; a client
# with the wrong CA is refused clearly; and the daemon refuses unsafe or
# broken settings at start (exit code 2).
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/node_lib.sh"

command -v openssl >/dev/null || bail "openssl is needed (tools/deps.sh installs it)"

# ---- a test CA, a server certificate for 127.0.0.1, and a CA that did not sign it ----
P="$T/pki"
mkdir -p "$P"
mkcert() {
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
        -subj "/CN=dvs test CA $1" -keyout "$P/$1.key" -out "$P/$1.crt" &&
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=127.0.0.1" \
        -keyout "$P/srv.key" -out "$P/srv.csr" &&
    printf 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' \
        >"$P/ext" &&
    openssl x509 -req -in "$P/srv.csr" -CA "$P/$1.crt" -CAkey "$P/$1.key" -CAcreateserial \
        -days 2 -extfile "$P/ext" -out "$P/srv.crt"
} >>"$T/openssl.log" 2>&1
mkcert ca || bail "openssl could not make the test certificates"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj "/CN=some other CA" -keyout "$P/other.key" -out "$P/other.crt" >>"$T/openssl.log" 2>&1 ||
    bail "openssl could not make the second CA"
CA="$P/ca.crt"

# ---- tokens, in files readable by their owner only ----
for t in mgmt read agent; do
    (umask 077 && openssl rand -hex 32 >"$T/$t.token")
done
MGMT=$(cat "$T/mgmt.token")
READ=$(cat "$T/read.token")
AGENT=$(cat "$T/agent.token")

# lib.sh's and node_lib.sh's helpers, over HTTPS and with a token.
url() { echo "https://${HTTP[$1]}"; }
status_field() { curl -sf --max-time 2 --cacert "$CA" -H "Authorization: Bearer $READ" "$(url "$1")/v1/status" | jq -r ".$2"; }
mgr() { local id=$1; shift; "$MANAGER" --manager "$(url "$id")" --ca-file "$CA" --token-file "$T/mgmt.token" "$@"; }
node_state() { curl -sf --max-time 2 --cacert "$CA" -H "Authorization: Bearer $READ" "$(url m1)/v1/nodes/$1" | jq -r .state; }
ep() { curl -sf --location-trusted --max-time 2 --cacert "$CA" -H "Authorization: Bearer $READ" "$(url m1)/v1/endpoints/$2?consistent" | jq -r ".$1"; }

# req TOKEN METHOD PATH [BODY]: the status code, the body in $T/req.body and
# the headers in $T/req.hdrs. TOKEN "-" sends no Authorization header.
req() {
    local tok=$1 method=$2 path=$3 body=${4-}
    local -a a=(-s --max-time 10 --cacert "$CA" -X "$method" -o "$T/req.body" -D "$T/req.hdrs" -w '%{http_code}')
    [ "$tok" = - ] || a+=(-H "Authorization: $tok")
    [ -z "$body" ] || a+=(-H 'Content-Type: application/json' --data-binary "$body")
    curl "${a[@]}" "$(url "$LEADER")$path"
}
not() { ! "$@"; }
code_is() { [ "$(jq -r .code "$T/req.body")" = "$1" ]; }
answer() { # answer DESC WANT_STATUS WANT_CODE TOKEN METHOD PATH [BODY]
    local desc=$1 want=$2 wcode=$3; shift 3
    local got
    got=$(req "$@")
    if [ "$got" = "$want" ] && { [ "$wcode" = - ] || code_is "$wcode"; }; then
        ok "$desc"
    else
        not_ok "$desc"
        diag "got HTTP $got: $(head -c 300 "$T/req.body")"
    fi
}

# ---- the cluster ----
for i in 1 2 3; do
    RAFT[m$i]="127.0.0.1:$(low_port)"
    HTTP[m$i]="127.0.0.1:$(low_port)"
done
BOOT=$(bootstrap_list 3)
SEC=(--tls-cert "$P/srv.crt" --tls-key "$P/srv.key" --tls-ca "$CA"
     --management-token-file "$T/mgmt.token" --read-token-file "$T/read.token"
     --agent-token-file "$T/agent.token")
for i in 1 2 3; do start_member "m$i" --bootstrap "$BOOT" --node-ttl 30s "${SEC[@]}"; done
if ! wait_until 30 has_leader m1 m2 m3; then
    TAP_FAILED=1
    bail "the managers elected no leader"
fi
LEADER=$(leader_of m1 m2 m3)
FOLLOWER=m1; [ "$LEADER" = m1 ] && FOLLOWER=m2
MGR_URLS=$(all_urls m1 m2 m3)
ok "three members serving HTTPS with tokens elected a leader ($LEADER)"

# Followers announce their HTTP address to the leader (POST /v1/members):
# member-to-member calls carry the management token over verified HTTPS.
announced() { [ "$(mgr "$LEADER" --json member list | jq '[.members[] | select(.http_addr != null and .http_addr != "")] | length')" = 3 ]; }
check "every member's address reached the directory (peer calls carry the token)" \
    wait_until 20 announced

# ---- raw HTTP: who may do what ----
EP_BODY='{"name":"web","command":"/bin/true"}'
answer "a change without a token is 401 unauthorized" 401 unauthorized - POST /v1/endpoints "$EP_BODY"
check "... with WWW-Authenticate: Bearer" grep -qi '^WWW-Authenticate: Bearer' "$T/req.hdrs"
check "... and a message that says how to send one" grep -q 'Authorization: Bearer' "$T/req.body"
answer "a malformed Authorization header (no token) is 401" 401 unauthorized "Bearer" POST /v1/endpoints "$EP_BODY"
answer "another scheme (Basic) is 401" 401 unauthorized "Basic bWU6cGFzcw==" POST /v1/endpoints "$EP_BODY"
answer "a wrong token is 403 forbidden" 403 forbidden "Bearer not-the-token-0123456789" POST /v1/endpoints "$EP_BODY"
answer "the read token cannot change anything (403)" 403 forbidden "Bearer $READ" POST /v1/endpoints "$EP_BODY"
check "... and the message names the token needed" grep -q 'management token' "$T/req.body"
answer "the agent token cannot create endpoints (403)" 403 forbidden "Bearer $AGENT" POST /v1/endpoints "$EP_BODY"
answer "the agent token cannot drain a node (403)" 403 forbidden "Bearer $AGENT" POST /v1/nodes/n1/drain '{}'
answer "a read without a token is 401 when a read token is set" 401 unauthorized - GET /v1/endpoints
answer "the read token reads" 200 - "bearer  $READ " GET /v1/endpoints
answer "the management token reads" 200 - "Bearer $MGMT" GET /v1/status
answer "the read token cannot read an agent's orders (403)" 403 forbidden "Bearer $READ" GET /v1/nodes/n8/orders
answer "the agent token registers a node" 200 - "Bearer $AGENT" POST /v1/nodes \
    '{"id":"n8","address":"127.0.0.1:1","cpu":4,"mem":1073741824}'
answer "the agent token posts a heartbeat" 200 - "Bearer $AGENT" POST /v1/nodes/n8/heartbeat '{}'
answer "the agent token registers a second node" 200 - "Bearer $AGENT" POST /v1/nodes \
    '{"id":"n9","address":"127.0.0.1:2","cpu":4,"mem":1073741824}'
answer "the management token creates an endpoint" 201 - "Bearer $MGMT" POST /v1/endpoints \
    '{"name":"held","command":"/bin/true","node":"n8"}'

# ---- the transfer secret: in the agents' orders, nowhere else ----
answer "the management token starts a migration" 201 - "Bearer $MGMT" POST /v1/endpoints/held/migrate '{"to":"n9"}'
MIG=$(jq -r .id "$T/req.body")
check "the answer to the migration request has no transfer secret" \
    test "$(jq 'has("transfer_secret")' "$T/req.body")" = false
req "Bearer $AGENT" GET "/v1/nodes/n9/orders?consistent" >/dev/null
SECRET=$(jq -r --argjson id "$MIG" '.migrations[] | select(.id == $id) | .transfer_secret' "$T/req.body")
check "the destination's orders carry a 64-hex-digit transfer_secret" \
    bash -c "[[ '$SECRET' =~ ^[0-9a-f]{64}$ ]]"
req "Bearer $AGENT" GET "/v1/nodes/n8/orders?consistent" >/dev/null
check "the source's orders carry the same secret" \
    test "$(jq -r --argjson id "$MIG" '.migrations[] | select(.id == $id) | .transfer_secret' "$T/req.body")" = "$SECRET"
req "Bearer $MGMT" GET "/v1/migrations/$MIG?consistent" >/dev/null
check "migration show does not show it" test "$(jq 'has("transfer_secret")' "$T/req.body")" = false
req "Bearer $MGMT" GET "/v1/migrations" >/dev/null
check "the migration list does not show it" not grep -q "$SECRET" "$T/req.body"
check "no member's /v1/status or node view shows it" \
    bash -c "! { curl -s --cacert '$CA' -H 'Authorization: Bearer $MGMT' $(url m1)/v1/nodes/n9; curl -s --cacert '$CA' -H 'Authorization: Bearer $MGMT' $(url m1)/v1/endpoints/held; } | grep -q '$SECRET'"
answer "a client cannot choose the secret (unknown field)" 400 bad_request "Bearer $MGMT" \
    POST /v1/endpoints/held/migrate '{"to":"n9","transfer_secret":"00"}'
answer "the management token aborts the migration" 200 - "Bearer $MGMT" PATCH "/v1/migrations/$MIG" '{"phase":"aborted","error":"test"}'
req "Bearer $AGENT" GET "/v1/nodes/n9/orders?consistent" >/dev/null
check "a finished migration's secret is gone from the orders" not grep -q "$SECRET" "$T/req.body"

# ---- the CLI ----
cli() { "$MANAGER" --manager "$MGR_URLS" --ca-file "$CA" "$@"; }
check "the CLI with --token-file creates an endpoint (through any member)" \
    quiet cli --token-file "$T/mgmt.token" endpoint create web --command /bin/true
check "a change sent to a follower follows the 307 to the leader with the token" \
    quiet "$MANAGER" --manager "$(url "$FOLLOWER")" --ca-file "$CA" --token-file "$T/mgmt.token" \
    endpoint delete web
mgr "$LEADER" endpoint show web >/dev/null 2>&1
check "... and the endpoint is gone (show exits 3, not found)" test $? -eq 3
cli endpoint create web2 --command /bin/true >"$T/cli.out" 2>&1
RC=$?
check "the CLI without a token exits nonzero" test "$RC" -ne 0
check "... and says that a token is needed and how to give one" grep -q -- '--token-file' "$T/cli.out"
check "DVS_TOKEN works like --token-file" quiet env DVS_TOKEN="$MGMT" "$MANAGER" --manager "$MGR_URLS" \
    --ca-file "$CA" endpoint list
cli --token-file "$T/read.token" endpoint create web3 --command /bin/true >"$T/cli.out" 2>&1
RC=$?
check "the CLI with the read token cannot create (exit 1, 403 explained)" \
    bash -c "[ $RC -eq 1 ] && grep -q 'management token' '$T/cli.out'"
cli --token-file "$T/nope.token" endpoint list >"$T/cli.out" 2>&1
RC=$?
check "a missing --token-file is a usage error (exit 2) naming the file" \
    bash -c "[ $RC -eq 2 ] && grep -q 'nope.token' '$T/cli.out'"

# ---- TLS verification on the client side ----
"$MANAGER" --manager "$(url m1)" --ca-file "$P/other.crt" --token-file "$T/read.token" status \
    >"$T/cli.out" 2>&1
RC=$?
check "the CLI with the wrong CA fails (exit 5)" test "$RC" -eq 5
check "... saying the certificate is not trusted" grep -q 'certificate not trusted' "$T/cli.out"
check "plain http:// to an HTTPS member gets no answer" \
    bash -c "! curl -sf --max-time 3 http://${HTTP[m1]}/v1/status"
check "curl with the test CA verifies the member's certificate" \
    quiet curl -sf --max-time 3 --cacert "$CA" -H "Authorization: Bearer $READ" "$(url m1)/v1/status"

# ---- an agent with the agent token, and a client with the read token ----
export DVS_TOKEN="$READ" DVS_CA_FILE="$CA"
start_agent n1 --cpu 2 --mem 1G --token-file "$T/agent.token" --ca-file "$CA"
check "the agent with the agent token registers over HTTPS" wait_until 15 node_up n1
create_kv kv n1
check "its kv service runs" wait_until 20 ep_is state kv running
check "a kv client with DVS_TOKEN (read) and DVS_CA_FILE reaches it" quiet kv put k v1
check "... and reads back what it wrote" kv_get_is k v1
DVS_TOKEN="" kv get k >"$T/kv.out" 2>&1
check "a kv client without a token is refused" test $? -ne 0
start_agent n2 --cpu 2 --mem 1G --ca-file "$CA"
refused() { log_has n2 'registration refused.*HTTP 401'; }
check "an agent without a token is refused registration (401 in its log)" wait_until 10 refused
check "... and its node is not in the directory" not node_up n2
kill9 n2
unset DVS_TOKEN DVS_CA_FILE

# ---- settings the daemon refuses at start (exit 2, a clear message) ----
refuse() { # refuse DESC REGEX FLAGS...: serve must exit 2 and print REGEX
    local desc=$1 re=$2; shift 2
    local d="$T/refuse.$TAP_N"
    mkdir -p "$d"
    timeout $((10 * SCALE)) "$MANAGER" serve --id r1 --data-dir "$d" "$@" >"$d.log" 2>&1
    local rc=$?
    if [ "$rc" -eq 2 ] && grep -Eq -- "$re" "$d.log"; then ok "$desc"; else
        not_ok "$desc"; diag "exit $rc: $(head -c 300 "$d.log")"; fi
}
RP=$(low_port)
refuse "Raft on a wildcard address is refused" 'allow-wildcard-raft' \
    --raft-addr "0.0.0.0:$RP" --bootstrap "r1=0.0.0.0:$RP"
RP=$(low_port)
refuse "an open API on a non-loopback address is refused" 'insecure-open' \
    --raft-addr "127.0.0.1:$RP" --bootstrap "r1=127.0.0.1:$RP" --http-addr "0.0.0.0:$(low_port)"
RP=$(low_port)
echo "not a certificate" >"$T/bad.crt"
refuse "a --tls-cert that is not PEM is refused" 'tls-cert.*not a PEM' \
    --raft-addr "127.0.0.1:$RP" --bootstrap "r1=127.0.0.1:$RP" --tls-cert "$T/bad.crt" --tls-key "$P/srv.key"
RP=$(low_port)
refuse "a key that does not match the certificate is refused" 'tls-key' \
    --raft-addr "127.0.0.1:$RP" --bootstrap "r1=127.0.0.1:$RP" --tls-cert "$P/srv.crt" --tls-key "$P/other.key"
RP=$(low_port)
refuse "a missing token file is refused" 'management-token-file.*missing.token' \
    --raft-addr "127.0.0.1:$RP" --bootstrap "r1=127.0.0.1:$RP" --management-token-file "$T/missing.token"
RP=$(low_port)
echo short >"$T/short.token"
refuse "a short token is refused" 'at least 16' \
    --raft-addr "127.0.0.1:$RP" --bootstrap "r1=127.0.0.1:$RP" --management-token-file "$T/short.token"
RP=$(low_port)
refuse "a read token without a management token is refused" 'need --management-token-file' \
    --raft-addr "127.0.0.1:$RP" --bootstrap "r1=127.0.0.1:$RP" --read-token-file "$T/read.token"

check "every member is still up" bash -c "kill -0 ${PIDS[m1]} && kill -0 ${PIDS[m2]} && kill -0 ${PIDS[m3]}"
check "no member log contains a token" bash -c "! grep -qF -e '$MGMT' -e '$READ' -e '$AGENT' $T/m1.log $T/m2.log $T/m3.log"
done_testing
