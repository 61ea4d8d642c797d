"""docs/security.md against the code, the manifests and the installed Ray: every setting it says
raylife makes is made where it says, the loopback defaults hold (checked by calling the code with
Ray stubbed out, never by starting it), and the ports, names and flags it quotes from Ray are Ray's."""

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "security.md").read_text()
RAY = Path(__import__("ray").__file__).parent


def _section(title: str) -> str:
    start = DOC.index(f"## {title}")
    end = DOC.find("\n## ", start + 1)
    return DOC[start : end if end != -1 else None]


def _checked_rows() -> list[tuple[str, str, str]]:
    rows = []
    for line in _section("What raylife sets").splitlines():
        cells = [c.strip().strip("`") for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0] not in ("setting", "---") and cells[2]:
            rows.append((cells[0], cells[1].strip('"'), cells[2]))
    return rows


def _leaves(node: Any, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    """(key path, value) of every mapping entry; list items keep their parent's path."""
    out = []
    if isinstance(node, dict):
        for key, value in node.items():
            out.append(((*path, str(key)), value))
            out.extend(_leaves(value, (*path, str(key))))
    elif isinstance(node, list):
        for item in node:
            out.extend(_leaves(item, path))
    return out


def _forms(value: Any) -> set[str]:
    if isinstance(value, bool):
        return {str(value).lower()}
    if isinstance(value, list):
        return {form for item in value for form in _forms(item)}
    if isinstance(value, dict):
        return {json.dumps(value)}
    return {str(value)}


def _has_setting(path: Path, setting: str, value: str) -> bool:
    if path.suffix in (".yaml", ".yml", ".json"):
        docs = (
            [json.loads(path.read_text())]
            if path.suffix == ".json"
            else list(yaml.safe_load_all(path.read_text()))
        )
        leaves = [leaf for doc in docs for leaf in _leaves(doc)]
        # A key may contain dots itself (Kubernetes labels); else the setting is a key path.
        parts = (
            (setting,) if any(p[-1] == setting for p, _ in leaves) else tuple(setting.split("."))
        )
        return any(p[-len(parts) :] == parts and value in _forms(v) for p, v in leaves)
    return any(setting in line and value in line for line in path.read_text().splitlines())


ROWS = _checked_rows()


def test_the_checked_table_is_there_and_complete():
    assert len(ROWS) >= 25
    assert {"RAY_AUTH_MODE", "dashboard_host", "http_options.host", "authOptions.mode"} <= {
        setting for setting, _, _ in ROWS
    }


@pytest.mark.parametrize(("setting", "value", "where"), ROWS, ids=[f"{s}@{w}" for s, _, w in ROWS])
def test_every_setting_the_doc_names_is_made_where_it_says(setting, value, where):
    files = sorted(ROOT.glob(where))
    assert files, f"docs/security.md names {where}, which does not exist"
    for path in files:
        assert _has_setting(path, setting, value), (
            f"{path.relative_to(ROOT)}: no {setting} = {value}"
        )


def test_ensure_ray_starts_a_loopback_dashboard_and_keeps_token_auth(monkeypatch):
    """ray.init is replaced by a recorder: the kwargs raylife passes, and the auth mode it leaves."""
    import ray

    from raylife import cluster, serve_config

    names = [
        *cluster.LOCAL_CLUSTER_TRAIN_ENV,
        *serve_config.cluster_env("local"),
        "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S",
        "RAY_ADDRESS",
        "RAY_AUTH_MODE",
    ]
    for name in names:  # set-then-delete, so the environment ensure_ray writes is undone afterwards
        monkeypatch.setenv(name, "x")
        monkeypatch.delenv(name)
    calls = []
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(
        ray, "init", lambda **kw: calls.append((kw, dict(__import__("os").environ)))
    )
    monkeypatch.setattr(cluster, "_started_here", False)
    cluster.ensure_ray(num_cpus=2)
    [(kwargs, environ)] = calls
    assert kwargs["dashboard_host"] == "127.0.0.1" and kwargs["include_dashboard"] is True
    assert "address" not in kwargs
    # Unset, Ray's own default for a new ray.init() cluster applies: token auth (checked below).
    assert environ.get("RAY_AUTH_MODE") in (None, "token")


def test_installed_ray_turns_token_auth_on_for_ray_init_but_not_for_ray_start():
    worker = (RAY / "_private" / "worker.py").read_text()
    start = (RAY / "scripts" / "scripts.py").read_text()
    new_cluster = worker[worker.index("if bootstrap_address is None:") :][:800]
    assert "enable_token_auth_by_default()" in new_cluster
    assert "maybe_enable_token_auth_if_token_available()" in start
    assert "enable_token_auth_by_default" not in start


def test_the_rehearsal_cluster_starts_with_token_auth_and_a_loopback_dashboard(monkeypatch):
    """`ray start` is never run: the first start is recorded and aborted."""
    from raylife import rehearsal

    started = []

    class Stop(Exception):
        pass

    def record(argv, env):
        started.append((argv, env))
        raise Stop

    monkeypatch.setattr(rehearsal, "_start", record)
    with pytest.raises(Stop), rehearsal.multi_node_cluster(worker_nodes=1):
        pass
    [(argv, env)] = started
    assert argv[1:3] == ["start", "--head"]
    assert "--dashboard-host=127.0.0.1" in argv
    assert env["RAY_AUTH_MODE"] == "token"


def test_serve_binds_loopback_unless_asked():
    from raylife import serve_config, serving
    from raylife.cli import build_parser

    assert serve_config.render("local")["http_options"]["host"] == "127.0.0.1"
    assert serve_config.render("eks")["http_options"]["host"] == "0.0.0.0"
    assert build_parser().parse_args(["serve"]).host == "127.0.0.1"
    assert serving.start.__defaults__ is not None and "127.0.0.1" in serving.start.__defaults__


def _default(source: str, name: str) -> int:
    """The default of an environment variable read as `..."NAME", "123")` or `..."NAME", 123)`."""
    match = re.search(rf'"{name}",\s*"?(\d+)"?\s*\)', source)
    assert match, name
    return int(match.group(1))


def test_the_ports_the_doc_quotes_are_rays_defaults():
    from ray._private import ray_constants

    serve = (RAY / "serve" / "_private" / "constants.py").read_text()
    start = (RAY / "scripts" / "scripts.py").read_text()
    ports = {
        "dashboard": ray_constants.DEFAULT_DASHBOARD_PORT,
        "gcs": ray_constants.DEFAULT_PORT,
        "agent": ray_constants.DEFAULT_DASHBOARD_AGENT_LISTEN_PORT,
        "client": int(re.search(r"ray_client_server_port = (\d+)", start).group(1)),
        "serve": int(re.search(r"DEFAULT_HTTP_PORT = (\d+)", serve).group(1)),
        "stats": _default(serve, "RAY_SERVE_HAPROXY_STATS_PORT"),
        "metrics": _default(serve, "RAY_SERVE_HAPROXY_METRICS_PORT"),
        "replicas_min": _default(serve, "RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT"),
        "replicas_max": _default(serve, "RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT"),
    }
    assert ports == {
        "dashboard": 8265,
        "gcs": 6379,
        "agent": 52365,
        "client": 10001,
        "serve": 8000,
        "stats": 8404,
        "metrics": 9101,
        "replicas_min": 30000,
        "replicas_max": 31000,
    }
    for port in ports.values():
        assert str(port) in DOC, port
    for flag, default in (("--min-worker-port", 10002), ("--max-worker-port", 19999)):
        option = start[start.index(f'"{flag}"') :][:200]
        assert f"default={default}" in option and str(default) in DOC


def test_what_the_doc_says_binds_everywhere_does():
    """HAProxy's stats and metrics listeners ignore the Serve host; the admin socket is
    world-writable; Serve's config schema defaults the host to all interfaces."""
    from ray.serve.schema import HTTPOptionsSchema

    template = (RAY / "serve" / "_private" / "haproxy_templates.py").read_text()
    assert "bind *:{{ config.stats_port }}" in template
    assert "bind :{{ config.metrics_port }}" in template
    assert "stats socket {{ config.socket_path }} mode 666 level admin" in template
    assert HTTPOptionsSchema.model_fields["host"].default == "0.0.0.0"
    reporter = (RAY / "dashboard" / "modules" / "reporter" / "reporter_agent.py").read_text()
    assert 'address=get_localhost_ip() if is_localhost(self._ip) else ""' in reporter


def _sources(paths: list[Path]) -> str:
    return "\n".join(p.read_text() for p in paths if p.is_file())


def test_every_ray_name_and_flag_in_the_doc_exists():
    ray_files = [
        RAY / "serve" / "_private" / "constants.py",
        RAY / "_private" / "ray_constants.py",
        RAY / "_common" / "tls_utils.py",
        RAY / "exceptions.py",
        *(RAY / "_private" / "authentication").glob("*.py"),
    ]
    ours = [*ROOT.glob("lib/raylife/*.py"), *ROOT.glob("serve_apps/config/*.yaml")]
    known_names = _sources(ray_files) + _sources(ours)
    names = set(re.findall(r"\bRAY_[A-Z0-9_]+\b", DOC))
    assert len(names) >= 15
    assert not {n for n in names if n not in known_names}, "names not in Ray or raylife"
    start = (RAY / "scripts" / "scripts.py").read_text()
    ours_cli = _sources([ROOT / "lib/raylife/cli.py", ROOT / "lib/raylife/bare_server.py"])
    spans = re.findall(r"`([^`]+)`", DOC)
    flags = {f for span in spans for f in re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]+)", span)}
    assert len(flags) >= 12
    assert not {f for f in flags if f'"{f}"' not in start and f'"{f}"' not in ours_cli}


def test_links_point_at_existing_sections():
    for target, anchor in re.findall(r"\]\(([\w./-]+\.md)(?:#([\w-]+))?\)", DOC):
        text = (ROOT / "docs" / target).read_text()
        if anchor:
            headings = re.findall(r"^#+ (.+)$", text, flags=re.M)
            slugs = {re.sub(r"[^\w\- ]", "", h).strip().lower().replace(" ", "-") for h in headings}
            assert anchor in slugs, (target, anchor)
