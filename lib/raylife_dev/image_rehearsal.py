"""`make image-rehearsal`: the images' Python layer, built without Docker, then the images' smoke.

What a `docker build` of kuberay/docker/Dockerfile.{cpu,gpu} does to Python, in a clean CPython
3.11 venv: torch and torchvision at the pinned versions, then, verbatim, every other `pip install`
line of each Dockerfile in a folder laid out by its COPY lines (its WORKDIR), then each
Dockerfile's own version asserts, `raylife --help`, the MLflow server's `--help`, `pip check`, and
every Serve application of kuberay/ray-service.models.yaml built from its config by Ray Serve's
own builder call.

Two departures from the image, both about torch: it is installed as the Makefile installs it
(`pip install torch==<v> torchvision==<v>`, this machine's wheel, the CUDA 13.0 build), not from the
Dockerfile's PyTorch index (several GB); so the GPU Dockerfile's asserts run verbatim and the CPU
Dockerfile's assert that torch has no CUDA is left out (said in the output). The base image's
preinstalled packages are absent too: the venv resolves every dependency from the constraints.

Exit status 0 when every step passed; otherwise the first failing step's output and status 1.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from raylife.deploy import gpu_stack

VARIANTS = ("gpu", "cpu")
"""The GPU image first: its torch build is the wheel this machine installs."""
CUDA_ASSERT = re.compile(r"assert torch\.version\.cuda[^;\"]*;?\s*")


@dataclasses.dataclass(frozen=True)
class Layer:
    """A Dockerfile's Python layer, read from its instructions."""

    copies: list[tuple[list[str], str]]
    """(sources, destination) of each COPY."""
    torch: str
    """The RUN that installs torch from the PyTorch index (replaced here)."""
    pip: list[str]
    """Every other RUN with `pip install`, ARGs substituted."""
    smoke: list[str]
    """Every RUN that starts `python -c`, ARGs substituted."""


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    joined = re.sub(
        r"\\\n",
        " ",
        "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#")),
    )
    out = []
    for line in joined.splitlines():
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            out.append((word.upper(), re.sub(r"\s+", " ", rest.strip())))
    return out


def layer(text: str) -> Layer:
    args: dict[str, str] = {}
    copies, pip, smoke, torch = [], [], [], ""
    for word, rest in instructions(text):
        rest_sub = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)), rest)
        if word == "ARG" and "=" in rest:
            name, value = rest.split("=", 1)
            args[name] = value
        elif word == "COPY":
            parts = [p for p in shlex.split(rest) if not p.startswith("--")]
            copies.append((parts[:-1], parts[-1]))
        elif word == "RUN" and "--index-url" in rest and "torch==" in rest:
            torch = rest_sub
        elif word == "RUN" and "pip install" in rest:
            pip.append(rest_sub)
        elif word == "RUN" and rest.startswith("python -c"):
            smoke.append(rest_sub)
    return Layer(copies, torch, pip, smoke)


class Failed(Exception):
    pass


@dataclasses.dataclass
class Rehearsal:
    root: Path
    work: Path
    python: str
    steps: list[tuple[str, float]] = dataclasses.field(default_factory=list)

    @property
    def venv(self) -> Path:
        return self.work / "venv"

    def env(self) -> dict[str, str]:
        env = dict(os.environ, PATH=f"{self.venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}")
        env.pop("PYTHONPATH", None)
        env["VIRTUAL_ENV"] = str(self.venv)
        return env

    def run(self, what: str, command: str, cwd: Path) -> str:
        """One shell step; its time is kept, its output shown only when it fails."""
        print(f"-- {what}: {command[:160]}", flush=True)
        start = time.perf_counter()
        done = subprocess.run(
            ["bash", "-c", command], cwd=cwd, env=self.env(), capture_output=True, text=True
        )
        self.steps.append((what, time.perf_counter() - start))
        if done.returncode != 0:
            tail = (done.stdout + done.stderr).strip().splitlines()[-25:]
            raise Failed(f"{what} failed (exit {done.returncode}):\n" + "\n".join(tail))
        return done.stdout

    def copy_context(self, copies: list[tuple[list[str], str]], app: Path) -> None:
        """The Dockerfile's COPY lines, from the build context (the repository root)."""
        for sources, destination in copies:
            for source in sources:
                src = self.root / source
                dest = app / destination
                if source.endswith("/") or src.is_dir():
                    shutil.copytree(
                        src, dest if destination != "./" else app / src.name, dirs_exist_ok=True
                    )
                else:
                    (dest if destination.endswith("/") else dest.parent).mkdir(
                        parents=True, exist_ok=True
                    )
                    shutil.copy(src, dest / src.name if destination.endswith("/") else dest)


