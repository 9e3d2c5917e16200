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
                _seed_over_http(network.topology, {nid: network.url(nid) for nid in network.nodes}, demo_population, seed=1, data=data)
                marker.write_text(str(demo_population))
            except (RuntimeError, httpx.HTTPError) as exc:  # the network stays up; the operator sees why
                console.print(f"[yellow]demo population not completed: {exc}[/yellow]")
        _print_demo_logins(network)
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
def token(
    agency: str = typer.Option(..., help="agency id from the topology"),
    audience: str | None = typer.Option(None, help="provider: national or pref-<code>; by default the one that serves the agency in the topology"),
    topology: Path | None = typer.Option(None, help="the topology the network runs (it decides who serves prefectural affairs); default: the running network's"),
    data: Path = typer.Option(DEFAULT_DATA),
) -> None:
    """Print a signed agency token (valid 5 minutes) for trying the provision API."""
    network = Network(root=data, topology_path=_running_topology(data, topology))
    print(network.agency_token(agency, audience=audience))


# --- operating a running network ------------------------------------------------------


def _addresses(data: Path) -> dict:
    path = data / "network.json"
    if not path.exists():
        raise typer.BadParameter(f"{path} not found: is the network running with this data directory?")
    return json.loads(path.read_text())


def _running_topology(data: Path, given: Path | None) -> Path:
    """The topology given, else the one the network in ``data`` runs (``network.json``), else the sample topology."""
    if given is not None:
        return given
    path = data / "network.json"
    if path.exists() and (running := json.loads(path.read_text()).get("topology")):
        return Path(running)
    return REPO_ROOT / "deploy" / "topology.yaml"


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
            elif sample.name in _LAST_SERIES:  # snapshots and reconciliation: the newest time, the last run's counts
                key = _LAST_SERIES[sample.name]
                sums[key] = max(sums.get(key, 0.0), sample.value) if key.startswith("last_") else sums.get(key, 0.0) + sample.value
    return sums


_LAST_SERIES = {
    "jukinet_last_snapshot_timestamp": "last_snapshot", "jukinet_last_reconciliation_timestamp": "last_reconciliation",
    "jukinet_last_reconciliation_healed": "healed", "jukinet_last_reconciliation_reported": "reported",
}


