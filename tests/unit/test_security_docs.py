"""docs/security.md against the code, the manifests and the installed Ray: every setting it says
raylife makes is made where it says, the loopback defaults hold (checked by calling the code with
Ray stubbed out, never by starting it), and the ports, names and flags it quotes from Ray are Ray's."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "security.md").read_text()


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

    from raylife import cluster
    from raylife.serve import config as serve_config

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
    cluster.ensure_ray(num_cpus=2, cluster_env=serve_config.cluster_env("local"))
    [(kwargs, environ)] = calls
    assert kwargs["dashboard_host"] == "127.0.0.1" and kwargs["include_dashboard"] is True
    assert "address" not in kwargs
    # Unset, Ray's own default for a new ray.init() cluster applies: token auth (checked below).
    assert environ.get("RAY_AUTH_MODE") in (None, "token")


def test_the_rehearsal_cluster_starts_with_token_auth_and_a_loopback_dashboard(monkeypatch):
    """`ray start` is never run: the first start is recorded and aborted."""
    from raylife_dev import rehearsal

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
    from raylife.cli import build_parser
    from raylife.serve import config as serve_config
    from raylife.serve import local as serving

    assert serve_config.render("local")["http_options"]["host"] == "127.0.0.1"
    assert serve_config.render("eks")["http_options"]["host"] == "0.0.0.0"
    assert build_parser().parse_args(["serve"]).host == "127.0.0.1"
    assert serving.start.__defaults__ is not None and "127.0.0.1" in serving.start.__defaults__


RAY_DEFAULTS_PROBE = """
import inspect
import json
from ray._private import ray_constants
from ray.scripts.scripts import start
from ray.serve._private import constants as serve
from ray.serve.schema import HTTPOptionsSchema

options = {p.name: p.default for p in start.params}
print(json.dumps({
    "dashboard": ray_constants.DEFAULT_DASHBOARD_PORT,
    "gcs": ray_constants.DEFAULT_PORT,
    "agent": ray_constants.DEFAULT_DASHBOARD_AGENT_LISTEN_PORT,
    # `ray start` picks the client port in its body when the flag is absent.
    "client": 10001 if 10001 in inspect.unwrap(start.callback).__code__.co_consts else None,
    "serve": serve.DEFAULT_HTTP_PORT,
    "stats": serve.RAY_SERVE_HAPROXY_STATS_PORT,
    "metrics": serve.RAY_SERVE_HAPROXY_METRICS_PORT,
    "replicas_min": serve.RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT,
    "replicas_max": serve.RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT,
    "min_worker_port": options["min_worker_port"],
    "max_worker_port": options["max_worker_port"],
    "serve_host": HTTPOptionsSchema.model_fields["host"].default,
}))
"""


def _probe(code: str, env: dict[str, str]) -> Any:
    """Run `code` in a fresh Python whose only RAY_* variables are `env`; its last line as JSON."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    probe = subprocess.run(
        [sys.executable, "-c", code],
        env={**clean, **env},
        capture_output=True,
        text=True,
        check=False,
    )
    assert probe.returncode == 0, probe.stderr[-2000:]
    return json.loads(probe.stdout.strip().splitlines()[-1])


AUTH_HEADERS_PROBE = """
import json
from ray._private.authentication.http_token_authentication import get_auth_headers_if_auth_enabled
print(json.dumps(dict(get_auth_headers_if_auth_enabled({}))))
"""
SERVE_HOST_PROBE = """
import json
from ray.serve._private import constants
print(json.dumps(constants.DEFAULT_HTTP_HOST))
"""
CHECKED_BY_BEHAVIOUR = {"RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_SERVE_DEFAULT_HTTP_HOST"}
"""Variables Ray reads outside the modules scanned below (its C++ core, module set-up): each is
set in a fresh process and its effect observed."""


@pytest.mark.slow  # ~4 s: three fresh interpreters import Ray, in make test only
def test_the_variables_the_doc_names_do_what_it_says(tmp_path):
    token = "0123456789abcdef" * 2
    assert _probe(AUTH_HEADERS_PROBE, {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}) == {
        "authorization": f"Bearer {token}"
    }
    (tmp_path / "token").write_text(token[::-1])
    assert _probe(
        AUTH_HEADERS_PROBE,
        {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(tmp_path / "token")},
    ) == {"authorization": f"Bearer {token[::-1]}"}
    assert _probe(SERVE_HOST_PROBE, {"RAY_SERVE_DEFAULT_HTTP_HOST": "10.1.2.3"}) == "10.1.2.3"
    assert {n for n in CHECKED_BY_BEHAVIOUR if n not in DOC} == set()