def _serve_builds_script() -> str:
    """Run in the image's Python: build each application of the RayService's serveConfigV2."""
    return (
        "import importlib, yaml\n"
        "from ray.serve import Application\n"
        "from ray.serve._private.api import call_user_app_builder_with_args_if_necessary\n"
        "service = next(yaml.safe_load_all(open('kuberay/ray-service.models.yaml')))\n"
        "config = yaml.safe_load(service['spec']['serveConfigV2'])\n"
        "for app in config['applications']:\n"
        "    module, _, attr = app['import_path'].partition(':')\n"
        "    builder = getattr(importlib.import_module(module), attr)\n"
        "    built = call_user_app_builder_with_args_if_necessary(builder, app.get('args') or {})\n"
        "    assert isinstance(built, Application), (app['name'], type(built))\n"
        "    print('built', app['name'])\n"
    )


def rehearse(root: Path, work: Path, python: str) -> Rehearsal:
    r = Rehearsal(root, work, python)
    r.run("clean venv", f"{shlex.quote(python)} -m venv {shlex.quote(str(r.venv))}", root)
    r.run(
        "python is 3.11",
        "python -c 'import sys; assert sys.version_info[:2] == (3, 11), sys.version'",
        root,
    )
    r.run(
        "torch (the Makefile's form: this machine's wheel)",
        f"python -m pip install --quiet torch=={gpu_stack.TORCH_VERSION} "
        f"torchvision=={gpu_stack.TORCHVISION_VERSION}",
        root,
    )
    cuda = r.run("local torch build", "python -c 'import torch; print(torch.version.cuda)'", root)
    app = work / "app"
    for variant in VARIANTS:
        dockerfile = f"kuberay/docker/Dockerfile.{variant}"
        parsed = layer((root / dockerfile).read_text())
        if not parsed.pip or not parsed.smoke:
            raise Failed(f"{dockerfile}: no pip install or python -c smoke line found")
        shutil.rmtree(app, ignore_errors=True)
        app.mkdir(parents=True)
        r.copy_context(parsed.copies, app)
        for command in parsed.pip:
            r.run(f"{variant}: Dockerfile pip line (verbatim)", command, app)
        for command in parsed.smoke:
            wants_cuda = re.search(r"torch\.version\.cuda == '([\d.]+)'", command)
            if (wants_cuda and wants_cuda.group(1) != cuda.strip()) or (
                not wants_cuda and cuda.strip() != "None" and CUDA_ASSERT.search(command)
            ):
                print(
                    f"   ({variant}: the assert on torch.version.cuda is left out: the local "
                    f"wheel is the CUDA {cuda.strip()} build, the image's comes from its index)"
                )
                command = CUDA_ASSERT.sub("", command)
            r.run(f"{variant}: Dockerfile smoke", command, app)
    r.run("pip check", "python -m pip check", app)
    r.run("raylife --help", "raylife --help > /dev/null", app)
    r.run(
        "mlflow server --help", "mlflow server --help > /dev/null && python -c 'import boto3'", app
    )
    script = work / "serve_builds.py"
    script.write_text(_serve_builds_script())
    r.run("Serve apps of the RayService", f"python {shlex.quote(str(script))}", root)
    return r


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m raylife_dev.image_rehearsal")
    parser.add_argument(
        "--python",
        default=os.environ.get("PYTHON", "python3.11"),
        help="the CPython 3.11 that makes the clean venv",
    )
    parser.add_argument("--keep", action="store_true", help="keep the venv and folder afterwards")
    args = parser.parse_args(argv)
    root = Path.cwd()
    work = Path(tempfile.mkdtemp(prefix="raylife-image-rehearsal-"))
    start = time.perf_counter()
    try:
        rehearsal = rehearse(root, work, args.python)
    except Failed as exc:
        print(f"image rehearsal FAILED: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    for what, seconds in rehearsal.steps:
        print(f"   {seconds:7.1f} s  {what}")
    print(
        f"image rehearsal passed in {time.perf_counter() - start:.0f} s"
        + (f" (kept: {work})" if args.keep else "")
    )


if __name__ == "__main__":
    main()
