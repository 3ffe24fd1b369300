#!/bin/sh
# Installs the step programs' Python environment into /opt/venv while an image builds (both Dockerfiles).
#   image_setup.sh deps TORCH     the dependencies of pyproject.toml (light + [si]) under constraints.txt,
#                                 and TORCH: cuda (PyPI's torch + kilosort4: the [ks4] extra), cpu (the same,
#                                 torch from the wheel folder) or none
#   image_setup.sh project DIR    this project itself, without touching the dependencies
# /build-extras holds ca.crt (the build host's CA bundle, if any), wheels/ and constraints.txt.
set -eu
extras=/build-extras
if [ -s "$extras/ca.crt" ]; then export PIP_CERT="$extras/ca.crt"; fi
export PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_DEFAULT_TIMEOUT=180
python="${PYTHON:-python3}"
[ -x /opt/venv/bin/python ] || "$python" -m venv /opt/venv
pip="/opt/venv/bin/pip install --find-links $extras/wheels -c $extras/constraints.txt"

case "$1" in
deps)
    # Read the requirements from pyproject.toml, so the image and `pip install -e '.[si]'` never disagree.
    requirements=$(/opt/venv/bin/python -c '
import tomllib
project = tomllib.load(open("/build-extras/pyproject.toml", "rb"))["project"]
# torch comes with the variant below (cuda, cpu from the wheel folder, or none)
print("\n".join(r for r in project["dependencies"] + project["optional-dependencies"]["si"] if not r.startswith("torch")))')
    echo "$requirements" > "$extras/requirements.txt"
    ks4=$(/opt/venv/bin/python -c '
import tomllib
print(" ".join(tomllib.load(open("/build-extras/pyproject.toml", "rb"))["project"]["optional-dependencies"]["ks4"]))')
    $pip -r "$extras/requirements.txt" "setuptools>=68"  # to install the project without build isolation
    case "$2" in
    none) ;;
    cpu)
        if ! ls "$extras"/wheels/torch-*+cpu-*.whl >/dev/null 2>&1; then
            echo "TORCH=cpu needs a CPU torch wheel in the wheel folder (wisc-sort images build --wheels DIR)" >&2
            exit 1
        fi
        $pip $ks4 ;;
    cuda) $pip $ks4 ;;
    *) echo "image_setup.sh deps: TORCH must be cuda, cpu or none, not '$2'" >&2; exit 2 ;;
    esac ;;
project)
    /opt/venv/bin/pip install --no-deps --no-build-isolation "$2"  # setuptools is in the venv already
    /opt/venv/bin/python -m containers --help >/dev/null ;;
*) echo "usage: image_setup.sh deps cuda|cpu|none | image_setup.sh project DIR" >&2; exit 2 ;;
esac
