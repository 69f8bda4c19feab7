"""Config tree: defaults, TOML, overrides, variants, sweeps, hashing, and loud failures."""
from __future__ import annotations

import pytest

from harness.config import OPTIMIZERS, RANGES, SCHEDULERS, RunConfig, apply_overrides, check, load_plan, parse_override
from harness.errors import UserError


def test_seed_defaults_match_the_notebook():
    cfg = RunConfig()
    assert (cfg.lora.r, cfg.lora.alpha, cfg.lora.dropout, cfg.lora.bias) == (16, 16, 0.0, "none")
    assert cfg.lora.target_modules == ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    assert (cfg.lora.random_state, cfg.lora.use_rslora, cfg.lora.gradient_checkpointing) == (3407, False, "unsloth")
    t = cfg.train
    assert (t.batch_size, t.grad_accum, t.epochs, t.lr, t.scheduler, t.weight_decay, t.seed) == \
        (2, 4, 5.0, 2e-4, "linear", 0.01, 3407)
    assert cfg.model.max_seq_length == 2048 and cfg.model.load_in_4bit is False


def test_override_parsing_reads_toml_values():
    assert parse_override("lora.r=8") == ("lora.r", 8)
    assert parse_override("train.lr=1e-4") == ("train.lr", 1e-4)
    assert parse_override("model.name=tiny") == ("model.name", "tiny")
    assert parse_override('lora.target_modules=["q_proj"]') == ("lora.target_modules", ["q_proj"])


def test_overrides_apply_and_coerce():
    cfg = apply_overrides(RunConfig(), {"lora.r": 8, "train.epochs": 2, "lora.target_modules": ["q_proj"]})
    assert cfg.lora.r == 8 and cfg.train.epochs == 2.0 and isinstance(cfg.train.epochs, float)
    assert cfg.lora.target_modules == ("q_proj",)


@pytest.mark.parametrize("override, fragment", [
    ("lora.rank=8", "[lora] has r, alpha"),
    ("loraa.r=8", "section from model, lora"),
    ("lora.r=eight", "must be an integer"),
    ("lora.r", "write it as section.key=value"),
])
def test_bad_overrides_fail_in_one_sentence(override, fragment):
    with pytest.raises(UserError) as err:
        load_plan("default", [override])
    assert fragment in str(err.value)
    assert "\n" not in str(err.value)


def test_builtin_default_has_story_variants_and_cli_wins():
    plan = load_plan("default", ["train.max_steps=3"])
    assert list(plan.variants) == ["seed", "learn", "memorize"]
    assert [v.train.lr for v in plan.variants.values()] == [2e-4, 3e-3, 3e-3]
    assert [v.data.max_train_pieces for v in plan.variants.values()] == [16, 0, 16]  # learn: every training cat
    assert [v.train.epochs for v in plan.variants.values()] == [5, 2, 10]
    assert all(v.train.max_steps == 3 for v in plan.variants.values())


def test_sweep_expands_to_named_grid(tmp_path):
    cfg = tmp_path / "grid.toml"
    cfg.write_text('[model]\nname = "tiny"\n[sweep]\n"lora.r" = [4, 8]\n"train.lr" = [1e-4, 1e-3]\n')
    plan = load_plan(str(cfg))
    assert list(plan.variants) == ["r4-lr0.0001", "r4-lr0.001", "r8-lr0.0001", "r8-lr0.001"]
    assert plan.variants["r8-lr0.001"].lora.r == 8 and plan.variants["r8-lr0.001"].train.lr == 1e-3
    assert len({v.hash() for v in plan.variants.values()}) == 4


