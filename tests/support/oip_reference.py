"""The Open Inference Protocol's reference implementations, in a virtualenv of their own.

MLServer (the protocol's reference server) and kserve's v2 REST client pin fastapi, pandas and
protobuf versions below this project's, so they live in `~/.cache/raylife/oip-reference`, created on
demand (~5 min, ~480 MB: `python -m tests.support.oip_reference`) and never in the project's
environment. Tests that need it skip with one line when it is absent (CI does not create it).

    python -m tests.support.oip_reference            # create the virtualenv (idempotent)
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import venv
from collections.abc import Iterator
from pathlib import Path

VENV = Path.home() / ".cache" / "raylife" / "oip-reference"
PINS = ("mlserver==1.7.1", "kserve==0.16.0")
READY = VENV / "raylife-pins.txt"
"""Written after a complete install: the pins it holds (a half-made venv is not used)."""

SKIP = f"the OIP reference virtualenv is absent; create it with: python -m {__name__}"

KSERVE_CLIENT = """
import asyncio
from kserve import InferenceRESTClient, RESTConfig

async def main():
    client = InferenceRESTClient(RESTConfig(protocol="v2", timeout=30))
    body = {{"id": "k1", "inputs": [{{"name": "input", "shape": [2, 4], "datatype": "FP32",
             "data": {rows}}}]}}
    result = await client.infer("{url}", body, model_name="iris")
    for output in result.outputs:
        print(output.name, output.datatype, output.shape)
    await client.close()

asyncio.run(main())
"""
"""kserve's client posting one iris request to {url} (the model's base URL); prints each output's
name, datatype and shape."""

STAND_IN = '''
import numpy as np
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse, ResponseOutput

LABELS = ["setosa", "versicolor", "virginica"]


class IrisStandIn(MLModel):
    """The signature of raylife's iris over the protocol: input FP32 [-1, 4]; outputs predictions
    (BYTES [-1]) and probabilities (FP32 [-1, 3]). The numbers are not a trained model's."""

    async def load(self) -> bool:
        self.weights = np.arange(12, dtype=np.float32).reshape(4, 3) / 10
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        X = NumpyCodec.decode_input(payload.inputs[0]).reshape(-1, 4).astype(np.float32)
        logits = X @ self.weights
        p = np.exp(logits - logits.max(axis=1, keepdims=True))
        p = p / p.sum(axis=1, keepdims=True)
        labels = [LABELS[i] for i in p.argmax(axis=1)]
        outputs = [
            ResponseOutput(name="predictions", datatype="BYTES", shape=[len(labels)], data=labels),
            ResponseOutput(
                name="probabilities", datatype="FP32", shape=list(p.shape), data=p.ravel().tolist()
            ),
        ]
        if payload.outputs:
            wanted = [o.name for o in payload.outputs]
            outputs = [o for o in outputs if o.name in wanted]
        return InferenceResponse(
            model_name=self.name, model_version=self.version, id=payload.id, outputs=outputs
        )
'''


def python() -> str | None:
    """The reference virtualenv's interpreter, or None when it is absent or incomplete."""
    ready = READY.is_file() and READY.read_text().split() == list(PINS)
    return str(VENV / "bin" / "python") if ready else None


def create() -> str:
    if python() is None:
        venv.create(VENV, with_pip=True, clear=True)
        pip = [str(VENV / "bin" / "python"), "-m", "pip", "install", "--quiet", *PINS]
        subprocess.run(pip, check=True)
        READY.write_text("\n".join(PINS))
    return str(VENV / "bin" / "python")


@contextlib.contextmanager
def mlserver(folder: Path, port: int, grpc_port: int, metrics_port: int) -> Iterator[str]:
    """MLServer serving the iris stand-in on 127.0.0.1:`port`; yields its base URL."""
    import httpx

    from raylife.waiting import wait_until

    model = folder / "iris"
    model.mkdir(parents=True, exist_ok=True)
    (model / "stand_in.py").write_text(STAND_IN)
    settings = {
        "name": "iris",
        "implementation": "stand_in.IrisStandIn",
        "parameters": {"version": "v1"},
    }
    (model / "model-settings.json").write_text(json.dumps(settings))
    server = {
        "host": "127.0.0.1",
        "http_port": port,
        "grpc_port": grpc_port,
        "metrics_port": metrics_port,
        "parallel_workers": 0,
    }
    (folder / "settings.json").write_text(json.dumps(server))
    mlserver_bin = str(VENV / "bin" / "mlserver")
    log = (folder / "mlserver.log").open("w")
    env = {**os.environ, "PYTHONPATH": str(model)}
    process = subprocess.Popen(
        [mlserver_bin, "start", str(folder)], stdout=log, stderr=log, env=env, cwd=model
    )
    url = f"http://127.0.0.1:{port}"
    try:

        def ready() -> bool:
            if process.poll() is not None:
                raise RuntimeError((folder / "mlserver.log").read_text()[-2000:])
            return httpx.get(f"{url}/v2/models/iris/ready", timeout=2).status_code == 200

        wait_until(ready, 90, "MLServer did not become ready", 0.5, ignore=(httpx.HTTPError,))
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


if __name__ == "__main__":
    print(create(), file=sys.stdout)
