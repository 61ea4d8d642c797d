"""`make eks-preflight`: refuse kuberay/ files that still carry a placeholder, before kubectl apply.

The committed manifests name an example account, a placeholder commit, a placeholder Redis endpoint
and an all-zero digest for the log sidecar (raylife.deploy.kuberay): applied as they are, pods pull
images that do not exist, or the head dials a Redis that does not. `make kuberay-manifests` with
your REGISTRY, COMMIT and REDIS_ADDRESS replaces the first three; the digest is set once in the
generator (FLUENT_BIT_DIGEST). `python -m raylife.deploy.preflight FILE...` prints one line per
placeholder found (file, line, what, the fix) and exits 2, or prints nothing and exits 0.

`guide_problems` checks that docs/deploy-eks.md runs the preflight on every generated file before
the `kubectl apply` that sends it.
"""

from __future__ import annotations

import dataclasses
import re
import sys
from pathlib import Path

from raylife.deploy import kuberay
from raylife.settings import EXAMPLE_REGISTRY


@dataclasses.dataclass(frozen=True)
class Placeholder:
    pattern: re.Pattern[str]
    what: str
    fix: str


_REGENERATE = (
    "make kuberay-manifests REGISTRY=$REGISTRY COMMIT=$COMMIT REDIS_ADDRESS=$REDIS_ADDRESS"
)
PLACEHOLDERS = (
    Placeholder(
        re.compile(re.escape(EXAMPLE_REGISTRY.split(".", 1)[0]) + r"\.dkr\.ecr\."),
        "the example AWS account in an image",
        _REGENERATE,
    ),
    Placeholder(
        re.compile(rf"-g{kuberay.PLACEHOLDER_COMMIT}-"),
        "the placeholder commit in an image tag",
        _REGENERATE,
    ),
    Placeholder(
        re.compile(re.escape(kuberay.REDIS_ADDRESS)),
        "the placeholder Redis endpoint",
        _REGENERATE + " (REDIS_ADDRESS: step 8)",
    ),
    Placeholder(
        re.compile("@sha256:0{64}"),
        "the all-zero digest of the log sidecar's image",
        f"look up the real one with `docker buildx imagetools inspect {kuberay.FLUENT_BIT_IMAGE}` "
        f"or `crane digest {kuberay.FLUENT_BIT_IMAGE}`, set FLUENT_BIT_DIGEST in "
        "lib/raylife/deploy/kuberay.py to it (docs/deploy-eks.md step 4), then regenerate",
    ),
)


def problems(path: Path) -> list[str]:
    """One line per placeholder occurrence in `path` (first per kind and line)."""
    out = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        for placeholder in PLACEHOLDERS:
            if placeholder.pattern.search(line):
                out.append(f"{path}:{number}: {placeholder.what}; {placeholder.fix}")
    return out


def generated_files(folder: Path = Path("kuberay")) -> list[Path]:
    return sorted(folder.glob("*.yaml"))


APPLY = re.compile(r"kubectl apply -f (kuberay/[\w.-]+\.yaml)")
PREFLIGHT = re.compile(r"make eks-preflight(?:\s+FILES=(\"[^\"]*\"|'[^']*'|\S+))?")


def _code_blocks(markdown: str) -> list[str]:
    # Any info string (```yaml too): a block the pattern skipped would pair the fences wrongly after it.
    return re.findall(r"```[\w-]*\n(.*?)```", markdown, flags=re.S)


def guide_problems(markdown: str, root: Path) -> list[str]:
    """Each `kubectl apply -f kuberay/X.yaml` of a file that the repository ships with a
    placeholder comes after a `make eks-preflight` covering X, in the same code block."""
    out = []
    for block in _code_blocks(markdown):
        covered: set[str] = set()
        for line in block.splitlines():
            preflight = PREFLIGHT.search(line)
            if preflight:
                files = (preflight.group(1) or "kuberay/*.yaml").strip("\"'").split()
                covered |= {
                    str(p.relative_to(root)) for f in files for p in root.glob(f) if p.is_file()
                }
            for name in APPLY.findall(line):
                path = root / name
                if path.is_file() and problems(path) and name not in covered:
                    out.append(
                        f"docs/deploy-eks.md: `kubectl apply -f {name}` with no `make eks-preflight` "
                        "covering it before, in the same step; a placeholder would reach the cluster"
                    )
    return out


def main(argv: list[str] | None = None) -> None:
    """python -m raylife.deploy.preflight [FILE...] (default: every kuberay/*.yaml)."""
    names = sys.argv[1:] if argv is None else argv
    paths = [Path(n) for n in names] or generated_files()
    found = [line for path in paths for line in problems(path)]
    for line in found:
        print(f"error: {line}", file=sys.stderr)
    if found:
        raise SystemExit(2)
    print(f"preflight: {len(paths)} files, no placeholder")


if __name__ == "__main__":
    main()