def test_unknown_section_and_bad_toml(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[trainer]\nlr = 1\n")
    with pytest.raises(UserError, match=r"Unknown config section \[trainer\]"):
        load_plan(str(bad))
    bad.write_text("[train\n")
    with pytest.raises(UserError, match="not valid TOML"):
        load_plan(str(bad))


def test_hash_is_stable_and_sensitive():
    assert RunConfig().hash() == RunConfig().hash()
    assert RunConfig().hash() != apply_overrides(RunConfig(), {"lora.r": 8}).hash()


# (override, the value as the message shows it, the allowed range as the message states it)
BAD_VALUES = [
    ("lora.r=0", "0", ">= 1"),
    ("lora.alpha=0", "0", "> 0"),
    ("lora.dropout=1", "1.0", "in [0, 1)"),
    ("lora.dropout=-0.1", "-0.1", "in [0, 1)"),
    ("train.lr=0", "0.0", "> 0"),
    ("train.lr=-1", "-1.0", "> 0"),
    ("train.batch_size=0", "0", ">= 1"),
    ("train.grad_accum=0", "0", ">= 1"),
    ("model.max_seq_length=15", "15", ">= 16"),
    ("data.heldout_fraction=0", "0.0", "in (0, 1)"),
    ("data.heldout_fraction=1", "1.0", "in (0, 1)"),
    ("data.near_duplicate_similarity=0", "0.0", "in (0, 1]"),
    ("data.near_duplicate_similarity=1.5", "1.5", "in (0, 1]"),
    ("data.variant_similarity=0", "0.0", "in (0, 1]"),
    ("generate.n_samples=0", "0", ">= 1"),
    ("generate.max_new_tokens=0", "0", ">= 1"),
    ("generate.temperature=0", "0.0", "> 0"),
    ("generate.top_p=0", "0.0", "in (0, 1]"),
    ("generate.top_p=1.01", "1.01", "in (0, 1]"),
    ("generate.top_p=nan", "nan", "in (0, 1]"),
    ("train.warmup_steps=-1", "-1", ">= 0"),
    ("train.weight_decay=-0.01", "-0.01", ">= 0"),
    ("train.eval_points=0", "0", ">= 1"),
    ("train.eval_heldout_pieces=-1", "-1", ">= 0"),
    ("train.eval_train_pieces=-1", "-1", ">= 0"),
    ("train.eval_batch_tokens=0", "0", ">= 1"),
    ("train.max_steps=-2", "-2", ">= -1"),
    ("train.epochs=-1", "-1.0", ">= 0"),
    ("train.seed=-1", "-1", "in [0, 4294967296)"),
    ("lora.random_state=-1", "-1", "in [0, 4294967296)"),
    ("generate.seed=4294967296", "4294967296", "in [0, 4294967296)"),
    ("generate.batch_size=0", "0", ">= 1"),
    ("generate.min_p=1", "1.0", "in [0, 1)"),
    ("generate.min_p=-0.5", "-0.5", "in [0, 1)"),
    ("generate.top_k=-1", "-1", ">= 0"),
    ("generate.repetition_penalty=0", "0.0", "> 0"),
    ("data.max_train_pieces=-1", "-1", ">= 0"),
    ("data.max_piece_chars=-1", "-1", ">= 0"),
    ("bench.batch_sizes=[0, 2]", "[0, 2]", "a list of values >= 1"),
    ("bench.seq_lens=[512, -1]", "[512, -1]", "a list of values >= 1"),
    ("bench.steps=0", "0", ">= 1"),
    ("bench.warmup_steps=-1", "-1", ">= 0"),
    ("bench.loss_steps=0", "0", ">= 1"),
    ("model.backend=vllm", "'vllm'", "one of unsloth, peft"),
    ("lora.bias=some", "'some'", "one of none, all, lora_only"),
    ("lora.gradient_checkpointing=maybe", "'maybe'", "one of unsloth, true, false"),
    ("model.dtype=bf16", "'bf16'", "one of auto, bfloat16, float16, float32"),
    ("train.scheduler=cosine_annealing", "'cosine_annealing'", "one of linear, cosine,"),
    ("train.optim=adam", "'adam'", "one of auto, adamw_torch,"),
    ("lora.target_modules=[]", "[]", "non-empty"),
    ('model.name=""', "''", "non-empty"),
    ('data.source=""', "''", "non-empty"),
]


@pytest.mark.parametrize("override, shown, allowed", BAD_VALUES, ids=[b[0] for b in BAD_VALUES])
def test_bad_value_fails_in_one_sentence_naming_key_value_and_range(override, shown, allowed):
    key = override.partition("=")[0]
    with pytest.raises(UserError) as err:
        load_plan("tiny", [override])
    msg = str(err.value)
    assert f"'{key}' cannot be {shown}: it must be {allowed}" in msg
    assert "\n" not in msg and msg.count(". ") == 0 and msg.endswith(".")


def test_training_nothing_is_refused_but_max_steps_alone_is_fine():
    with pytest.raises(UserError) as err:
        load_plan("default", ["train.epochs=0"])
    msg = str(err.value)
    assert "train.epochs=0" in msg and "train.max_steps=-1" in msg and "train.max_steps > 0" in msg
    assert load_plan("default", ["train.epochs=0", "train.max_steps=3"]).variants["seed"].train.max_steps == 3


def test_bad_values_fail_the_same_in_files_variants_and_saved_configs(tmp_path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text('[variants.a]\n"lora.r" = 4\n[variants.b]\n"lora.r" = 0\n')
    with pytest.raises(UserError, match=r"'lora.r' cannot be 0: it must be >= 1"):
        load_plan(str(cfg))
    cfg.write_text("[generate]\ntemperature = -1\n")
    with pytest.raises(UserError, match=r"'generate.temperature' cannot be -1.0"):
        load_plan(str(cfg))
    with pytest.raises(UserError, match=r"'train.batch_size' cannot be 0"):
        RunConfig.from_dict({"train": {"batch_size": 0}})
    with pytest.raises(UserError, match=r"train.epochs=0 and train.max_steps=-1"):
        RunConfig.from_dict({"train": {"epochs": 0}})
    saved = apply_overrides(RunConfig(), {"lora.r": 8}).to_dict()
    assert RunConfig.from_dict(saved) == apply_overrides(RunConfig(), {"lora.r": 8})


@pytest.mark.parametrize("typed, stored", [("false", "false"), ("true", "true"), ("unsloth", "unsloth"),
                                           ('"false"', "false")])
def test_switches_take_toml_booleans_as_users_type_them(tmp_path, typed, stored):
    plan = load_plan("tiny", [f"lora.gradient_checkpointing={typed}"])
    assert plan.base.lora.gradient_checkpointing == stored
    assert all(v.lora.gradient_checkpointing == stored for v in plan.variants.values())
    cfg = tmp_path / "switch.toml"
    cfg.write_text(f"[lora]\ngradient_checkpointing = {typed if typed != 'unsloth' else repr(typed)}\n")
    assert load_plan(str(cfg)).base.lora.gradient_checkpointing == stored


def test_booleans_stay_refused_where_the_key_is_no_switch():
    with pytest.raises(UserError, match="'model.dtype' must be a string, not False"):
        load_plan("tiny", ["model.dtype=false"])


def test_ranges_name_real_keys_and_every_default_is_in_range():
    known = {f"{s}.{k}" for s, sec in RunConfig().to_dict().items() for k in sec}
    assert set(RANGES) <= known
    assert check(RunConfig()) == RunConfig()
    for name in ("default", "seed", "tiny"):
        load_plan(name)
        load_plan(name, on_gpu=True)


def test_scheduler_and_optimizer_names_match_the_installed_transformers():
    from transformers.trainer_utils import SchedulerType
    from transformers.training_args import OptimizerNames

    assert SCHEDULERS == tuple(s.value for s in SchedulerType)
    assert OPTIMIZERS == tuple(o.value for o in OptimizerNames)


def test_bench_settings_stay_out_of_every_variant_hash():
    plan = load_plan("default")
    hashes = {n: v.hash() for n, v in plan.variants.items()}
    benched = load_plan("default", ["bench.steps=99", "bench.seq_lens=[256]"])
    assert {n: v.hash() for n, v in benched.variants.items()} == hashes
    tracked = load_plan("default", ["train.report_to=tensorboard"])  # where training is logged trains nothing
    assert {n: v.hash() for n, v in tracked.variants.items()} == hashes
    assert benched.base.hash() == plan.base.hash()
    ranked = load_plan("default", ["lora.r=2"])
    assert all(ranked.variants[n].hash() != h for n, h in hashes.items())
