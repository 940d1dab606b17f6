#!/bin/sh
# Turns a text file into a C string constant: embed.sh SYMBOL FILE > out.c
# Used for the RELAX NG schema and the embedded default configuration, so
# parleyd validates and starts without any installed data file.
symbol=$1
file=$2
printf '/* Generated from %s by build-aux/embed.sh; do not edit. */\n' "$(basename "$file")"
printf 'const char %s[] =\n' "$symbol"
sed -e 's/\\/\\\\/g' -e 's/"/\\"/g' -e 's/^/"/' -e 's/$/\\n"/' "$file"
printf ';\n'