def _ago(state: dict, key: str, node_id: str, *, applies: tuple[str, ...]) -> str:
    """How long ago a node last took/received a snapshot or reconciled; n/a where it does not."""
    if not node_id.startswith(applies):
        return "n/a"
    if key not in state:
        return "-" if not state.get("up") else "not yet"
    seconds = max(0.0, time.time() - state[key])
    age = f"{seconds:.0f} s ago" if seconds < 120 else (f"{seconds / 60:.0f} min ago" if seconds < 7200 else f"{seconds / 3600:.0f} h ago")
    if key == "last_reconciliation":
        age += f", {int(state.get('healed', 0))} healed" + (f", [red]{int(state['reported'])} reported[/red]" if state.get("reported") else "")
    return age


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
    """Every node: up, ready, consumer lag, outbox backlog, refusals, dead letters, last snapshot and reconciliation."""
    nodes = _addresses(data)["nodes"]
    states = {node_id: node_status(url) for node_id, url in nodes.items()}
    if as_json:
        print(json.dumps(states))
        return
    table = Table(title="住基ネット — status")
    for column in ("node", "up", "ready", "consumer lag", "outbox backlog", "refusals", "dead letters", "provided", "last snapshot", "last reconciliation"):
        table.add_column(column, justify="left" if column == "node" else "right")

    def number(state: dict, key: str) -> str:
        return "-" if key not in state else f"{int(state[key]):,}"

    # snapshots go to the prefecture servers, or to the national server when there are none
    snapshot_nodes = ("cs_gateway", "prefecture_server") if any(n.startswith("prefecture_server") for n in nodes) else ("cs_gateway", "national_server")
    for node_id, state in states.items():
        table.add_row(
            node_id, "[green]up[/green]" if state["up"] else "[red]down[/red]", "yes" if state.get("ready") else "[red]no[/red]",
            number(state, "lag"), number(state, "backlog"), number(state, "refusals"), number(state, "dead_letters"), number(state, "provisions"),
            _ago(state, "last_snapshot", node_id, applies=snapshot_nodes),
            _ago(state, "last_reconciliation", node_id, applies=("municipal_rrs", "cs_gateway", "prefecture_server", "national_server")),
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


def _operator_call(data: Path, node: str, method: str, path: str, *, timeout: float = 600.0, **kwargs) -> httpx.Response:
    response = httpx.request(method, f"{_node_url(data, node)}{path}", headers=_operator_headers(data, node), timeout=timeout, **kwargs)
    if response.status_code != 200:
        console.print(f"[red]{node} refused ({response.status_code}):[/red] {response.text}")
        raise typer.Exit(1)
    return response


def _reconciliation_table(results: list[dict], title: str) -> Table:
    table = Table(title=title)
    for column in ("id", "finished", "copy", "compared with", "trigger", "ranges", "descended", "persons", "healed", "reported", "outcome"):
        table.add_column(column, justify="left" if column in ("copy", "compared with", "outcome", "finished") else "right")
    for r in results:
        colour = {"consistent": "green", "healed": "yellow"}.get(r["outcome"], "red")
        table.add_row(str(r.get("id") or "-"), (r.get("finished_at") or "-")[:19], r["copy_node"], r["truth_node"], r["trigger"], f"{r['ranges_compared']:,}",
                      f"{r['ranges_descended']:,}", f"{r['persons_compared']:,}", str(r["healed"]), str(r["reported"]), f"[{colour}]{r['outcome']}[/{colour}]" + (f" {r['error']}" if r.get("error") else ""))
    return table


def _print_findings(results: list[dict]) -> None:
    for r in results:
        for f in r.get("findings", []):
            console.print(f"  #{r.get('id')} {f['resident_code']} [bold]{f['kind']}[/bold] here {f.get('copy_state') or '-'} / below {f.get('truth_state') or '-'}: "
                          f"{f['action']} ({f['applied']} applied){' — ' + f['detail'] if f.get('detail') else ''}")


@app.command()
def reconcile(node: str = typer.Option("national_server.national", help="the node that compares its copy with the tier below (a register compares itself with its CS)"),
              data: Path = typer.Option(DEFAULT_DATA)) -> None:
    """Compare a node's copy with the tier below by range digests now, heal what lacks versions, print what was found."""
    results = _operator_call(data, node, "POST", "/internal/v1/operator/reconcile").json()
    console.print(_reconciliation_table(results, f"reconciliation at {node}"))
    _print_findings(results)


@app.command()
def reconciliations(node: str = typer.Option("national_server.national", help="node whose record to show (a CS shows its register's runs)"),
                    limit: int = typer.Option(20, help="how many runs, newest first"), findings: bool = typer.Option(True, help="list each person found different"),
                    data: Path = typer.Option(DEFAULT_DATA)) -> None:
    """What a node's reconciliations compared, healed and reported, newest first."""
    results = _operator_call(data, node, "GET", "/internal/v1/operator/reconciliations", params={"limit": limit}).json()
    console.print(_reconciliation_table(results, f"reconciliations recorded at {node}"))
    if findings:
        _print_findings(results)


@app.command()
def snapshot(municipality: str = typer.Argument(..., help="municipality code; its CS takes the snapshot"), data: Path = typer.Option(DEFAULT_DATA)) -> None:
    """Have a CS take a snapshot of its municipality's 本人確認情報 now and send it upward."""
    console.print_json(_operator_call(data, f"cs_gateway.{municipality}", "POST", "/internal/v1/operator/snapshot").text)


@app.command()
def snapshots(node: str = typer.Option(..., help="a CS (snapshots sent) or a prefecture/national server (snapshots received)"),
              limit: int = typer.Option(20), data: Path = typer.Option(DEFAULT_DATA)) -> None:
    """Snapshots a node sent or received, newest first."""
    rows = _operator_call(data, node, "GET", "/internal/v1/operator/snapshots", params={"limit": limit}).json()
    table = Table(title=f"snapshots at {node}")
    for column in ("taken", "municipality", "peer", "persons", "ranges", "rows", "state", "detail"):
        table.add_column(column)
    for r in rows:
        table.add_row(r["taken_at"][:19], r["municipality_code"], r["peer"], f"{r['persons']:,}", f"{r['ranges']:,}", f"{r['rows']:,}", r["state"], r.get("detail") or "")
    console.print(table)


@app.command()
def drill(
    municipality: str = typer.Argument(..., help="municipality code whose register and CS are wiped and restored"),
    source: str | None = typer.Option(None, help="restore from this node (default: the prefecture server, or the national server without that tier)"),
    yes: bool = typer.Option(False, "--yes", help="do not ask before wiping"),
    drop_database: bool = typer.Option(False, "--drop-database", help="DROP DATABASE instead of dropping the tenant's schema (forces a checkpoint of the whole cluster)"),
    data: Path = typer.Option(DEFAULT_DATA),
    topology: Path | None = typer.Option(None, help="default: the topology the running network was started with"),
) -> None:
    """Disaster-recovery drill: really wipe a municipality's register and CS databases and restore its residents from the network."""
    from services.common.topology import load_topology
    from services.drill import DrillRefused, run_drill

    topo = load_topology(_running_topology(data, topology))
    if not yes:
        typer.confirm(f"This DROPS everything municipal_rrs.{municipality} and cs_gateway.{municipality} hold and restores it from the network. Go on?", abort=True)
    labels = {"ask the network": "asking the network what it holds (municipality's token)", "record before": "recording what is there now (to verify)",
              "wipe": "dropping the register's and the CS's data (DROP … CASCADE)", "migrate": "migrations, as the tenant roles",
              "restore": "restoring from the network", "reopen": "letting the services log in again", "verify": "comparing with what was there"}
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console) as progress:
        tasks: dict[str, int] = {}

        def on_progress(step: str, done: int, total: int | None) -> None:
            if step not in tasks:
                tasks[step] = progress.add_task(labels.get(step, step), total=total)
            progress.update(tasks[step], completed=done, total=total if total is not None else progress.tasks[tasks[step]].total)

        try:
            report = run_drill(data, municipality, topo, provider=source, whole_database=drop_database, on_progress=on_progress)
        except DrillRefused as exc:
            console.print(f"[red]drill stopped before anything was wiped:[/red] {exc}")
            raise typer.Exit(1) from None
    summary = report.summary
    table = Table(title=f"drill {municipality}: restored from {report.provider}")
    table.add_column("")
    table.add_column("", justify="right")
    table.add_row("persons restored (register and CS)", f"{report.persons_restored:,}")
    table.add_row("  of them from the snapshot (newer than the current store)", f"{report.from_snapshot:,}")
    table.add_row("versions of history restored at the CS", f"{report.versions_restored:,}")
    table.add_row("DV protection markers restored (persons protected again)", f"{report.protections_restored:,}")
    if summary is not None:
        table.add_row("last complete snapshot at the provider", str(summary.snapshot_taken_at or "none"))
    for step, seconds in report.timings.items():
        table.add_row(f"time: {step}", f"{seconds:,.2f} s")
    table.add_row("[bold]time from wipe to service[/bold]", f"[bold]{report.restore_seconds:,.2f} s[/bold]")
    for what, figure in report.verification.items():
        table.add_row(f"verified: {what}", f"{figure:,}")
    console.print(table)
    console.print("[bold]Not restorable from the network[/bold] (the network never carried it):")
    for item in report.never_carried:
        console.print(f"  - {item}")
    for what, count in report.not_restorable_persons.items():
        console.print(f"  - {what}: {count:,}")
    for database, tables in report.lost_rows.items():
        console.print(f"  - rows of {database} not restored: " + ", ".join(f"{t} {n:,}" for t, n in sorted(tables.items())))
    if report.protections_restored:
        console.print(f"[yellow]{report.protections_restored:,} persons are protected again from the network's DV protection markers, "
                      "but their support measures' details (kind, basis, 相手方) are lost: staff must re-enter each measure "
                      "(application and decision); until then every certificate request about them but their own goes to staff review[/yellow]")
    if report.differences:
        console.print(f"[red]{len(report.differences)} carried items differ from before the wipe[/red]")
        for line in report.differences[:20]:
            console.print(f"  {line}")
        raise typer.Exit(1)
    console.print("[green]every item the network carried is back as it was[/green]")


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


