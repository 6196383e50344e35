"""The embed model inside a real Triton server: numbers equal to FlagEmbedding's, per-request behaviour."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpc
import tritonclient.http as http
from conftest import Server, start_server, stub_pids
from injected import in_model
from reference import PASSAGE_MAX, QUERY_MAX, TEXTS, assert_embedding_matches, encode

from bge_m3_client import AsyncBGEM3Client, BGEM3Client, InvalidInputError
from bge_m3_triton.core.m3 import M3Model
from bge_m3_triton.core.settings import ModelSettings
from bge_m3_triton.core.tokens import load_tokenizer
from bge_m3_triton.ops.cli import main

pytestmark = pytest.mark.server

PROTOCOLS = ["http", "grpc"]


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("is_passage", [False, True])
def test_parity_with_flagembedding(server: Server, m3_checkpoint: Path, protocol: str, is_passage: bool) -> None:
    ref = encode(m3_checkpoint, TEXTS, PASSAGE_MAX if is_passage else QUERY_MAX)
    with BGEM3Client(server.url(protocol), protocol=protocol) as client:
        results = client.encode(TEXTS, is_passage=is_passage, return_colbert=True)
    assert len(results) == len(TEXTS)
    for index, result in enumerate(results):
        assert_embedding_matches(result, ref, index)
        assert result.tokens == len(ref["colbert_vecs"][index]) + 1
    long_text = results[-1]
    full = len(load_tokenizer(m3_checkpoint)(TEXTS[-1])["input_ids"])
    assert full > QUERY_MAX
    assert long_text.truncated is (not is_passage)
    assert long_text.tokens == (full if is_passage else QUERY_MAX)
    assert not any(r.truncated for r in results[:-1])


def test_parity_with_pytorch_model_bin_and_the_flag_wins(tmp_path: Path, m3_bin_checkpoint: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """A .bin checkpoint serves FlagEmbedding's numbers; `--dtype float32` wins over an environment
    asking for bf16 (even with the stub's opt-in), and `bge-m3-triton info` reports it."""
    ref = encode(m3_bin_checkpoint, TEXTS, QUERY_MAX)
    bf16 = M3Model.load(ModelSettings(model=str(m3_bin_checkpoint), dtype="bfloat16", device="cpu",
                                     compile="off", engine="torch"))
    drift = max(float(np.abs(r.dense - ref["dense_vecs"][i]).max())
                for i, r in enumerate(bf16.encode(TEXTS, [QUERY_MAX] * len(TEXTS))))
    assert drift > 1e-4  # bf16 would fail the parity below: the served numbers tell the dtype
    env = {"BGE_M3_DTYPE": "bfloat16", "BGE_M3_ENV_OVERRIDES": "1"}
    running = start_server(tmp_path, ["--model", str(m3_bin_checkpoint), "--dtype", "float32"], ["bge_m3"], env=env)
    try:
        with BGEM3Client(running.http) as client:
            results = client.encode(TEXTS, return_colbert=True)
        for index, result in enumerate(results):
            assert_embedding_matches(result, ref, index)
        capsys.readouterr()
        assert main(["info", "--url", running.http]) == 0
        info = json.loads(capsys.readouterr().out)
        assert info["bge_m3"]["parameters"]["dtype"] == "float32"
        assert info["bge_m3_rerank"]["parameters"]["embed_max_batch_size"] == str(info["bge_m3"]["max_batch_size"])
    finally:
        assert running.stop() == 0


def test_concurrent_requests_with_different_modes_and_outputs(server: Server, m3_checkpoint: Path) -> None:
    """Requests batched together keep their own mode, outputs and order."""
    query_ref = encode(m3_checkpoint, TEXTS, QUERY_MAX)
    passage_ref = encode(m3_checkpoint, TEXTS, PASSAGE_MAX)
    wait_until_idle(server)
    before = _forward_counts(server)
    cases = [(is_passage, dense, sparse, colbert) for is_passage in (False, True)
             for dense, sparse, colbert in ((True, False, False), (False, True, False), (False, False, True),
                                            (True, True, True))]

    async def run_all() -> list[list]:
        async with AsyncBGEM3Client(server.grpc, protocol="grpc") as client:
            return await asyncio.gather(*(client.encode(TEXTS, is_passage=p, return_dense=d, return_sparse=s,
                                                        return_colbert=c) for p, d, s, c in cases))

    for (is_passage, dense, sparse, colbert), results in zip(cases, asyncio.run(run_all())):
        ref = passage_ref if is_passage else query_ref
        for index, result in enumerate(results):
            assert (result.dense is not None, result.sparse is not None, result.colbert is not None) == \
                (dense, sparse, colbert)
            assert_embedding_matches(result, ref, index, dense, sparse, colbert)
    wait_until_idle(server)  # the counters are whole once no request is in the model
    passes, requests, texts, forward_s, answer_s = (now - then for now, then in zip(_forward_counts(server), before))
    probes = requests - len(cases)  # the launcher's watchdog may probe meanwhile: one text per request
    assert probes >= 0 and texts == len(cases) * len(TEXTS) + probes, (requests, texts)
    assert 1 <= passes <= len(cases) + probes and forward_s > 0 and answer_s > 0, (passes, forward_s, answer_s)
    # that requests arriving during a forward pass share the next is tested with a held model (test_faults.py)


def wait_until_idle(server: Server) -> None:
    deadline = time.monotonic() + 120
    while in_model(server) > 0:
        assert time.monotonic() < deadline, "requests never left the model"
        time.sleep(0.02)


def _forward_counts(server: Server) -> tuple[float, ...]:
    """bge_m3's forward passes, the requests and texts they carried, and the seconds spent computing
    and answering them, from the server's metrics."""
    totals = server.forward_totals("bge_m3")
    return tuple(totals.get(what, 0.0) for what in ("forward_passes", "forward_requests", "forward_texts",
                                                    "forward_seconds", "answer_seconds"))


def test_batch_size_packing_keeps_order(server: Server) -> None:
    texts = [f"text number {i} " * (i % 7 + 1) for i in range(150)]
    with BGEM3Client(server.http) as client:
        whole = client.encode(texts, batch_size=0)
        for batch_size in (1, 7, 64, 200):
            split = client.encode(texts, batch_size=batch_size)
            for a, b in zip(whole, split):
                np.testing.assert_allclose(a.dense, b.dense, atol=1e-6)
                assert a.sparse == b.sparse or np.allclose(a.sparse["values"], b.sparse["values"], atol=1e-6)
        assert client.encode([]) == []
        assert len(client.encode("one string")) == 1


def test_max_length_parameter_truncates(server: Server) -> None:
    with BGEM3Client(server.http) as client:
        result = client.encode([TEXTS[1]], max_length=8, return_colbert=True)[0]
    assert result.tokens == 8 and result.truncated and result.colbert.shape[0] == 7


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_bad_requests_get_their_own_errors(server: Server, protocol: str) -> None:
    with BGEM3Client(server.url(protocol), protocol=protocol) as client:
        with pytest.raises(InvalidInputError, match="max_length"):
            client.encode(["x"], max_length=0)
        with pytest.raises(InvalidInputError, match="max_length"):
            client.encode(["x"], max_length=100_000)
    module = http if protocol == "http" else grpc
    raw = module.InferenceServerClient(server.url(protocol))
    text = module.InferInput("TEXT", [2, 1], "BYTES")
    text.set_data_from_numpy(np.array([b"fine", b"\xff\xfe bad"], dtype=object).reshape(2, 1))
    with pytest.raises(Exception, match="TEXT\\[1\\] is not valid UTF-8"):
        raw.infer("bge_m3", [text])
    good = module.InferInput("TEXT", [1, 1], "BYTES")
    good.set_data_from_numpy(np.array([b"fine"], dtype=object).reshape(1, 1))
    with pytest.raises(Exception, match="unknown request parameter"):
        raw.infer("bge_m3", [good], parameters={"mdoe": "passage"})
    with pytest.raises(Exception, match="mode"):
        raw.infer("bge_m3", [good], parameters={"mode": "document"})
    too_many = module.InferInput("TEXT", [65, 1], "BYTES")
    too_many.set_data_from_numpy(np.array([b"x"] * 65, dtype=object).reshape(65, 1))
    with pytest.raises(Exception, match="batch"):
        raw.infer("bge_m3", [too_many])
    assert raw.infer("bge_m3", [good]).as_numpy("DENSE").shape == (1, 32)


def _open_files(pid: int) -> set[str]:
    files = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            files.add(str(fd.readlink()))
        except OSError:
            continue
    return files


def _mapped_weights(pid: int) -> set[str]:
    return {line.split()[-1] for line in Path(f"/proc/{pid}/maps").read_text().splitlines()
            if line.split()[-1].endswith(".pt") and "shared-weights" in line}


def test_the_instances_share_one_weights_mapping_and_one_forward_gate(server: Server) -> None:
    """Two instances per model (this server's): one copy of each model's weights (mapped by both), and
    one CPU forward gate for every model of the server."""
    embed, cross = stub_pids(server, "bge_m3"), stub_pids(server, "bge_reranker")
    assert len(embed) == 2 and len(cross) == 2
    embed_maps = [_mapped_weights(pid) for pid in embed]
    cross_maps = [_mapped_weights(pid) for pid in cross]
    assert len(embed_maps[0]) == 1 and embed_maps[0] == embed_maps[1]
    assert len(cross_maps[0]) == 1 and cross_maps[0] == cross_maps[1] and cross_maps[0] != embed_maps[0]
    gates = [{f for f in _open_files(pid) if "bge-m3-triton-forward-" in f} for pid in embed + cross]
    assert len(gates[0]) == 1 and all(gate == gates[0] for gate in gates)
