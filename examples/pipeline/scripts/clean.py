"""Normalise text: lower case, single spaces. Usage: clean.py SRC DST"""
import pathlib
import sys

src, dst = map(pathlib.Path, sys.argv[1:3])
lines = [" ".join(line.lower().split()) for line in src.read_text().splitlines()]
dst.parent.mkdir(parents=True, exist_ok=True)
dst.write_text("\n".join(lines) + "\n")
print(f"cleaned {len(lines)} lines -> {dst}")
