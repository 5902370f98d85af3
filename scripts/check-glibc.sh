#!/usr/bin/env bash
# Fails when a binary needs a glibc newer than MAX (default 2.27: JetPack 4.6, Ubuntu 18.04).
# The dynamic loader refuses to start a program whose version references name a GLIBC_x.y that
# the board's libc lacks ("GLIBC_2.34 not found"), weak symbols included, so all of them count.
# Prints the highest version needed and, above the limit, the symbols that need it.
# Exit status: 0 within the limit, 1 above it, 2 for bad arguments or an unreadable file.
set -euo pipefail

usage() { echo "usage: $0 BINARY [MAX=2.27]" >&2; exit 2; }
[ $# -ge 1 ] && [ $# -le 2 ] || usage
bin=$1
max=${2:-2.27}
[[ $max =~ ^2\.[0-9]+(\.[0-9]+)?$ ]] || { echo "check-glibc: MAX must look like 2.27, not '$max'" >&2; exit 2; }
[ -f "$bin" ] || { echo "check-glibc: no such file: $bin" >&2; exit 2; }

# The cross binutils know aarch64; Debian's plain objdump reads these two tables of any ELF too.
objdump=${OBJDUMP:-aarch64-linux-gnu-objdump}
command -v "$objdump" >/dev/null 2>&1 || objdump=objdump
headers=$("$objdump" -p "$bin" 2>&1) || { echo "check-glibc: $objdump cannot read $bin: $headers" >&2; exit 2; }
symbols=$("$objdump" -T "$bin" 2>/dev/null || true)

# "x is newer than y" in version order.
newer() { [ "$1" != "$2" ] && [ "$(printf '%s\n%s\n' "$1" "$2" | sort -V | tail -n1)" = "$1" ]; }

versions=$(grep -oE 'GLIBC_2\.[0-9]+(\.[0-9]+)?' <<<"$headers" | sed 's/^GLIBC_//' | sort -uV || true)
name=$(basename "$bin")
if [ -z "$versions" ]; then
  echo "$name: needs no versioned glibc symbols (static or not linked against glibc)"
  exit 0
fi
highest=$(tail -n1 <<<"$versions")
echo "$name: highest glibc version needed: GLIBC_$highest (limit $max)"

status=0
for v in $versions; do
  newer "$v" "$max" || continue
  status=1
  # objdump -T: "... DF *UND* 0000000000000000 (GLIBC_2.34) pthread_create"; weak ones too.
  syms=$(awk -v ver="GLIBC_$v" '{ for (i = 1; i < NF; i++) if ($i == ver || $i == "(" ver ")") { print $NF; break } }' \
           <<<"$symbols" | sort -u | paste -sd' ' -)
  echo "  GLIBC_$v: ${syms:-(no symbol named; version reference only)}"
done
if ((status)); then
  echo "$name: needs glibc newer than $max: it will not start on a board with glibc $max" >&2
fi
exit "$status"
