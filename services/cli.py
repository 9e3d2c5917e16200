"""Operator command line: run the network locally, mint tokens for trying the APIs."""

from __future__ import annotations

import shutil
import signal
import threading
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from services.network import REPO_ROOT, Network

app = typer.Typer(add_completion=False, help="住基ネット: run and operate the resident-registry network.")
console = Console()
DEFAULT_DATA = REPO_ROOT / ".data"


@app.command()
def run(data: Path = typer.Option(DEFAULT_DATA, help="where databases, keys, logs and traces live"), topology: Path = typer.Option(REPO_ROOT / "deploy" / "topology.yaml")) -> None:
    """Start embedded PostgreSQL, the broker and every node; Ctrl-C stops everything."""
    network = Network(root=data, topology_path=topology)
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        with console.status("starting PostgreSQL, the broker and the nodes…"):
            network.start()
        table = Table(title="住基ネット — the network is up")
        table.add_column("node")
        table.add_column("listens on")
        table.add_column("database")
        for node_id, running in network.nodes.items():
            table.add_row(node_id, network.url(node_id), running.node.database)
        console.print(table)
        console.print(f"PostgreSQL 127.0.0.1:{network.postgres.port} (SCRAM; one role per tenant) · Kafka {network.broker.bootstrap}")
        console.print(f"logs: {data / 'logs'} · traces: {data / 'traces'} · Ctrl-C to stop")
        while not stop.wait(1.0):
            for node_id, running in network.nodes.items():
                if running.process is not None and running.process.poll() is not None:
                    console.print(f"[red]{node_id} exited ({running.process.returncode}); restarting[/red]")
                    network.start_node(node_id)
    finally:
        console.print("stopping…")
        network.stop()
        console.print("stopped.")


@app.command()
def token(agency: str = typer.Option(..., help="agency id from the topology"), audience: str = typer.Option("national", help="provider: national or pref-<code>"), data: Path = typer.Option(DEFAULT_DATA)) -> None:
    """Print a signed agency token (valid 5 minutes) for trying the provision API."""
    network = Network(root=data)
    print(network.agency_token(agency, audience=audience))


@app.command()
def clean(data: Path = typer.Option(DEFAULT_DATA)) -> None:
    """Delete all local data (databases, keys, logs, traces)."""
    if data.exists():
        shutil.rmtree(data)
    console.print(f"removed {data}")


if __name__ == "__main__":
    app()
