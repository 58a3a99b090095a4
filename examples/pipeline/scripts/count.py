"""Count words or lines. Usage: count.py words|lines SRC DST.json"""
import json
import pathlib
import sys

unit, src, dst = sys.argv[1], pathlib.Path(sys.argv[2]), pathlib.Path(sys.argv[3])
text = src.read_text()
count = len(text.split()) if unit == "words" else len(text.splitlines())
dst.write_text(json.dumps({"unit": unit, "count": count}) + "\n")
print(f"{count} {unit}")
