"""A throwaway PostgreSQL server for stores with a `catalog=postgres:...` catalog: the tests'
`postgres` fixture, tests.faults.catalog_stress and tests.faults.kills all start this one.

    with PostgresServer() as server:
        catalog = server("kills")  # a new database: "postgres:host=127.0.0.1 port=... user=labelgen dbname=kills"
        server.stop(); server.start()  # an outage

Debian's `postgresql` package (`.ci/run` installs it), its newest version: initdb in a temp
folder, trust auth, user labelgen, `pg_ctl start` on a free port of 127.0.0.1 (unix socket
in the same folder), as user `postgres` via `runuser` when run as root (the server refuses
root). close() stops it (immediate) and removes its folder.
"""

import glob
import os
import re
import shutil
import subprocess
import tempfile

from cluster.local_up import free_ports


def bindir() -> str | None:
    """The newest installed PostgreSQL server's bin folder, or None."""
    bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(re.findall(r"/(\d+)/bin/", p)[0]))
    return os.path.dirname(bins[-1]) if bins else None


class PostgresServer:
    """Started on creation; calling it makes a database and returns its catalog string.
    `settings`: more `-c name=value` for the server."""

    def __init__(self, settings: dict | None = None):
        self.bindir = bindir()
        if self.bindir is None:
            raise FileNotFoundError("PostgreSQL is not installed (Debian package postgresql; .ci/run installs it)")
        self.root = tempfile.mkdtemp(prefix="labelgen-pg-")
        self.as_user = []
        if os.getuid() == 0:  # the server refuses to run as root
            shutil.chown(self.root, "postgres")
            self.as_user = ["runuser", "-u", "postgres", "--"]
        (self.port,), self.log = free_ports(1), os.path.join(self.root, "log")
        self.dsn = f"host=127.0.0.1 port={self.port} user=labelgen"
        self.options = {"listen_addresses": "127.0.0.1", "fsync": "off", **(settings or {})}
        try:
            self.pg("initdb", "-D", f"{self.root}/data", "-A", "trust", "-U", "labelgen", "--no-sync")
            self.start()
        except BaseException:
            shutil.rmtree(self.root, ignore_errors=True)
            raise

    def pg(self, tool: str, *args: str):
        out = subprocess.run([*self.as_user, os.path.join(self.bindir, tool), *args], capture_output=True, text=True)
        if out.returncode:
            raise RuntimeError(
                f"{tool} {' '.join(args)} failed ({out.returncode}): {out.stderr.strip() or out.stdout.strip()}"
            )

    def start(self):
        self.pg(
            "pg_ctl",
            "-D",
            f"{self.root}/data",
            "-l",
            self.log,
            "-w",
            "start",
            "-o",
            " ".join([f"-p {self.port} -k {self.root}", *(f"-c {k}={v}" for k, v in self.options.items())]),
        )

    def stop(self, mode: str = "fast"):
        self.pg("pg_ctl", "-D", f"{self.root}/data", "-m", mode, "-w", "stop")

    def __call__(self, name: str) -> str:
        self.pg("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "labelgen", name)
        return f"postgres:{self.dsn} dbname={name}"

    def close(self):
        try:
            self.stop("immediate")
        except RuntimeError:
            pass  # already stopped
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


if __name__ == "__main__":
    from tests.support import help_only

    help_only(__spec__.name, __doc__)
