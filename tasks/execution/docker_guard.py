"""Removes a step's container when the worker that started it dies (`python -m
tasks.execution.docker_guard ID`).

The worker holds the write end of this process's stdin; the kernel closes it however the worker ends.
EOF without the word "done" first means the worker died mid-step: kill and remove the container.
"""

from __future__ import annotations

import sys


def main(container_id: str) -> int:
    said = sys.stdin.buffer.read()  # blocks until the worker writes "done" and closes, or dies
    if said.strip() == b"done":
        return 0
    import docker
    from docker.errors import DockerException, NotFound

    try:
        docker.from_env().containers.get(container_id).remove(force=True)
    except NotFound:
        return 0
    except DockerException as err:
        print(f"wisc-sort docker guard: could not remove container {container_id}: {err}", file=sys.stderr)
        return 1
    print(f"wisc-sort docker guard: removed container {container_id[:12]} of a dead worker", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
