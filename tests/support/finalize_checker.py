"""Second process of the finalize kill test: polls the source and destination trees while finalize runs and
is killed; every watched file must at every moment be complete (its sha256) in at least one of them.

Usage: python finalize_checker.py WATCH.json SOURCE DEST STOP_FILE RESULT.json
WATCH.json maps relative paths to sha256, or to "params" / "json" for the two files finalize rewrites
atomically (params.py, the sort manifest): any version that parses will do.
Writes {"polls": n, "violations": [...]} to RESULT.json.
"""

from __future__ import annotations

import ast
import hashlib
import json
import sys
from pathlib import Path


def complete(path: Path, digest: str) -> bool:
    try:
        data = path.read_bytes()
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return False
    if digest == "json":
        try:
            return isinstance(json.loads(data), dict)
        except ValueError:
            return False
    if digest == "params":
        try:
            names = [n.targets[0].id for n in ast.parse(data).body if isinstance(n, ast.Assign)]
        except SyntaxError:
            return False
        return "dat_path" in names
    return hashlib.sha256(data).hexdigest() == digest


def main(watch_file: str, source: str, dest: str, stop_file: str, result_file: str) -> None:
    watch = json.loads(Path(watch_file).read_text())
    src, dst, stop = Path(source), Path(dest), Path(stop_file)
    polls, violations = 0, []
    while True:
        stopping = stop.exists()  # one more full poll after the stop request
        for rel, digest in watch.items():
            # The source first: a file leaves the source only after its verified copy is in place.
            if not (complete(src / rel, digest) or complete(dst / rel, digest)):
                violations.append(f"poll {polls}: {rel} complete in neither place")
        polls += 1
        if stopping:
            break
    Path(result_file).write_text(json.dumps({"polls": polls, "violations": violations[:50]}))


if __name__ == "__main__":
    main(*sys.argv[1:6])
