"""Model repositories whose `bge_m3` is the real adapter with something injected into its forward pass, for
tests that need a failure, slowness or a pause on purpose rather than a machine's speed."""

from __future__ import annotations

import shutil
import urllib.request
from pathlib import Path

from conftest import REPO, Server

_PREAMBLE = '''
import importlib.util
import time
from pathlib import Path

from bge_m3_triton.ops.launcher import REPO_ROOT

spec = importlib.util.spec_from_file_location("real_bge_m3", REPO_ROOT / "model_repository/bge_m3/1/model.py")
real = importlib.util.module_from_spec(spec)
spec.loader.exec_module(real)
'''

FAULTY = _PREAMBLE + '''

class TritonPythonModel(real.TritonPythonModel):
    """Its forward pass fails on any batch holding "poison pill"."""

    def initialize(self, args):
        super().initialize(args)
        model = self.service.model
        encode = model.encode_tokenized
        poison = model.tokenize(["poison pill"], [512]).ids[0]

        def encode_or_fail(tokens, *args, **kwargs):
            if poison in tokens.ids:
                raise RuntimeError("injected fault")
            return encode(tokens, *args, **kwargs)

        model.encode_tokenized = encode_or_fail
'''

SLOW = _PREAMBLE + '''

class TritonPythonModel(real.TritonPythonModel):
    """Every sub-batch of its forward pass takes at least 0.5 s."""

    def initialize(self, args):
        super().initialize(args)
        model = self.service.model
        run = model._run_sub_batch

        def slowed(*args, **kwargs):
            time.sleep(0.5)
            return run(*args, **kwargs)

        model._run_sub_batch = slowed
'''

HELD = _PREAMBLE + '''

class TritonPythonModel(real.TritonPythonModel):
    """Its forward passes wait while the file `hold` exists in the served model's folder."""

    def initialize(self, args):
        super().initialize(args)
        model = self.service.model
        encode = model.encode_tokenized
        hold = Path(args["model_repository"]) / "hold"

        def held(*args, **kwargs):
            while hold.exists():
                time.sleep(0.01)
            return encode(*args, **kwargs)

        model.encode_tokenized = held
'''


def repository(tmp: Path, model_py: str) -> Path:
    """A source repository holding only `bge_m3`, its `model.py` replaced by `model_py`."""
    source = tmp / "repository"
    shutil.copytree(REPO / "model_repository" / "bge_m3", source / "bge_m3")
    (source / "bge_m3" / "1" / "model.py").write_text(model_py)
    return source


def metric(server: Server, name: str, labels: str = 'model="bge_m3"') -> float:
    """The sum of a metric's series whose labels hold `labels` (0 when there is none)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics") as reply:
        lines = reply.read().decode().splitlines()
    return sum(float(line.rsplit(" ", 1)[1]) for line in lines
               if line.startswith(name + "{") and all(part in line for part in labels.split(",")))


def in_model(server: Server) -> float:
    """Requests queued or computing in `bge_m3` now."""
    return metric(server, "bge_m3_requests_in_model")
