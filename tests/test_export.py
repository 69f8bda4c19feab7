"""Save, export and reload on the tiny model: adapter round trip, GGUF vs merged, continued training, bad input.

One tiny variant is trained in this process (peft backend, fp32 CPU) and shared by the tests;
the CLI checks run in fresh processes like a user would. GGUF tests skip with the install
command where llama.cpp's converter or llama-cpp-python is missing.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness.config import GenerateConfig
from harness.errors import UserError
from harness.export import llama as llama_tools
from tests.conftest import asciitune, run_job_here

N_TOKENS = 32
FP32 = 'model.dtype="float32"'
FEW_PROBES = "train.eval_points=1"  # loss measured at step 0 and the last step only: faster, and all the tests need


@dataclass
class Trained:
    run_dir: Path
    cfg: object
    model: object
    tok: object
    curves: object


def _greedy_ids(model, tok, prompt: str, n: int = N_TOKENS) -> list[int]:
    """n greedy tokens after the prompt; EOS suppressed so every run yields exactly n."""
    import torch

    ids = tok(prompt, add_special_tokens=True, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                             max_new_tokens=n, min_new_tokens=n, pad_token_id=tok.pad_token_id)
    return out[0, ids.shape[1]:].tolist()


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Trained:
    """tiny trained 8 steps and saved exactly as harness.train.job does, with a results.json around it."""
    from harness import backends

    backend = backends.get("peft")
    from harness.config import load_plan
    from harness.data import build_dataset
    from harness.export.formats import CONFIG_FILE
    from harness.fsutil import atomic_write_json
    from harness.models import resolve
    from harness.results import RunResult, VariantResult
    from harness.train.sft import train_variant

    cfg = load_plan("tiny", [FP32, FEW_PROBES]).variants["base"]
    run_dir = tmp_path_factory.mktemp("run")
    model, tok, _ = backend.load(resolve(cfg.model.name), cfg)
    backend.for_training(model)
    curves, _ = train_variant(model, tok, build_dataset(cfg.data), cfg, run_dir / "checkpoints")
    adapter = run_dir / "adapters" / "base"
    model.save_pretrained(str(adapter))
    tok.save_pretrained(str(adapter))
    atomic_write_json(adapter / CONFIG_FILE, {"variant": "base", "config": cfg.to_dict()})
    backend.for_inference(model)
    RunResult(run_id=run_dir.name, variants={"base": VariantResult(
        name="base", status="done", config=cfg.to_dict(), backend="peft", adapter_dir="adapters/base",
        curves=curves)}).save(run_dir)
    return Trained(run_dir, cfg, model, tok, curves)


def test_exported_adapter_reloads_to_the_same_greedy_output(trained):
    from harness.export import formats as export
    from harness.export.quality import load_format

    _, src = export.run_source(trained.run_dir, "base")
    exporter = export.Exporter(src, "peft")
    entry = exporter.export("adapter", trained.run_dir / "exports" / "base" / "adapter")
    export.record(trained.run_dir, "base", "adapter", entry)
    _, reloaded, tok = load_format("adapter", Path(entry.path), src, "peft")
    prompt = trained.cfg.generate.prompt
    assert _greedy_ids(reloaded, tok, prompt) == _greedy_ids(trained.model, trained.tok, prompt)
    recorded = json.loads((trained.run_dir / "results.json").read_text())["variants"]["base"]["exports"]["adapter"]
    assert recorded["path"] == "exports/base/adapter" and recorded["bytes"] > 0


def test_continued_training_starts_where_it_stopped(trained, tmp_path):
    adapter = trained.run_dir / "adapters" / "base"
    result = run_job_here("base", trained.cfg, tmp_path / "continued", resume_from=str(adapter))
    # Same config and data, so the train probe is the same texts on the same weights: the continued
    # run's step-0 loss is the first run's last one, up to float round-off of an identical computation.
    assert result.curves.train_loss[0] == pytest.approx(trained.curves.train_loss[-1], rel=1e-5)
    assert result.curves.heldout_loss[0] == pytest.approx(trained.curves.heldout_loss[-1], rel=1e-5)
    assert result.curves.train_loss[-1] < result.curves.train_loss[0]  # and it keeps learning
    assert "continued from" in result.backend_note


@pytest.fixture(scope="module")
def ggufs(trained):
    """f32 and f16 GGUFs of the trained variant, plus the fp32 merged folder they came from."""
    if llama_tools.converter_dir() is None:
        pytest.skip(f"llama.cpp converter not installed: {llama_tools.INSTALL_HINT}")
    from harness.export import formats as export

    _, src = export.run_source(trained.run_dir, "base")
    exporter = export.Exporter(src, "peft", work_dir=trained.run_dir / "work")
    files = {t: Path(exporter.export(f"gguf:{t}", trained.run_dir / "exports" / f"gguf-{t}").path)
             for t in ("f32", "f16")}
    merged = trained.run_dir / "merged-fp32"
    shutil.copytree(exporter.fp32_dir(), merged)
    exporter.close()
    return files, merged


def _llama_greedy(path: Path, prompt_ids: list[int], f32_cache: bool):
    """N_TOKENS greedy tokens from llama.cpp (argmax of its logits, EOS not special) and those logits."""
    import numpy as np
    from llama_cpp import GGML_TYPE_F32, Llama

    cache = {"type_k": GGML_TYPE_F32, "type_v": GGML_TYPE_F32} if f32_cache else {}  # default: f16 K/V
    llm = Llama(model_path=str(path), n_ctx=128, logits_all=True, verbose=False, n_threads=1, **cache)
    ids, logits = list(prompt_ids), []
    llm.eval(ids)
    for _ in range(N_TOKENS):
        row = np.array(llm.scores[llm.n_tokens - 1])
        logits.append(row)
        ids.append(int(row.argmax()))
        llm.eval([ids[-1]])
    return llm, ids[len(prompt_ids):], np.stack(logits)


def _hf_logits(model, ids: list[int]):
    import torch

    with torch.no_grad():
        return model(input_ids=torch.tensor([ids])).logits[0].float().numpy()


@pytest.mark.parametrize("gguf_type", ["f32", "f16"])
def test_gguf_greedy_tokens_match_the_merged_model(ggufs, gguf_type):
    pytest.importorskip("llama_cpp", reason=f"llama-cpp-python not installed: {llama_tools.INSTALL_HINT}")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    files, merged = ggufs
    tok = AutoTokenizer.from_pretrained(merged)
    model = AutoModelForCausalLM.from_pretrained(merged, dtype=torch.float32).eval()
    if gguf_type == "f16":
        # Evaluate the merged model on the very weights the GGUF holds (rounded to fp16 once), in fp32 as
        # llama.cpp's CPU kernels accumulate. What still differs is llama.cpp rounding activations and the
        # K/V cache to fp16; torch's fp16 on CPU would round every intermediate instead, which is further off.
        for p in model.parameters():
            p.data = p.data.half().float()
    prompt_ids = tok("\n", add_special_tokens=True)["input_ids"]
    # f32 is checked with an f32 K/V cache (all-fp32 on both sides); f16 with llama.cpp's default f16 cache.
    llm, llama_ids, _ = _llama_greedy(files[gguf_type], prompt_ids, f32_cache=gguf_type == "f32")
    assert llm.tokenize(b"\n", add_bos=True, special=False) == prompt_ids  # same prompt tokens as HF
    hf_ids = _greedy_ids(model, tok, "\n")
    hf_logits = _hf_logits(model, prompt_ids + hf_ids)[len(prompt_ids) - 1:-1]
    top2 = torch.topk(torch.from_numpy(hf_logits), 2).values
    margin = float((top2[:, 0] - top2[:, 1]).min())
    # Teacher-forced on HF's tokens, llama.cpp's logits agree at all 32 steps, relative to the largest
    # |logit|: to fp32 round-off for f32 (measured 3.4e-7) and to fp16 activation and cache rounding
    # for f16 (measured 2.5e-4, a quarter of fp16's epsilon)...
    _, _, forced = _llama_greedy_forced(llm, prompt_ids, hf_ids)
    diff = float(abs(forced - hf_logits).max())
    scale = float(abs(hf_logits).max())
    assert diff < (1e-5 if gguf_type == "f32" else 2e-3) * scale, (diff, scale)
    # ...so exact agreement of the free-running greedy tokens is well defined, not luck: the smallest
    # top-1/top-2 gap along HF's path (measured 0.21 and 0.025 on two trainings) is far above that difference.
    assert margin > 5 * diff, f"near-tie: margin {margin} vs logit difference {diff}"
    assert llama_ids == hf_ids
    # The sampler path asciitune generate uses picks the same greedy tokens (EOS would stop it early).
    greedy = GenerateConfig(temperature=0.0, max_new_tokens=N_TOKENS)
    ids, _ = llama_tools.generate_tokens(llm, prompt_ids, greedy, seed=0)
    assert ids == hf_ids[:len(ids)]
    llm.close()


def _llama_greedy_forced(llm, prompt_ids: list[int], forced_ids: list[int]):
    """llama.cpp's logits at each step when fed the given tokens (teacher forcing)."""
    import numpy as np

    llm.reset()
    llm.eval(prompt_ids + forced_ids)
    start = len(prompt_ids) - 1
    rows = np.array(llm.scores[start:start + len(forced_ids)])
    return llm, [int(r.argmax()) for r in rows], rows


