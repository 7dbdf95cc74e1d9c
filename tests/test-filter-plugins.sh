#!/usr/bin/env bash
# The filter over plugins other than file: the same disk, by sha256, as
# the plugin reads from the file itself.
#  - nbd: a second nbdkit serves the image file raw; the filter over the
#    nbd plugin reads it, and writes to the fixed image go through both
#    servers into the file (qemu-img reads them back);
#  - curl: nginx on 127.0.0.1 serves the images by byte ranges; the
#    filter over the curl plugin reads them in place, read-only;
#  - xz: --filter=vhd --filter=xz file disk.vhd.xz, read-only.
# Each image: a fixed one and a dynamic one with data in some blocks.

source "$VHDKIT_SRCDIR/functions.sh"
source "$VHDKIT_SRCDIR/plugin-functions.sh"
source "$VHDKIT_SRCDIR/filter-functions.sh"
set -e
set -x

requires_plugin
requires_filter
requires_nbdsh
requires nbdcopy --version
requires qemu-img --version
requires qemu-io --version
requires xz --version
requires nbdkit nbd --version
requires nbdkit curl --version
requires nbdkit null --filter=xz --version
requires nginx -v

tmp=$(scratch_dir)
size=$((48 * 1024 * 1024))
vhdtool create --fixed "$size" "$tmp/fixed.vhd"
vhdtool create --dynamic --block-size 512K "$size" "$tmp/dynamic.vhd"
for img in fixed dynamic; do
  qemu-io -f vpc -c "write -P 7 1M 3M" -c "write -P 9 20M 513k" \
    -c "write -P 11 47M 1M" "$tmp/$img.vhd" >/dev/null
done

# want IMG: the sha256 of the disk as the plugin reads it from the file.
want ()
{
  nbdkit -U - "$VHDKIT_PLUGIN" file="$1" readonly=true \
    --run 'nbdcopy "$uri" - | sha256sum' | cut -d' ' -f1
}

# --- nbd: a second nbdkit serving the image file as it is.
stop_raw ()
{
  if [ -n "${raw_pid:-}" ]; then
    kill "$raw_pid" 2>/dev/null || true
    wait "$raw_pid" 2>/dev/null || true
    raw_pid=
  fi
}
cleanup_fn stop_raw
for img in fixed dynamic; do
  rm -f "$tmp/raw.sock"
  nbdkit -f -U "$tmp/raw.sock" file "$tmp/$img.vhd" &
  raw_pid=$!
  for (( i = 0; i < 200; i++ )); do
    [ -S "$tmp/raw.sock" ] && break
    sleep 0.05
  done
  got=$(nbdkit -U - -r --filter="$VHDKIT_FILTER" nbd socket="$tmp/raw.sock" \
          --run 'nbdcopy "$uri" - | sha256sum' | cut -d' ' -f1)
  test "$got" = "$(want "$tmp/$img.vhd")"
  if [ $img = fixed ]; then
    # Writes through both servers land in the file.
    nbdkit -U - --filter="$VHDKIT_FILTER" nbd socket="$tmp/raw.sock" \
      --run 'nbdsh -u "$uri" -c "
h.pwrite(b\"\\xab\" * 70000, 5 * 1024 * 1024 + 3)
h.flush()
"'
    stop_raw
    qemu-io -f vpc -c "read -P 0xab $((5 * 1024 * 1024 + 3)) 70000" \
      "$tmp/fixed.vhd" | grep -q "read 70000/70000"
    qemu-io -f vpc -c "read -P 7 1M 3M" "$tmp/fixed.vhd" |
      grep -q "read 3145728/3145728"
  fi
  stop_raw
done

# --- curl: nginx on 127.0.0.1, on a free port, serving $tmp/www.
stop_nginx ()
{
  if [ -f "$tmp/nginx.pid" ]; then
    kill "$(cat "$tmp/nginx.pid")" 2>/dev/null || true
  fi
}
cleanup_fn stop_nginx
mkdir "$tmp/www" "$tmp/nginx"
cp "$tmp/fixed.vhd" "$tmp/dynamic.vhd" "$tmp/www/"
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat > "$tmp/nginx.conf" <<NGINX
daemon on;
worker_processes 1;
pid $tmp/nginx.pid;
error_log $tmp/nginx/error.log;
events { worker_connections 64; }
http {
  access_log off;
  client_body_temp_path $tmp/nginx/body;
  proxy_temp_path $tmp/nginx/proxy;
  fastcgi_temp_path $tmp/nginx/fastcgi;
  uwsgi_temp_path $tmp/nginx/uwsgi;
  scgi_temp_path $tmp/nginx/scgi;
  server {
    listen 127.0.0.1:$port;
    root $tmp/www;
  }
}
NGINX
# As root, nginx's workers would run as nobody, who cannot read $tmp.
if [ "$(id -u)" -eq 0 ]; then
  sed -i "1i user root;" "$tmp/nginx.conf"
fi
nginx -c "$tmp/nginx.conf" -p "$tmp/nginx"
for (( i = 0; i < 200; i++ )); do
  [ -s "$tmp/nginx.pid" ] && break
  sleep 0.05
done
# The server honours byte ranges (the curl plugin needs them).
python3 - "$port" <<'PY'
import sys, urllib.request
req = urllib.request.Request("http://127.0.0.1:%s/fixed.vhd" % sys.argv[1],
                             headers={"Range": "bytes=512-1023"})
with urllib.request.urlopen(req) as r:
    assert r.status == 206, r.status
    assert len(r.read()) == 512
PY
for img in fixed dynamic; do
  got=$(nbdkit -U - -r --filter="$VHDKIT_FILTER" \
          curl "http://127.0.0.1:$port/$img.vhd" \
          --run 'nbdcopy "$uri" - | sha256sum' | cut -d' ' -f1)
  test "$got" = "$(want "$tmp/$img.vhd")"
done

# --- xz: the compressed image read in place (small xz blocks, so that
# the xz filter can seek).
for img in fixed dynamic; do
  xz -k -T1 --block-size=1MiB -c "$tmp/$img.vhd" > "$tmp/$img.vhd.xz"
  got=$(nbdkit -U - -r --filter="$VHDKIT_FILTER" --filter=xz \
          file "$tmp/$img.vhd.xz" \
          --run 'nbdcopy "$uri" - | sha256sum' | cut -d' ' -f1)
  test "$got" = "$(want "$tmp/$img.vhd")"
done
