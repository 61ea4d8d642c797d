"""`make eks-preflight` refuses the log sidecar's all-zero placeholder digest, and its line says
how to get the real one (there is no registry to ask from here: the digest is set by hand)."""

from __future__ import annotations

from pathlib import Path

import pytest

from raylife.deploy import kuberay, preflight

ROOT = Path(__file__).resolve().parents[2]


def test_the_shipped_sidecar_digest_is_refused_with_how_to_look_it_up(capsys):
    assert kuberay.FLUENT_BIT_DIGEST == "sha256:" + "0" * 64  # a real one would end this test
    with pytest.raises(SystemExit) as exited:
        preflight.main([str(ROOT / "kuberay" / "ray-service.models.yaml")])
    assert exited.value.code == 2
    [line, *_] = [
        line for line in capsys.readouterr().err.splitlines() if "all-zero digest" in line
    ]
    assert f"docker buildx imagetools inspect {kuberay.FLUENT_BIT_IMAGE}" in line
    assert f"crane digest {kuberay.FLUENT_BIT_IMAGE}" in line
    assert "FLUENT_BIT_DIGEST" in line


def test_a_real_digest_passes(tmp_path):
    manifest = tmp_path / "ray-service.models.yaml"
    image = f"example/{kuberay.FLUENT_BIT_IMAGE}@sha256:{'ab' * 32}"
    manifest.write_text(f"image: {image}\n")
    assert preflight.problems(manifest) == []
