#!/usr/bin/env bash
# pykmip-up.sh DIR [PORT|auto] -- start a real PyKMIP server (Debian python3-pykmip) on
# loopback with mTLS certificates, for kmd's interoperability tests. Idempotent.
# Installs python3-pykmip with apt-get when it is missing (root needed).
# stdout: eval-able KEY=VALUE lines (also DIR/pykmip.env): PYKMIP_ADDR, PYKMIP_CA,
# PYKMIP_CLIENT_CERT, PYKMIP_CLIENT_KEY. Stop with scripts/pykmip-down.sh DIR.
# The recipe that works: ECDSA P-256 certificates, a client certificate with
# extendedKeyUsage clientAuth, /usr/bin/python3 (not a pyenv one), KMIP <= 1.4,
# stop with SIGINT.
set -euo pipefail
DIR=${1:?usage: pykmip-up.sh DIR [PORT]}; PORT=${2:-auto}
PY=/usr/bin/python3 SRV=/usr/bin/pykmip-server   # not PATH python3: pyenv/venv lack dist-packages
log() { echo "pykmip-up: $*" >&2; }; die() { log "ERROR: $*"; exit 1; }
mkdir -p "$DIR"; DIR=$(cd "$DIR" && pwd)
C=$DIR/certs CONF=$DIR/server.conf PIDF=$DIR/pykmip.pid ENVF=$DIR/pykmip.env

if ! dpkg-query -W -f='${Status}' python3-pykmip 2>/dev/null | grep -q 'ok installed' ||
   ! command -v openssl >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive; o="-o DPkg::Lock::Timeout=300"
  for t in 1 2 3; do   # concurrent apt-get can break downloads
    apt-get $o update -qq >&2 &&
      apt-get $o install -y -qq --no-install-recommends python3-pykmip openssl >&2 && break
    [ $t = 3 ] && die "apt-get failed"; sleep 5
  done
fi

pid=$(cat "$PIDF" 2>/dev/null || true)
if [ -n "$pid" ] && tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" | grep -q "pykmip-server -f $CONF"; then
  if [ "$PORT" = auto ] || grep -qx "port=$PORT" "$CONF"; then
    log "already running (pid $pid)"; cat "$ENVF"; exit 0
  fi
  "$(dirname "$0")/pykmip-down.sh" "$DIR" >&2
fi

if ! openssl verify -CAfile "$C/ca.pem" "$C/server.pem" "$C/client.pem" >/dev/null 2>&1; then
  log "creating ECDSA P-256 certificates in $C"; mkdir -p "$C"
  ( cd "$C"; umask 077
    key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1.key"; }
    key ca; openssl req -x509 -new -key ca.key -sha256 -days 3650 -subj /CN=pykmip-test-ca \
      -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign -out ca.pem
    for n in server:localhost:serverAuth client:kmip-test-client:clientAuth; do
      IFS=: read -r f cn eku <<<"$n"; key $f
      printf '%s\n' basicConstraints=CA:FALSE keyUsage=critical,digitalSignature \
        extendedKeyUsage=$eku >$f.ext
      [ $f = server ] && echo subjectAltName=IP:127.0.0.1,DNS:localhost >>$f.ext
      openssl req -new -key $f.key -subj /CN=$cn | openssl x509 -req -CA ca.pem -CAkey ca.key \
        -CAcreateserial -days 825 -sha256 -extfile $f.ext -out $f.pem 2>/dev/null
    done
    chmod 644 ./*.pem )
fi

[ "$PORT" = auto ] &&
  PORT=$($PY -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
(exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && die "127.0.0.1:$PORT already in use"
mkdir -p "$DIR/policies"   # unset policy_path => PyKMIP scans the CWD
printf '%s\n' '[server]' hostname=127.0.0.1 port=$PORT certificate_path=$C/server.pem \
  key_path=$C/server.key ca_path=$C/ca.pem auth_suite=TLS1.2 policy_path=$DIR/policies \
  enable_tls_client_auth=True logging_level=INFO database_path=$DIR/pykmip.db >"$CONF"

t0=$(date +%s%N)
# own process group (PGID == PID) for pykmip-down.sh
( cd "$DIR"; exec $PY -c 'import os,sys
try: os.setsid()
except OSError: pass
os.execv(sys.argv[1], sys.argv[1:])' $PY $SRV -f "$CONF" -l "$DIR/server.log" \
  >"$DIR/server.stdout" 2>&1 </dev/null ) &
pid=$!; echo $pid >"$PIDF"
until (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; do
  kill -0 $pid 2>/dev/null || { tail "$DIR"/server.{stdout,log} >&2; die "server exited"; }
  [ $(( ($(date +%s%N) - t0) / 1000000000 )) -lt "${PYKMIP_WAIT_S:-60}" ] || die "port $PORT not open"
  sleep 0.1
done
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
log "listening on 127.0.0.1:$PORT after $ms ms (pid $pid)"
printf '%s\n' PYKMIP_PID=$pid PYKMIP_ADDR=127.0.0.1:$PORT PYKMIP_CA=$C/ca.pem \
  PYKMIP_CLIENT_CERT=$C/client.pem PYKMIP_CLIENT_KEY=$C/client.key PYKMIP_START_MS=$ms | tee "$ENVF"