def _seed_over_http(topology, nodes: dict[str, str], persons: int, *, seed: int, data: Path) -> list[str]:
    from services.population import PopulationSpec, register_over_http
    from services.staff_logins import StaffLogins

    logins = StaffLogins(data, lambda code: nodes[f"municipal_rrs.{code}"])  # the demo clerk of each municipality registers them

    spec = PopulationSpec(seed=seed, municipalities=tuple(m.code for m in topology.municipalities))
    started = time.monotonic()
    with _progress() as progress, httpx.Client(timeout=30.0) as client:
        task = progress.add_task("registering at the counters", total=persons, rate="")

        def tick() -> None:
            done = progress.tasks[0].completed + 1
            progress.update(task, advance=1, rate=f"{done / max(time.monotonic() - started, 1e-6):,.0f}/s")

        return register_over_http(lambda code: nodes[f"municipal_rrs.{code}"], spec, persons, client=client, staff_headers=logins.headers, on_person=tick)


@app.command()
def seed(
    persons: int = typer.Argument(..., help="how many persons"),
    seed_value: int = typer.Option(1, "--seed", help="same seed, same population"),
    bulk: bool = typer.Option(False, help="write every tier's tables directly with COPY (millions of persons) instead of registering at the counters"),
    data: Path = typer.Option(DEFAULT_DATA),
    topology: Path | None = typer.Option(None, help="default: the topology the running network was started with"),
) -> None:
    """Fill the running network with a synthetic population (real addresses, names with readings, households)."""
    from services.common.topology import load_topology

    topo = load_topology(_running_topology(data, topology))
    addresses = _addresses(data)
    started = time.monotonic()
    if not bulk:
        _seed_over_http(topo, addresses["nodes"], persons, seed=seed_value, data=data)
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