@pytest.mark.slow  # ~3 s: a fresh interpreter imports Ray, in make test only
def test_the_ports_the_doc_quotes_are_rays_defaults():
    """What Ray itself uses when nothing is set: its constants and `ray start`'s option defaults,
    read in a fresh process with no RAY_* variable in its environment (not its source text)."""
    defaults = _probe(RAY_DEFAULTS_PROBE, {})
    assert defaults == {
        "dashboard": 8265,
        "gcs": 6379,
        "agent": 52365,
        "client": 10001,
        "serve": 8000,
        "stats": 8404,
        "metrics": 9101,
        "replicas_min": 30000,
        "replicas_max": 31000,
        "min_worker_port": 10002,
        "max_worker_port": 19999,
        "serve_host": "0.0.0.0",  # Serve binds all interfaces unless a config names the host
    }
    for name, port in defaults.items():
        if name != "serve_host":
            assert str(port) in DOC, port


def _sources(paths: list[Path]) -> str:
    return "\n".join(p.read_text() for p in paths if p.is_file())


def _names_in_code(module: Any) -> set[str]:
    """Attribute names of a module and every string constant its compiled code holds (what
    os.environ.get("RAY_...") reads): Ray as installed and imported, not its source text."""
    names = set(vars(module))
    codes = [v.__code__ for v in vars(module).values() if hasattr(v, "__code__")]
    codes += [
        f.__code__
        for v in vars(module).values()
        if isinstance(v, type) and v.__module__ == module.__name__
        for f in vars(v).values()
        if hasattr(f, "__code__")
    ]
    names |= {v for v in vars(module).values() if isinstance(v, str)}
    while codes:
        code = codes.pop()
        for const in code.co_consts:
            if isinstance(const, str):
                names.add(const)
            elif hasattr(const, "co_consts"):
                codes.append(const)
    return names


def test_every_ray_name_and_flag_in_the_doc_exists():
    import importlib
    import pkgutil

    import ray._private.authentication as authentication
    from ray.scripts.scripts import cli

    modules = [
        "ray.serve._private.constants",
        "ray._private.ray_constants",
        "ray._common.tls_utils",
        "ray.exceptions",
        *(
            f"ray._private.authentication.{m.name}"
            for m in pkgutil.iter_modules(authentication.__path__)
        ),
    ]
    known = set().union(*(_names_in_code(importlib.import_module(m)) for m in modules))
    ours = _sources([*ROOT.glob("lib/raylife/**/*.py"), *ROOT.glob("serve_apps/config/*.yaml")])
    names = set(re.findall(r"\bRAY_[A-Z0-9_]+\b", DOC))
    assert len(names) >= 15
    unknown = {n for n in names if n not in known and n not in ours} - CHECKED_BY_BEHAVIOUR
    assert not unknown, "names not in Ray or raylife"

    from raylife.cli import build_parser
    from raylife_dev import bare

    ray_cli_flags = {o for cmd in cli.commands.values() for p in cmd.params for o in p.opts}
    ours_flags = set(_argparse_flags(build_parser())) | set(_argparse_flags(bare.parser()))
    spans = re.findall(r"`([^`]+)`", DOC)
    flags = {f for span in spans for f in re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]+)", span)}
    assert len(flags) >= 12
    assert not flags - ray_cli_flags - ours_flags


def _argparse_flags(parser: Any) -> list[str]:
    """Every option string of a parser and its subcommands."""
    import argparse

    flags = []
    for action in parser._actions:
        flags += [o for o in action.option_strings if o.startswith("--")]
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                flags += _argparse_flags(sub)
    return flags


def test_links_point_at_existing_sections():
    for target, anchor in re.findall(r"\]\(([\w./-]+\.md)(?:#([\w-]+))?\)", DOC):
        text = (ROOT / "docs" / target).read_text()
        if anchor:
            headings = re.findall(r"^#+ (.+)$", text, flags=re.M)
            slugs = {re.sub(r"[^\w\- ]", "", h).strip().lower().replace(" ", "-") for h in headings}
            assert anchor in slugs, (target, anchor)
