"""The multi-adapter engine on a GPU: its CUDA graphs replay its eager steps, and K variants trained together
match their solo fast-plan runs through each backend (Unsloth in a child process of its own), including
batched sampling's first steps (`gpu`: skipped without one).

    pytest tests/test_multi_gpu.py -m gpu
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
from conftest import REPO

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

# bf16 on the GPU: a stacked bmm against a backend's own LoRA kernels (Unsloth's fused ones), K rows in one
# batch against one, fp32 AdamW against torch's fused one; the bound for a variant against its solo run.
BF16_RTOL = 5e-3
# Scores of one generate step, batched against alone, relative to the largest score: bf16 matmuls of other
# shapes round differently (~1e-2 of a logit at most on a random model); a row running another adapter's
# weights differs by far more.
SCORE_RTOL = 3e-2


@pytest.mark.gpu
def test_multi_graphs_replay_eager_and_match_solo_in_fp32():
    """float32 tiny Llama (tests/test_fast_plan.py's): graphed multi steps = eager multi steps = solo steps."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    from test_fast_plan import _model, _tokenizer
    from test_multi_engine import VARIANTS

    from harness.train.fast.engine import Engine
    from harness.train.fast.run import FastRun
    from harness.train.multi.engine import MultiEngine
    from harness.train.multi.run import MultiRun

    tok = _tokenizer()

    def multi(mode):
        engine = MultiEngine(_model().cuda(), 3, mode=mode, micro_tokens=64, bucket=16)
        run = MultiRun(engine, tok, VARIANTS, max_length=256)
        run.warm_up()
        run.run(2)
        run.run(run.total)
        probe = run.probe_batches(tok, [[v[0][:6] for v in VARIANTS]])
        sums = torch.zeros(1, 3, device="cuda")
        engine.probe(probe, sums)
        engine.probe(probe, sums)  # a replay of the probe graphs the first call captured
        out = [run.losses(k) for k in range(3)], (sums[0] / 2).tolist(), engine
        return out

    (eager, eager_probe, _), (graphs, graph_probe, engine) = multi("eager"), multi("graphs")
    assert engine.mode == "graphs" and engine.graphs and engine.probe_graphs and not engine.probe_eager
    for k in range(3):
        assert graphs[k] == pytest.approx(eager[k], rel=1e-4)
        solo_engine = Engine(_model().cuda(), VARIANTS[k][1], mode="graphs", micro_tokens=64, bucket=16)
        run = FastRun(solo_engine, tok, VARIANTS[k][0], VARIANTS[k][1], max_length=256)
        run.warm_up()
        run.run(run.total)
        assert graphs[k] == pytest.approx(run.losses(), rel=1e-4), f"adapter {k} against its solo run"
    assert graph_probe == pytest.approx(eager_probe, rel=1e-4)


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["peft", "unsloth"])
def test_multi_against_solo_through_the_backend(tmp_path, backend):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    if backend == "unsloth":
        pytest.importorskip("unsloth", reason="Unsloth is not installed (the device bundle brings it)")
    out = tmp_path / f"multi-{backend}.json"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(x for x in (str(REPO), os.environ.get("PYTHONPATH")) if x),
               HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    proc = subprocess.run([sys.executable, str(REPO / "tests" / "gpu_multi_child.py"), "--backend", backend,
                           "--out", str(out)], cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0 and out.is_file(), proc.stdout[-2000:] + proc.stderr[-4000:]
    if os.environ.get("OUT"):  # a device call's results folder (scripts/gpu_multi_call.sh): the numbers come back
        shutil.copy(out, os.path.join(os.environ["OUT"], out.name))
    doc = json.loads(out.read_text())
    assert doc["multi"]["mode"] == "graphs" and doc["solo"]["mode"] == "graphs", doc["multi"]
    assert [len(x) for x in doc["multi"]["losses"]] == [8, 6, 8]
    assert max(doc["max_rel_diff_per_variant"]) <= BF16_RTOL, doc["max_rel_diff_per_variant"]
    assert len(set(round(x, 4) for x in doc["multi"]["probe"])) == 3  # three adapters, three probe losses
    if backend == "unsloth":
        assert doc["unsloth_sees_multiple_adapters"] is True
        graphs = doc["decode_graphs"]  # the batched decode replayed as CUDA graphs: the eager decode's tokens
        assert graphs["graphs"].startswith("CUDA graphs") and graphs["eager"].startswith("eager"), graphs
        assert graphs["same_tokens"] and graphs["adapters_differ"] and graphs["how"].startswith("batched"), graphs
    # the engine reused after sampling (a sweep's next group) trains the same variants to the same losses
    assert max(doc["again_max_rel_diff_per_variant"]) <= BF16_RTOL, doc["again_max_rel_diff_per_variant"]
    for k, g in enumerate(doc["generate"]):
        assert g["score_rel_diff_per_step"] and g["score_rel_diff_per_step"][0] <= SCORE_RTOL, (k, g)
        assert max(g["score_rel_diff_per_step"]) <= SCORE_RTOL, (k, g)