def test_cli_generates_from_a_gguf(ggufs):
    pytest.importorskip("llama_cpp", reason=f"llama-cpp-python not installed: {llama_tools.INSTALL_HINT}")
    files, _ = ggufs
    proc = asciitune("generate", "--gguf", str(files["f16"]), "--n-samples", "2", "--max-new-tokens", "8")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.count("--- sample") == 2 and "gguf:file" in proc.stderr  # status on stderr, samples on stdout


# ---------------------------------------------------------------- bad input

def test_missing_run_and_variant_are_one_sentence(trained, tmp_path):
    from harness.export import formats as export

    with pytest.raises(UserError, match="not found"):
        export.run_source(tmp_path / "nope", None, reports_dir=tmp_path)
    with pytest.raises(UserError, match="has no variant 'zzz'"):
        export.run_source(trained.run_dir, "zzz")
    proc = asciitune("export", str(tmp_path / "nope"), "--format", "adapter")
    assert proc.returncode == 2 and proc.stderr.startswith("error: Run ") and "Traceback" not in proc.stderr
    proc = asciitune("export", str(trained.run_dir), "--variant", "zzz", "--format", "adapter")
    assert proc.returncode == 2 and "has no variant 'zzz'" in proc.stderr and len(proc.stderr.splitlines()) == 1