# --- staff accounts at the registers ----------------------------------------------------

staff_app = typer.Typer(help="Staff accounts of the municipal registers: enrol, and (for the accounts of a local network) current TOTP codes and tokens.")
app.add_typer(staff_app, name="staff")


def _print_demo_logins(network: Network) -> None:
    """How to log in at each register (the demo clerk ``make run`` enrolled); the secrets stay in staff.json."""
    table = Table(title="staff login (demo clerk of each municipality; TOTP code: services.cli staff code)")
    for column in ("register screens", "username", "password", "TOTP code now"):
        table.add_column(column)
    for m in network.topology.municipalities:
        account = network.staff.account(m.code, "clerk")
        if account is not None:
            table.add_row(f"{network.url(f'municipal_rrs.{m.code}')}/staff", "clerk", account["password"], network.staff.code(m.code, "clerk"))
    console.print(table)
    console.print("next code: .venv/bin/python -m services.cli staff code --municipality 131016 --username clerk "
                  "(accounts clerk, supervisor and auditor; secrets in " + str(network.staff.path) + ")")


def _logins(data: Path):
    from services.staff_logins import StaffLogins

    nodes = _addresses(data)["nodes"]
    return StaffLogins(data, lambda code: nodes[f"municipal_rrs.{code}"])


