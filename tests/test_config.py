"""Config tree: defaults, TOML, overrides, variants, sweeps, hashing, and loud failures."""
from __future__ import annotations

import pytest

from harness.config import RunConfig, apply_overrides, load_plan, parse_override
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
    ("lora.r=eight", "must be a int"),
    ("lora.r", "write it as section.key=value"),
])
def test_bad_overrides_fail_in_one_sentence(override, fragment):
    with pytest.raises(UserError) as err:
        load_plan("default", [override])
    assert fragment in str(err.value)
    assert "\n" not in str(err.value)


def test_builtin_default_has_rank_variants_and_cli_wins():
    plan = load_plan("default", ["train.max_steps=3"])
    assert set(plan.variants) == {"r4", "r16", "r64"}
    assert [v.lora.r for v in plan.variants.values()] == [4, 16, 64]
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
