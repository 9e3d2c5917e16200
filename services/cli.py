"""Operator command line: run the network locally, mint tokens, see the state of
every node, resync a person, replay an outbox, follow a trace, seed a population."""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
import time
from pathlib import Path

import httpx
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table
from rich.tree import Tree

from services.network import REPO_ROOT, Network

app = typer.Typer(add_completion=False, help="住基ネット: run and operate the resident-registry network.")
console = Console()
DEFAULT_DATA = REPO_ROOT / ".data"


@app.command()
def run(
    data: Path = typer.Option(DEFAULT_DATA, help="where databases, keys, logs and traces live"),
    topology: Path = typer.Option(REPO_ROOT / "deploy" / "topology.yaml"),
    demo_population: int = typer.Option(200, envvar="JUKINET_DEMO_POPULATION", help="persons registered at the counters on the first start (0: none)"),
) -> None:
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
        marker = data / "demo-population.seeded"
        if demo_population > 0 and not marker.exists():
            try:
                _seed_over_http(network.topology, {nid: network.url(nid) for nid in network.nodes}, demo_population, seed=1)
                marker.write_text(str(demo_population))
            except (RuntimeError, httpx.HTTPError) as exc:  # the network stays up; the operator sees why
                console.print(f"[yellow]demo population not completed: {exc}[/yellow]")
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


# --- operating a running network ------------------------------------------------------


def _addresses(data: Path) -> dict:
    path = data / "network.json"
    if not path.exists():
        raise typer.BadParameter(f"{path} not found: is the network running with this data directory?")
    return json.loads(path.read_text())


def _node_url(data: Path, node_id: str) -> str:
    nodes = _addresses(data)["nodes"]
    if node_id not in nodes:
        raise typer.BadParameter(f"no node {node_id}; nodes: {', '.join(nodes)}")
    return nodes[node_id]


def _operator_headers(data: Path, node_id: str) -> dict[str, str]:
    from services.common.runtime import OPERATOR_PARTY
    from services.common.tokens import load_private_key, sign_token
    from services.common.topology import Node

    kind, tenant = node_id.split(".", 1)
    key = load_private_key(data / "keys" / "private" / f"{OPERATOR_PARTY}.key")
    token = sign_token(key, issuer=OPERATOR_PARTY, audience=Node(kind=kind, tenant=tenant).party, lifetime_seconds=60)
    return {"authorization": f"Bearer {token}"}


def parse_metrics(text: str) -> dict[str, float]:
    """Sums of the jukinet series of one /metrics page (what ``status`` shows)."""
    from prometheus_client.parser import text_string_to_metric_families

    sums = {"lag": 0.0, "backlog": 0.0, "refusals": 0.0, "dead_letters": 0.0, "provisions": 0.0}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "jukinet_consumer_lag":
                sums["lag"] += sample.value
            elif sample.name == "jukinet_outbox_backlog":
                sums["backlog"] += sample.value
            elif sample.name == "jukinet_refusals_total":
                sums["refusals" if sample.labels.get("channel") == "http" else "dead_letters"] += sample.value
            elif sample.name == "jukinet_provisions_total":
                sums["provisions"] += sample.value
    return sums


def node_status(url: str) -> dict:
    """Up, ready and the metric sums of one node (read from /ready and /metrics)."""
    try:
        ready = httpx.get(f"{url}/ready", timeout=5.0)
        scraped = httpx.get(f"{url}/metrics", timeout=10.0)
    except httpx.HTTPError:
        return {"up": False, "ready": False}
    return {"up": True, "ready": ready.status_code == 200, **(parse_metrics(scraped.text) if scraped.status_code == 200 else {})}


@app.command()
def status(data: Path = typer.Option(DEFAULT_DATA), as_json: bool = typer.Option(False, "--json", help="print JSON instead of a table")) -> None:
    """Every node: up, ready, consumer lag, outbox backlog, refusals, dead letters, last snapshot."""
    nodes = _addresses(data)["nodes"]
    states = {node_id: node_status(url) for node_id, url in nodes.items()}
    if as_json:
        print(json.dumps(states))
        return
    table = Table(title="住基ネット — status")
    for column in ("node", "up", "ready", "consumer lag", "outbox backlog", "refusals", "dead letters", "provided", "last snapshot"):
        table.add_column(column, justify="left" if column == "node" else "right")

    def number(state: dict, key: str) -> str:
        return "-" if key not in state else f"{int(state[key]):,}"

    for node_id, state in states.items():
        table.add_row(
            node_id, "[green]up[/green]" if state["up"] else "[red]down[/red]", "yes" if state.get("ready") else "[red]no[/red]",
            number(state, "lag"), number(state, "backlog"), number(state, "refusals"), number(state, "dead_letters"), number(state, "provisions"),
            "n/a",  # snapshots are not implemented yet
        )
    console.print(table)
    if not all(s["up"] for s in states.values()):
        raise typer.Exit(1)