@staff_app.command("add")
def staff_add(
    municipality: str = typer.Option(..., help="municipality code: the register that keeps the account"),
    username: str = typer.Option(..., help="lower-case letters, digits, . _ -"),
    role: str = typer.Option(..., help="clerk, supervisor or auditor"),
    replace: bool = typer.Option(False, help="re-enrol an existing account (lost authenticator): new password and TOTP secret, its sessions end"),
    ask_password: bool = typer.Option(False, help="type the password (at least 12 characters) instead of having one generated"),
    data: Path = typer.Option(DEFAULT_DATA),
) -> None:
    """Enrol a member of staff at a register; prints the password and the TOTP secret once (enrol the otpauth URI in an authenticator app)."""
    node = f"municipal_rrs.{municipality}"
    password = typer.prompt("password", hide_input=True, confirmation_prompt=True) if ask_password else ""
    body = {"username": username, "role": role, "replace": replace, **({"password": password} if password else {})}
    response = httpx.post(f"{_node_url(data, node)}/internal/v1/operator/staff-accounts", json=body, headers=_operator_headers(data, node), timeout=30.0)
    if response.status_code != 201:
        console.print(f"[red]{response.status_code}[/red] {response.text}")
        raise typer.Exit(1)
    created = response.json()
    console.print(f"enrolled [bold]{created['username']}[/bold] ({created['role']}) at {node}; shown once, not kept:")
    if created.get("password"):
        console.print(f"  password:    {created['password']}")
    console.print(f"  TOTP secret: {created['totp_secret']}")
    console.print(f"  otpauth URI: {created['otpauth_uri']}")


@staff_app.command("code")
def staff_code(municipality: str = typer.Option(...), username: str = typer.Option("clerk"), data: Path = typer.Option(DEFAULT_DATA)) -> None:
    """The current TOTP code of an account this local network enrolled (demo and test accounts only: their secrets are in staff.json)."""
    print(_logins(data).code(municipality, username))


@staff_app.command("token")
def staff_token(municipality: str = typer.Option(...), role: str = typer.Option("clerk", help="the account of that role (clerk, supervisor, auditor)"),
                data: Path = typer.Option(DEFAULT_DATA)) -> None:
    """Log in as the role's demo account (password + TOTP) and print the bearer token (10 minutes) for curl."""
    print(_logins(data).token(municipality, role))


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
    """Make every party's key pair for a container deployment: private/<party>/<party>.key, public/<party>.pub; each
    agency's encryption key pair (its push notifications are sealed to it): private/<agency>/<agency>.x25519.key, public/<agency>.x25519.pub;
    and the Kafka CA with a TLS client certificate per principal (services/deploy_kafka.py). Existing files are kept."""
    from services.common.encryption_keys import generate_encryption_key_pair
    from services.common.runtime import OPERATOR_PARTY
    from services.common.tokens import generate_key_pair
    from services.common.topology import load_topology

    topo = load_topology(topology)
    parties = [n.party for n in topo.nodes] + [f"agency-{a.id}" for a in topo.agencies] + [OPERATOR_PARTY]
    for party in parties:
        generate_key_pair(out / "private" / party, out / "public", party)
    for agency in topo.agencies:
        generate_encryption_key_pair(out / "private" / f"agency-{agency.id}", out / "public", f"agency-{agency.id}")
    pseudonym = out / "private" / "national" / "national-pseudonym.key"
    if not pseudonym.exists():
        pseudonym.write_bytes(os.urandom(64))
        pseudonym.chmod(0o600)
    from services.national_server.jpki_store import generate_ca_key_file

    generate_ca_key_file(out / "private" / "national" / "national-jpki-ca.key")
    from services.deploy_kafka import make_tls

    issued = make_tls(out, topo)  # last: run as root, it also gives each private directory to the user that reads it
    console.print(f"{len(parties)} key pairs under {out}; Kafka certificates issued: {', '.join(issued) or 'none (all kept)'}")


@app.command()
def clean(data: Path = typer.Option(DEFAULT_DATA)) -> None:
    """Delete all local data (databases, keys, logs, traces)."""
    if data.exists():
        shutil.rmtree(data)
    console.print(f"removed {data}")


if __name__ == "__main__":
    app()
