#!/usr/bin/env python3
"""Pack the charm archive `juju deploy` takes, around an already built binary.

charmcraft's own `pack` needs a build VM; this writes the same layout offline: the three
YAML files, a generated manifest.yaml (Juju reads only its bases), dispatch, hooks/ (as
regular files with dispatch's content, like charmcraft packs its hook links) and
bin/github-runner-charm (hooks, actions, the exporter) with bin/github-runner-worker (reactive
workers, the only one carrying the message-queue drivers). Executables keep mode 0755. Entries are sorted and timestamped
from SOURCE_DATE_EPOCH (default 2020-01-01) so the archive is reproducible.
"""

import argparse
import os
import pathlib
import stat
import sys
import time
import zipfile

YAML_FILES = ("metadata.yaml", "config.yaml", "actions.yaml")
LEGACY_HOOKS = ("install", "start", "upgrade-charm")
BINARY_NAME = "github-runner-charm"
WORKER_BINARY_NAME = "github-runner-worker"


def manifest(base: str, arch: str) -> bytes:
    return (
        "# Written by scripts/pack_charm.py (make charm).\n"
        "bases:\n"
        "- name: ubuntu\n"
        f"  channel: '{base}'\n"
        "  architectures:\n"
        f"  - {arch}\n"
    ).encode()


def add(archive: zipfile.ZipFile, name: str, data: bytes, mode: int, when) -> None:
    info = zipfile.ZipInfo(name, date_time=when)
    info.external_attr = (stat.S_IFREG | mode) << 16
    info.compress_type = zipfile.ZIP_DEFLATED
    archive.writestr(info, data)


def add_dir(archive: zipfile.ZipFile, name: str, when) -> None:
    info = zipfile.ZipInfo(name.rstrip("/") + "/", date_time=when)
    info.external_attr = (stat.S_IFDIR | 0o755) << 16
    archive.writestr(info, b"")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--binary", required=True, type=pathlib.Path)
    parser.add_argument("--worker-binary", required=True, type=pathlib.Path)
    parser.add_argument("--output", required=True, type=pathlib.Path)
    parser.add_argument("--project", default=pathlib.Path(__file__).resolve().parent.parent, type=pathlib.Path)
    parser.add_argument("--base", default="22.04")
    parser.add_argument("--arch", default="amd64")
    args = parser.parse_args()

    epoch = int(os.environ.get("SOURCE_DATE_EPOCH", "1577836800"))
    when = time.gmtime(max(epoch, 315532800))[:6]  # zip cannot go before 1980
    dispatch = (args.project / "dispatch").read_bytes()
    tmp = args.output.with_name(args.output.name + ".tmp")
    with zipfile.ZipFile(tmp, "w") as archive:
        for name in YAML_FILES:
            add(archive, name, (args.project / name).read_bytes(), 0o644, when)
        add(archive, "manifest.yaml", manifest(args.base, args.arch), 0o644, when)
        add(archive, "dispatch", dispatch, 0o755, when)
        add_dir(archive, "hooks", when)
        for hook in LEGACY_HOOKS:
            add(archive, f"hooks/{hook}", dispatch, 0o755, when)
        add_dir(archive, "bin", when)
        add(archive, f"bin/{BINARY_NAME}", args.binary.read_bytes(), 0o755, when)
        add(archive, f"bin/{WORKER_BINARY_NAME}", args.worker_binary.read_bytes(), 0o755, when)
    tmp.replace(args.output)
    print(f"packed {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
