"""Settings from parameters and environment; the rendered model configuration."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from fake_pb_utils import REPO
from tritonclient.grpc import model_config_pb2 as mc

from bge_m3_triton.core.settings import (
    MAX_BATCH_SIZE,
    SETTINGS,
    STRUCTURAL,
    ModelSettings,
    SettingsError,
    markdown_table,
)
from bge_m3_triton.ops.cli import build_parser, deployment_from_args
from bge_m3_triton.ops.render import Deployment, deployment_from_env, load_config, render_repository
from bge_m3_triton.serving.instance import computing_instances, instance_device, settings_from_args

PARAMETERS = {"model": "/m", "dtype": "float32", "query_max_length": "64"}


def test_the_environment_overrides_parameters_only_when_asked() -> None:
    env = {"BGE_M3_DTYPE": "bfloat16", "OTHER_DTYPE": "float16"}
    plain = ModelSettings.from_sources(PARAMETERS, env, "bge_m3")
    assert (plain.model, plain.dtype, plain.query_max_length) == ("/m", "float32", 64)
    asked = ModelSettings.from_sources(PARAMETERS, {**env, "BGE_M3_ENV_OVERRIDES": "1"}, "bge_m3")
    assert (asked.model, asked.dtype, asked.query_max_length) == ("/m", "bfloat16", 64)
    with pytest.raises(SettingsError, match="environment variable BGE_M3_QUERY_MAX_LENGTH"):
        ModelSettings.from_sources(PARAMETERS, {"BGE_M3_QUERY_MAX_LENGTH": "1", "BGE_M3_ENV_OVERRIDES": "1"},
                                   "bge_m3")


def test_flags_win_over_the_environment() -> None:
    env = {"BGE_M3_DTYPE": "float32", "BGE_RERANKER_MODEL": "", "MAX_MODELS": "2"}
    args = build_parser().parse_args(["serve", "--dtype", "bfloat16", "--reranker", "/rr"])
    deployment = deployment_from_args(args, env)
    assert (deployment.dtype, deployment.reranker, deployment.instances) == ("bfloat16", "/rr", 2)
    # an empty variable (compose's `BGE_RERANKER_MODEL: ""`) is no setting at all
    assert deployment_from_env({"BGE_RERANKER_MODEL": ""}).reranker is None
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--instances", "0"])


def test_shipped_configs_hold_the_tables_defaults() -> None:
    # `reranker` defaults to none (no cross-encoder served); the shipped config names the checkpoint
    # a stock tritonserver run loads.
    for setting in (s for s in SETTINGS if s.name != "reranker"):
        for name in setting.models:
            config = load_config(REPO / "model_repository" / name / "config.pbtxt")
            group = config.instance_group[0]
            gpu = f"cuda:{group.gpus[0]}" if group.gpus else "cuda"
            shipped = {MAX_BATCH_SIZE: config.max_batch_size, "instance_count": group.count,
                       "instance_kind": "cpu" if group.kind == mc.ModelInstanceGroup.KIND_CPU else gpu}
            if setting.target in STRUCTURAL:
                value = shipped[setting.target]
            else:
                value = setting.parse(config.parameters[setting.target].string_value, setting.name)
            assert value == setting.default, (name, setting.name)


def test_the_weight_holding_models_leave_batching_to_their_collector(tmp_path: Path) -> None:
    # Triton's dynamic batcher would queue requests in front of the collector (README: Latency).
    for name in ("bge_m3", "bge_reranker"):
        assert not load_config(REPO / "model_repository" / name / "config.pbtxt").HasField("dynamic_batching")
    rendered = render_repository(REPO / "model_repository", tmp_path / "rendered",
                                 deployment_from_env({"BGE_M3_MAX_QUEUE_SIZE": "3"}))
    config = load_config(rendered / "bge_m3" / "config.pbtxt")
    assert not config.HasField("dynamic_batching") and config.parameters["max_queue_size"].string_value == "3"


def test_every_model_parameter_is_a_field_and_every_field_a_parameter() -> None:
    """A setting that lands in config.pbtxt's parameters is read by `ModelSettings`, and every field it has
    comes from the table (but `device`, which the Triton instance decides): declared once, nowhere else."""
    fields = {f.name for f in dataclasses.fields(ModelSettings)}
    targets = {s.target for s in SETTINGS if s.target not in STRUCTURAL}
    assert targets == fields - {"device"}


def test_readme_configuration_table_is_the_generated_one() -> None:
    for page in ("README.md", "docs/configuration.md"):
        assert markdown_table() in (REPO / page).read_text(), f"{page}'s table is stale: paste `bge-m3-triton settings`"


@pytest.mark.parametrize(("parameters", "message"), [
    ({"dtype": "int4"}, "dtype"), ({"query_max_length": "lots"}, "integer"), ({"max_batch_texts": "0"}, "at least 1"),
    ({"modle": "x"}, "unknown parameter"), ({"device": "tpu"}, "device"),
])
def test_bad_parameters_are_named(parameters: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        ModelSettings.from_sources(parameters, {}, "bge_m3")


def test_triton_args_pick_the_instance_device() -> None:
    config = json.dumps({"parameters": {"model": {"string_value": "/m"}}})
    args = {"model_config": config, "model_name": "bge_m3", "model_instance_kind": "GPU",
            "model_instance_device_id": "1"}
    settings = settings_from_args(args, env={})
    assert settings.device == "auto"  # as configured; the instance's device is a fact of the plan
    assert instance_device(args, settings) == "cuda:1"
    assert instance_device({**args, "model_instance_kind": "CPU"}, settings) == "cpu"
    assert instance_device(args, dataclasses.replace(settings, device="cuda")) == "cuda:0"


def test_every_shipped_config_parses_and_its_parameters_are_known() -> None:
    for name in ("bge_m3", "bge_m3_rerank", "bge_reranker"):
        config = load_config(REPO / "model_repository" / name / "config.pbtxt")
        assert config.name == name and config.backend == "python" and config.max_batch_size > 0
        ModelSettings.from_sources({k: v.string_value for k, v in config.parameters.items()}, {}, name)


def test_render_applies_a_deployment(tmp_path: Path) -> None:
    deployment = Deployment(model="/ckpt", reranker="/rr", dtype="float32", device="cuda:1", instances=3,
                            max_batch_size=32, queue_timeout_us=5_000_000, passage_max_length=4096)
    target = render_repository(REPO / "model_repository", tmp_path / "models", deployment)
    embed = load_config(target / "bge_m3" / "config.pbtxt")
    assert embed.parameters["model"].string_value == "/ckpt"
    assert embed.parameters["passage_max_length"].string_value == "4096"
    assert embed.max_batch_size == 32
    assert embed.parameters["queue_timeout_us"].string_value == "5000000"
    group = embed.instance_group[0]
    assert (group.count, group.kind, list(group.gpus)) == (3, mc.ModelInstanceGroup.KIND_GPU, [1])
    assert load_config(target / "bge_reranker" / "config.pbtxt").parameters["model"].string_value == "/rr"
    rerank = load_config(target / "bge_m3_rerank" / "config.pbtxt")
    assert rerank.max_batch_size == 32 and rerank.parameters["embed_max_batch_size"].string_value == "32"
    cross = load_config(target / "bge_reranker" / "config.pbtxt")
    assert cross.parameters["passage_max_length"].string_value == "512"  # the cross-encoder keeps its own
    assert (target / "bge_m3" / "1" / "model.py").is_file()


@pytest.mark.parametrize(("count", "slots", "computing"), [
    (2, "1", 1),  # one computes at a time
    (2, "0", 2),  # unlimited: every instance
    (4, "2", 2),
    (1, "0", 1),
])
def test_instances_computing_at_once_follow_the_forward_slots(count: int, slots: str, computing: int) -> None:
    config = json.dumps({"instance_group": [{"count": count, "kind": "KIND_CPU"}],
                         "parameters": {"forward_slots": {"string_value": slots}}})
    args = {"model_config": config, "model_name": "bge_m3", "model_instance_kind": "CPU"}
    assert computing_instances(args, settings_from_args(args, env={})) == computing


def test_rendered_cpu_deployment_keeps_thread_choice_to_the_stub(tmp_path: Path) -> None:
    target = render_repository(REPO / "model_repository", tmp_path / "m", Deployment(forward_slots=0, instances=2))
    embed = load_config(target / "bge_m3" / "config.pbtxt")
    assert embed.instance_group[0].kind == mc.ModelInstanceGroup.KIND_CPU and embed.instance_group[0].count == 2
    assert embed.parameters["forward_slots"].string_value == "0"
    assert embed.parameters["torch_threads"].string_value == "0"
    assert not (target / "bge_reranker").exists()


def test_environment_names_include_the_runpod_workers() -> None:
    deployment = deployment_from_env({"GPU_DEVICE": "cuda:0", "MAX_MODELS": "4", "BGE_M3_MODEL": "/x",
                                      "BGE_M3_QUEUE_TIMEOUT_US": "1000"})
    assert (deployment.device, deployment.instances, deployment.model, deployment.queue_timeout_us) == \
        ("cuda:0", 4, "/x", 1000)
    with pytest.raises(ValueError, match="MAX_MODELS"):
        deployment_from_env({"MAX_MODELS": "many"})


def test_contract_config_and_readme_agree() -> None:
    from bge_m3_client import contract

    config = load_config(REPO / "model_repository" / "bge_m3" / "config.pbtxt")
    declared = {o.name: mc.DataType.Name(o.data_type).removeprefix("TYPE_") for o in config.output}
    assert declared == contract.EMBED_OUTPUTS
    assert [i.name for i in config.input] == [contract.TEXT]
    readme = (REPO / "README.md").read_text()
    for name, dtype in contract.EMBED_OUTPUTS.items():
        assert f"| `{name}` | {dtype} |" in readme, name
    rerank = load_config(REPO / "model_repository" / "bge_m3_rerank" / "config.pbtxt")
    assert [o.name for o in rerank.output] == [contract.SCORES]
    assert rerank.output[0].dims == [len(contract.SCORE_COLUMNS)]
    cross = load_config(REPO / "model_repository" / "bge_reranker" / "config.pbtxt")
    assert [o.name for o in cross.output] == [contract.SCORE]


def test_every_variable_of_ours_the_code_reads_is_declared() -> None:
    """Every `BGE_M3_*`, `BGE_RERANKER_*`, `GPU_DEVICE`, `MAX_MODELS` or `TRITON*` variable read anywhere in
    the server, client or gateway is a setting's (the table) or declared in `PROCESS_VARIABLES`, and docs show
    the latter."""
    import re

    from bge_m3_gateway.settings import API_KEY_ENV, ENV_PREFIX
    from bge_m3_triton.core.settings import PROCESS_VARIABLES, environment_table

    declared = {name for s in SETTINGS for name in s.env} | {v.name for v in PROCESS_VARIABLES} | {API_KEY_ENV}
    reads = re.compile(r"""environ(?:\.get)?[(\[]\s*["']((?:BGE_|GPU_DEVICE|MAX_MODELS|TRITON)\w*)""")
    read = set()
    for folder in ("src", "client", "gateway"):
        for path in (REPO / folder).rglob("*.py"):
            text = path.read_text()
            read |= set(reads.findall(text))
            read |= set(re.findall(r'^[A-Z_]+ = "((?:BGE_M3_|TRITON)\w*)"', text, re.MULTILINE))
    read = {name for name in read if not name.startswith(ENV_PREFIX)}  # the gateway's own, one per flag
    assert read and read <= declared, read - declared
    assert environment_table() in (REPO / "docs" / "configuration.md").read_text()


def test_the_models_names_are_the_contracts() -> None:
    """The settings table renders the models the client calls: one name each, in two rooms that may not
    import each other (the core knows no client)."""
    from bge_m3_client import contract
    from bge_m3_triton.core import settings

    assert (settings.EMBED, settings.RERANK, settings.CROSS_ENCODER) == (
        contract.EMBED_MODEL, contract.RERANK_MODEL, contract.CROSS_ENCODER_MODEL)
