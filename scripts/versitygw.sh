#!/usr/bin/env bash
# versitygw.sh: install and run versitygw, a local S3-compatible server
# (Apache-2.0, https://github.com/versity/versitygw) with its posix backend,
# for the S3 driver's tests (driver/s3 starts its own when REGFS_S3_ENDPOINT
# is not set) and for trying `regfs mount --driver s3` without AWS.
#
#   scripts/versitygw.sh install                  go install it when missing
#   scripts/versitygw.sh start DIR PORT [BUCKET...]
#                                                 serve DIR/root on 127.0.0.1:PORT
#                                                 in the background; each BUCKET
#                                                 is a directory of DIR/root
#   scripts/versitygw.sh stop DIR                 stop the server started in DIR
#
# Credentials: the server's root user is AWS_ACCESS_KEY_ID and
# AWS_SECRET_ACCESS_KEY if they are set (so that regfs, which reads them,
# matches), else regfs / regfs-secret, which `start` prints as exports.
set -euo pipefail

VERSION=v1.8.0
BIN=${GOBIN:-/usr/local/bin}

die() { echo "versitygw.sh: $*" >&2; exit 1; }

# healthy PORT: true when GET /health on 127.0.0.1:PORT answers 200. Plain
# bash, so that curl is not needed.
healthy() {
  (
    exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
    printf 'GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' >&3
    read -r -t 5 status <&3 || exit 1
    [[ $status == *" 200 "* ]]
  ) 2>/dev/null
}

cmd=${1:-}
case $cmd in
install)
  if command -v versitygw >/dev/null; then
    echo "versitygw.sh: versitygw is installed: $(command -v versitygw)"
    exit 0
  fi
  command -v go >/dev/null || die "go is needed to install versitygw"
  echo "versitygw.sh: installing versitygw $VERSION into $BIN"
  # Outside any module, so that regfs's go.mod is not touched.
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  (cd "$tmp" && GOFLAGS= GOBIN="$BIN" go install "github.com/versity/versitygw/cmd/versitygw@$VERSION")
  ;;
start)
  [ $# -ge 3 ] || die "usage: $0 start DIR PORT [BUCKET...]"
  dir=$2 port=$3
  shift 3
  command -v versitygw >/dev/null || die "versitygw is not installed: run $0 install"
  [ ! -e "$dir/versitygw.pid" ] || die "$dir/versitygw.pid exists: already started? ($0 stop $dir)"
  ! healthy "$port" || die "port $port is already serving"
  mkdir -p "$dir/root"
  for b in "$@"; do mkdir -p "$dir/root/$b"; done
  access=${AWS_ACCESS_KEY_ID:-regfs}
  secret=${AWS_SECRET_ACCESS_KEY:-regfs-secret}
  ROOT_ACCESS_KEY=$access ROOT_SECRET_KEY=$secret nohup versitygw \
    --port "127.0.0.1:$port" --health /health --quiet \
    posix "$dir/root" >"$dir/versitygw.log" 2>&1 </dev/null &
  pid=$!
  echo "$pid" >"$dir/versitygw.pid"
  for _ in $(seq 300); do
    if ! kill -0 "$pid" 2>/dev/null; then
      rm -f "$dir/versitygw.pid"
      cat "$dir/versitygw.log" >&2
      die "versitygw exited"
    fi
    if healthy "$port"; then
      echo "versitygw.sh: serving $dir/root on http://127.0.0.1:$port (pid $pid, log $dir/versitygw.log)"
      echo "export AWS_ACCESS_KEY_ID=$access AWS_SECRET_ACCESS_KEY=$secret"
      exit 0
    fi
    sleep 0.1
  done
  kill "$pid"
  rm -f "$dir/versitygw.pid"
  die "versitygw not healthy after 30s; log: $dir/versitygw.log"
  ;;
stop)
  [ $# -eq 2 ] || die "usage: $0 stop DIR"
  pidfile=$2/versitygw.pid
  [ -e "$pidfile" ] || die "no $pidfile"
  pid=$(cat "$pidfile")
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 100); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
  rm -f "$pidfile"
  ;;
*)
  sed -n '2,16s/^# \{0,1\}//p' "$0"
  [ -z "$cmd" ] || exit 2
  ;;
esac