@app.command()
def resync(resident_code: str, node: str = typer.Option("national_server.national", help="the node that fetches the person's changes from the tier below"), data: Path = typer.Option(DEFAULT_DATA)) -> None:
    """Ask a node to fetch one person's changes after the version it holds from the tier below, now."""
    response = httpx.post(f"{_node_url(data, node)}/internal/v1/operator/resync/{resident_code}", headers=_operator_headers(data, node), timeout=30.0)
    if response.status_code != 200:
        console.print(f"[red]{node} refused ({response.status_code}):[/red] {response.text}")
        raise typer.Exit(1)
    console.print_json(response.text)


@app.command()
def replay(
    node: str = typer.Option(..., help="node whose outbox to replay, e.g. cs_gateway.131016"),
    from_id: int = typer.Option(..., help="first outbox row id"),
    to_id: int = typer.Option(..., help="last outbox row id"),
    data: Path = typer.Option(DEFAULT_DATA),
) -> None:
    """Deliver a range of already-sent outbox rows again, oldest first (every receiver is idempotent)."""
    response = httpx.post(f"{_node_url(data, node)}/internal/v1/operator/outbox/replay", params={"from_id": from_id, "to_id": to_id}, headers=_operator_headers(data, node), timeout=30.0)
    if response.status_code != 200:
        console.print(f"[red]{node} refused ({response.status_code}):[/red] {response.text}")
        raise typer.Exit(1)
    console.print_json(response.text)


def load_spans(traces: Path, trace_id: str) -> tuple[list[dict], list[dict]]:
    """Spans of one trace from every node's JSON-lines file, and spans elsewhere that link to it."""
    spans, linking = [], []
    for path in sorted(traces.glob("*.jsonl")):
        with path.open(encoding="utf-8") as f:
            for line in f:
                if trace_id not in line:
                    continue
                span = json.loads(line)
                if span["trace_id"] == trace_id:
                    spans.append(span)
                elif any(link["trace_id"] == trace_id for link in span.get("links", [])):
                    linking.append(span)
    return spans, linking


def trace_tree(spans: list[dict], trace_id: str) -> Tree:
    """The spans of one trace as a tree, children in start order, across services."""
    by_id = {s["span_id"]: s for s in spans}
    children: dict[str | None, list[dict]] = {}
    for span in spans:
        parent = span["parent_id"] if span["parent_id"] in by_id else None
        children.setdefault(parent, []).append(span)
    start = min((s["start"] for s in spans), default=0)
    root = Tree(f"trace {trace_id} · {len(spans)} spans")

    def label(span: dict) -> str:
        offset = (span["start"] - start) / 1e6
        duration = ((span["end"] or span["start"]) - span["start"]) / 1e6
        return f"[bold]{span['service']}[/bold] {span['name']} [dim]+{offset:.1f} ms, {duration:.1f} ms[/dim]"

    def add(branch: Tree, parent: str | None) -> None:
        for span in sorted(children.get(parent, []), key=lambda s: s["start"]):
            add(branch.add(label(span)), span["span_id"])

    add(root, None)
    return root


@app.command("trace")
def trace_command(trace_id: str, data: Path = typer.Option(DEFAULT_DATA)) -> None:
    """Follow one trace through the network: every span of every node, as a tree."""
    spans, linking = load_spans(data / "traces", trace_id.lower())
    if not spans:
        console.print(f"[red]no spans of trace {trace_id} under {data / 'traces'}[/red]")
        raise typer.Exit(1)
    console.print(trace_tree(spans, trace_id.lower()))
    for span in linking:
        console.print(f"linked from trace {span['trace_id']}: [bold]{span['service']}[/bold] {span['name']}")


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TimeRemainingColumn(), console=console)


def _seed_over_http(topology, nodes: dict[str, str], persons: int, *, seed: int) -> list[str]:
    from services.population import PopulationSpec, register_over_http

    spec = PopulationSpec(seed=seed, municipalities=tuple(m.code for m in topology.municipalities))
    started = time.monotonic()
    with _progress() as progress, httpx.Client(timeout=30.0) as client:
        task = progress.add_task("registering at the counters", total=persons, rate="")

        def tick() -> None:
            done = progress.tasks[0].completed + 1
            progress.update(task, advance=1, rate=f"{done / max(time.monotonic() - started, 1e-6):,.0f}/s")

        return register_over_http(lambda code: nodes[f"municipal_rrs.{code}"], spec, persons, client=client, on_person=tick)


