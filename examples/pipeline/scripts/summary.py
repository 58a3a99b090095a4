"""Join count files into a markdown table. Usage: summary.py DST.md COUNT.json..."""
import json
import os
import pathlib
import sys

dst, sources = pathlib.Path(sys.argv[1]), sys.argv[2:]
rows = [json.loads(pathlib.Path(s).read_text()) for s in sources]
title = os.environ.get("REPORT_TITLE", "Text statistics")
table = "\n".join(f"| {r['unit']} | {r['count']} |" for r in rows)
dst.write_text(f"# {title}\n\n| unit | count |\n|---|---|\n{table}\n")
print(dst.read_text())
