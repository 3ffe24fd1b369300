"""`wisc-sort images`: names, builds and base images of the step images (Dockerfile.si, Dockerfile.ks25).

A build assembles its own context (this project's source, plus `build-extras/`: the host's CA bundle for
pip behind a TLS proxy and an optional folder of wheels), then runs a classic `docker build` through the
Docker SDK, streaming its output. Layers are ordered so that a code change rebuilds seconds, not minutes.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from functools import lru_cache
from importlib import metadata
from pathlib import Path

from tasks import settings
from tasks.core.errors import UserError

REPO = Path(__file__).resolve().parents[2]  # the source tree: Dockerfiles, pyproject.toml
KINDS = ("si", "ks25")
DEFAULT_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
# The compiled Kilosort 2.5 base Dockerfile.ks25 starts from (made by MATLAB's compiler.package.docker).
KS25_BASE = "ks2_5-matlab-base"


def docker_client():
    """The Docker engine's client; a one-line error when the engine does not answer."""
    import docker
    from docker.errors import DockerException

    try:
        client = docker.from_env(timeout=600)
        client.ping()
    except DockerException as err:
        raise UserError(
            f"docker executor: the Docker engine does not answer ({err}); start dockerd, "
            "or run with --executor local"
        ) from None
    return client


@lru_cache(maxsize=16)
def image_id(name: str) -> str:
    """The local image's content id (sha256:...); cached for the process: output() asks on every pass."""
    from docker.errors import ImageNotFound

    try:
        return docker_client().images.get(name).id
    except ImageNotFound:
        kind = "ks25" if "ks25" in name else "si"
        raise UserError(
            f"docker executor: image {name} not found; build it with `wisc-sort images build {kind}`"
        ) from None


def version() -> str:
    try:
        return metadata.version("wisc-sorting")
    except metadata.PackageNotFoundError:
        return "0.0.0"


def image_name(kind: str) -> str:
    """`[wisc] image_<kind>` from luigi.cfg (or WISC_IMAGE_<KIND>), default wisc-sorting-<kind>:<version>."""
    default = f"wisc-sorting-{kind}:{version()}"
    return settings.raw(f"image_{kind}") or default


def _copy_source(context: Path) -> None:
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("pyproject.toml", "README.md", "Dockerfile.si", "Dockerfile.ks25"):
        shutil.copy2(REPO / name, context / name)
    for folder in ("tasks", "containers", "opts"):
        shutil.copytree(REPO / folder, context / folder, ignore=ignore)


def assemble_context(context: Path, ca_bundle: Path | None, wheels: Path | None) -> None:
    _copy_source(context)
    extras = context / "build-extras"
    (extras / "wheels").mkdir(parents=True)
    if ca_bundle is not None:
        shutil.copy2(ca_bundle, extras / "ca.crt")
    if wheels is not None:
        found = sorted(wheels.glob("*.whl"))
        if not found:
            raise UserError(f"--wheels {wheels}: no .whl files there; point it at a folder of wheels")
        for wheel in found:
            shutil.copy2(wheel, extras / "wheels" / wheel.name)


def _stream_build(client, **kwargs) -> str:
    """docker build through the SDK, printing its output; the built image id, or a one-line error."""
    image = None
    for event in client.api.build(decode=True, rm=True, forcerm=True, **kwargs):
        if "stream" in event:
            sys.stdout.write(event["stream"])
            sys.stdout.flush()
        if "aux" in event and "ID" in event["aux"]:
            image = event["aux"]["ID"]
        if "error" in event:
            last = event["error"].strip().splitlines()[-1]
            raise UserError(f"docker build of {kwargs['tag']} failed: {last}")
    if image is None:
        raise UserError(f"docker build of {kwargs['tag']} ended without an image; see the output above")
    return image


def build_image(
    kind: str,
    variant: str = "cuda",
    base_image: str | None = None,
    wheels: Path | None = None,
    ca_bundle: Path | None = DEFAULT_CA_BUNDLE,
    tag: str | None = None,
    with_torch: bool = True,
) -> tuple[str, str]:
    """Build Dockerfile.<kind>; returns (tag, image id)."""

    client = docker_client()
    tag = tag or image_name(kind)
    if ca_bundle is not None and not ca_bundle.exists():
        if ca_bundle != DEFAULT_CA_BUNDLE:
            raise UserError(f"--ca-bundle {ca_bundle}: no such file")
        ca_bundle = None  # a host without the default bundle builds without one
    buildargs = {"VERSION": version(), "TORCH": variant if with_torch else "none"}
    if base_image:
        buildargs["BASE_IMAGE"] = base_image
    if kind == "ks25":
        _require_ks25_base(client, base_image or KS25_BASE)
    with tempfile.TemporaryDirectory(prefix="wisc-image-") as tmp:
        context = Path(tmp)
        assemble_context(context, ca_bundle, wheels)
        image = _stream_build(
            client, path=str(context), dockerfile=f"Dockerfile.{kind}", tag=tag, buildargs=buildargs
        )
    image_id.cache_clear()
    return tag, image


def _require_ks25_base(client, base: str) -> None:
    from docker.errors import ImageNotFound

    try:
        client.images.get(base)
    except ImageNotFound:
        raise UserError(
            f"Dockerfile.ks25 starts from {base}, the MATLAB-compiled Kilosort 2.5 image, which is not on "
            "this host; make it on a machine with MATLAB (see the steps at the top of Dockerfile.ks25)"
        ) from None


def make_base_image(name: str, suite: str = "bookworm", mirror: str = "http://deb.debian.org/debian") -> str:
    """A minimal Debian image from debootstrap + docker import, for hosts that reach no image registry."""

    client = docker_client()
    if shutil.which("debootstrap") is None:
        raise UserError("images base needs debootstrap: apt-get install -y debootstrap")
    with tempfile.TemporaryDirectory(prefix="wisc-base-") as tmp:
        root, tarball = Path(tmp) / "root", Path(tmp) / "root.tar"
        subprocess.run(["debootstrap", "--variant=minbase", suite, str(root), mirror], check=True)
        subprocess.run(["tar", "-C", str(root), "-cf", str(tarball), "."], check=True)
        repository, _, tag = name.partition(":")
        client.api.import_image_from_file(str(tarball), repository=repository, tag=tag or "latest")
    return client.images.get(name).id