@app.command()
def seed(
    persons: int = typer.Argument(..., help="how many persons"),
    seed_value: int = typer.Option(1, "--seed", help="same seed, same population"),
    bulk: bool = typer.Option(False, help="write every tier's tables directly with COPY (millions of persons) instead of registering at the counters"),
    data: Path = typer.Option(DEFAULT_DATA),
    topology: Path = typer.Option(REPO_ROOT / "deploy" / "topology.yaml"),
) -> None:
    """Fill the running network with a synthetic population (real addresses, names with readings, households)."""
    from services.common.topology import load_topology

    topo = load_topology(topology)
    addresses = _addresses(data)
    started = time.monotonic()
    if not bulk:
        _seed_over_http(topo, addresses["nodes"], persons, seed=seed_value)
    else:
        import psycopg

        from services.population import PopulationSpec, bulk_load

        host, port = addresses["postgres"].rsplit(":", 1)
        secrets_dir = data / "postgres" / "secrets"

        def connect(database: str):
            password = (secrets_dir / f"{database}.password").read_text().strip()
            return psycopg.connect(host=host, port=int(port), user=database, password=password, dbname=database)

        spec = PopulationSpec(seed=seed_value, municipalities=tuple(m.code for m in topo.municipalities))
        with _progress() as progress:
            task = progress.add_task("writing every tier with COPY", total=persons, rate="")

            def advance(n: int) -> None:
                done = progress.tasks[0].completed + n
                progress.update(task, advance=n, rate=f"{done / max(time.monotonic() - started, 1e-6):,.0f}/s")

            bulk_load(connect, topo, spec, persons, on_progress=advance)
    elapsed = time.monotonic() - started
    console.print(f"{persons:,} persons in {elapsed:,.1f} s ({persons / elapsed:,.0f} persons/s)")


# --- docker compose deployment (deploy/compose.yaml) ----------------------------------


@app.command("deploy-secrets")
def deploy_secrets(env_file: Path = typer.Option(REPO_ROOT / "deploy" / ".env"), topology: Path = typer.Option(REPO_ROOT / "deploy" / "topology.yaml")) -> None:
    """Write the compose deployment's database passwords (one per tenant) to deploy/.env, keeping existing ones."""
    import secrets as random_secrets

    from services.common.topology import load_topology
    from services.deploy_compose import password_variable

    existing = dict(line.split("=", 1) for line in env_file.read_text().splitlines() if "=" in line) if env_file.exists() else {}
    wanted = ["JUKINET_POSTGRES_PASSWORD"] + [password_variable(n.database) for n in load_topology(topology).nodes]
    values = {name: existing.get(name) or random_secrets.token_urlsafe(24) for name in wanted}
    env_file.write_text("".join(f"{k}={v}\n" for k, v in {**existing, **values}.items()))
    env_file.chmod(0o600)
    console.print(f"{env_file}: {len(wanted)} passwords ({len(wanted) - len(set(wanted) & set(existing))} new)")


@app.command("deploy-keys")
def deploy_keys(out: Path = typer.Option(..., help="the keys volume"), topology: Path = typer.Option(REPO_ROOT / "deploy" / "topology.yaml")) -> None:
    """Make every party's key pair for a container deployment: private/<party>/<party>.key, public/<party>.pub."""
    from services.common.runtime import OPERATOR_PARTY
    from services.common.tokens import generate_key_pair
    from services.common.topology import load_topology

    topo = load_topology(topology)
    parties = [n.party for n in topo.nodes] + [f"agency-{a.id}" for a in topo.agencies] + [OPERATOR_PARTY]
    for party in parties:
        generate_key_pair(out / "private" / party, out / "public", party)
    pseudonym = out / "private" / "national" / "national-pseudonym.key"
    if not pseudonym.exists():
        pseudonym.write_bytes(os.urandom(64))
        pseudonym.chmod(0o600)
    from services.national_server.jpki_store import generate_ca_key_file

    generate_ca_key_file(out / "private" / "national" / "national-jpki-ca.key")
    console.print(f"{len(parties)} key pairs under {out}")


@app.command()
def clean(data: Path = typer.Option(DEFAULT_DATA)) -> None:
    """Delete all local data (databases, keys, logs, traces)."""
    if data.exists():
        shutil.rmtree(data)
    console.print(f"removed {data}")


if __name__ == "__main__":
    app()
