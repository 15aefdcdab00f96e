#!/usr/bin/env bash
# kcat with Avro / schema registry support (`kcat -C -s value=avro -r <registry URL>`), built into
# OUT_DIR/kcat. Debian's kcat is the same 1.7.1 built without it: libserdes, the Confluent
# schema-registry client kcat decodes Avro with, is packaged nowhere this project installs from, so
# its C sources (8.0.0, Apache-2.0) are kept in libserdes-8.0.0/ beside kcat's own (1.7.1, BSD-2).
# Links against Debian's librdkafka, yajl, avro-c, jansson and libcurl (install-system-deps.sh).
# Called by tapstream.localstack.kcat, which caches the result per content of this folder.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${1:?usage: build.sh OUT_DIR}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/include/libserdes" "$out"

# libserdes, as its own Makefile builds it with Avro-C enabled. Its bundled tinycthread defines the
# C11 names (thrd_create, mtx_lock, ...) that librdkafka takes from glibc, with other return codes:
# linked as they are, librdkafka would call these and fail to start its threads. Renamed here.
printf '#define ENABLE_AVRO_C 1\n' >"$work/config.h"
mkdir -p "$work/src"
cp "$here"/libserdes-8.0.0/*.[ch] "$work/src/"
{
  for sym in cnd_broadcast cnd_destroy cnd_init cnd_signal cnd_timedwait cnd_timedwait_ms cnd_wait \
    mtx_destroy mtx_init mtx_lock mtx_timedlock mtx_trylock mtx_unlock thrd_create thrd_current \
    thrd_detach thrd_equal thrd_exit thrd_is_current thrd_join thrd_sleep thrd_yield tss_create \
    tss_delete tss_get tss_set; do
    echo "#define $sym serdes_tct_$sym"
  done
} >"$work/tct_rename.h"
CFLAGS=(-O2 -g -Wall -Wno-unused-function -Wno-deprecated-declarations -Wno-unused-but-set-variable)
for c in serdes rest schema-cache framing tinycthread serialize-avro deserialize-avro schema-avro; do
  gcc "${CFLAGS[@]}" -include "$work/tct_rename.h" -c "$work/src/$c.c" -o "$work/$c.o"
done
ar rcs "$work/libserdes.a" "$work"/*.o
cp "$here"/libserdes-8.0.0/{serdes.h,serdes-common.h,serdes-avro.h} "$work/include/libserdes/"

# kcat: what its configure script finds on Debian 12 with libserdes present.
mkdir -p "$work/kcat"
cat >"$work/kcat/config.h" <<'EOF'
#define KCAT_VERSION "1.7.1"
#define ENABLE_KAFKACONSUMER 1
#define ENABLE_JSON 1
#define HAVE_YAJL 1
#define ENABLE_AVRO 1
#define HAVE_SERDES 1
#define ENABLE_TXNS 1
#define ENABLE_INCREMENTAL_ASSIGN 1
EOF
src="$here/kcat-1.7.1"
gcc "${CFLAGS[@]}" -I"$work/kcat" -I"$work/include" -o "$work/kcat.bin" \
  "$src/kcat.c" "$src/format.c" "$src/tools.c" "$src/input.c" "$src/json.c" "$src/avro.c" \
  "$work/libserdes.a" -lrdkafka -lyajl -lavro -ljansson -lcurl -lpthread -lm
mv "$work/kcat.bin" "$out/kcat"