@pytest.mark.parametrize("damage, message", [
    ("no_config", "has no adapter_config.json"),
    ("garbled_config", "damaged adapter_config.json"),
    ("no_weights", "has no adapter_model.safetensors"),
    ("truncated_weights", "are damaged"),
    ("garbage_weights", "are damaged"),
])
def test_damaged_adapter_is_refused(trained, tmp_path, damage, message):
    from harness.export import formats as export

    folder = tmp_path / "adapter"
    shutil.copytree(trained.run_dir / "adapters" / "base", folder)
    weights = folder / "adapter_model.safetensors"
    if damage == "no_config":
        (folder / "adapter_config.json").unlink()
    elif damage == "garbled_config":
        (folder / "adapter_config.json").write_text('{"peft_type": "LORA", "r": ')
    elif damage == "no_weights":
        weights.unlink()
    elif damage == "truncated_weights":
        weights.write_bytes(weights.read_bytes()[:-100])
    else:
        weights.write_bytes(b"\x00garbage" * 64)
    with pytest.raises(UserError, match=message):
        export.adapter_source(folder)


def test_damaged_adapter_via_cli_is_one_sentence(trained, tmp_path):
    folder = tmp_path / "adapter"
    shutil.copytree(trained.run_dir / "adapters" / "base", folder)
    (folder / "adapter_model.safetensors").write_bytes(b"not a tensor file")
    proc = asciitune("generate", "--adapter", str(folder))
    assert proc.returncode == 2 and "are damaged" in proc.stderr and len(proc.stderr.splitlines()) == 1


def test_unsupported_gguf_type_is_one_sentence(trained):
    from harness.export import formats as export

    with pytest.raises(UserError, match="GGUF type 'q9_x' is not supported"):
        export.parse_format("gguf:q9_x")
    with pytest.raises(UserError, match="Unknown export format"):
        export.parse_format("onnx")
    proc = asciitune("export", str(trained.run_dir), "--format", "gguf:iq2_xxs")
    assert proc.returncode == 2 and "GGUF type 'iq2_xxs' is not supported" in proc.stderr
    assert len(proc.stderr.splitlines()) == 1


# ---------------------------------------------------------------- slow: the whole CLI path

@pytest.mark.slow
def test_cli_exports_every_format_and_scores_them(trained):
    pytest.importorskip("llama_cpp", reason=f"llama-cpp-python not installed: {llama_tools.INSTALL_HINT}")
    proc = asciitune("export", str(trained.run_dir), "--format", "adapter", "merged", "gguf:f16", "gguf:q8_0",
                     "gguf:q4_0", "--score", "--n-samples", "2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    exports = json.loads((trained.run_dir / "results.json").read_text())["variants"]["base"]["exports"]
    for fmt in ("unexported", "adapter", "merged", "gguf:f16", "gguf:q8_0", "gguf:q4_0"):
        e = exports[fmt]
        assert e["bytes"] > 0 and e["load_s"] > 0 and e["scores"]["metrics"]["valid_rate"]["n"] == 2, fmt
        assert (trained.run_dir / e["path"]).exists() and (trained.run_dir / e["samples_file"]).is_file()
    assert exports["gguf:q4_0"]["bytes"] < exports["gguf:q8_0"]["bytes"] < exports["gguf:f16"]["bytes"]


@pytest.mark.slow
def test_unsloth_backend_merges_with_its_own_save_pretrained_merged(trained, tmp_path):
    proc = asciitune("export", str(trained.run_dir), "--format", "merged", "--backend", "unsloth",
                     "--out", str(tmp_path / "m"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    e = json.loads((trained.run_dir / "results.json").read_text())["variants"]["base"]["exports"]["merged"]
    assert e["tool"].startswith("unsloth save_pretrained_merged") or "casting explicitly" in proc.stdout
    assert e["dtype"] == "bfloat16" and (tmp_path / "m" / "model.safetensors").is_file()
