#!/usr/bin/env python3
"""Removes every LXD object the test suite makes, so the next `make test` starts as on a
fresh machine: every `ghrt-*` project (its instances, images and profiles first), every
`ghrt-*` storage pool, network ACL and network (and the network tests' `ghb*` bridges
and the charm's `ghr-*` ACLs), and the `default` storage pool that
setup-lxd.sh creates (when nothing uses it; `make test` creates it again).

Run it only while no test runs: unlike the fixture's own reaping, it does not spare projects
whose owner process is alive. Objects without the `ghrt-` prefix (an operator's) are never
touched, except the unused `default` pool.
"""
import json
import os
import subprocess
import sys
import tempfile

PREFIX = "ghrt-"


def lxc(*args, project=None, check=False):
    cmd = ["lxc"] + (["--project", project] if project else []) + list(args)
    out = subprocess.run(cmd, capture_output=True, text=True, env=ENV)
    if check and out.returncode != 0:
        sys.exit(f"clean-lxd: {' '.join(cmd)}: {out.stderr.strip()}")
    return out


def query(path):
    out = lxc("query", path)
    if out.returncode != 0:
        return []
    return json.loads(out.stdout) or []


def names(path):
    return [u.rsplit("/", 1)[-1].split("?")[0] for u in query(path)]


def purge_project(project):
    for name in names(f"/1.0/instances?project={project}"):
        lxc("delete", "--force", name, project=project)
    for fp in names(f"/1.0/images?project={project}"):
        lxc("image", "delete", fp, project=project)
    for name in names(f"/1.0/profiles?project={project}"):
        if name != "default":
            lxc("profile", "delete", name, project=project)
    for name in names(f"/1.0/networks?project={project}"):
        if name.startswith(PREFIX):
            lxc("network", "delete", name, project=project)
    lxc("project", "delete", project, check=True)
    print(f"clean-lxd: deleted project {project}")


def main():
    removed = 0
    for project in names("/1.0/projects"):
        if project.startswith(PREFIX):
            purge_project(project)
            removed += 1
    # Network tests name bridges `ghb<pid><n>` (interface names stop at 15 characters), and
    # the charm names its ACL `ghr-<model>-<unit>`. ACLs go first: a bridge using one
    # cannot be deleted.
    for kind, path, prefixes in (
        ("network acl", "/1.0/network-acls", (PREFIX, "ghr-")),
        ("network", "/1.0/networks", (PREFIX, "ghb")),
    ):
        for name in names(path):
            if name.startswith(prefixes):
                lxc(*kind.split(), "delete", name, check=True)
                print(f"clean-lxd: deleted {kind} {name}")
                removed += 1
    for name in names("/1.0/storage-pools"):
        if name.startswith(PREFIX):
            lxc("storage", "delete", name, check=True)
            print(f"clean-lxd: deleted storage pool {name}")
            removed += 1
    pool = query("/1.0/storage-pools/default")
    if pool and not pool.get("used_by"):
        lxc("storage", "delete", "default", check=True)
        print("clean-lxd: deleted the unused default storage pool")
        removed += 1
    print(f"clean-lxd: {removed} objects removed")


if __name__ == "__main__":
    # Hooks and CI may run without HOME: a client config of our own.
    conf = tempfile.mkdtemp(prefix="ghrt-clean-")
    ENV = dict(os.environ, LXD_CONF=conf, HOME=conf)
    try:
        main()
    finally:
        subprocess.run(["rm", "-rf", conf])
