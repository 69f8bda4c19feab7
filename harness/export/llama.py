"""llama.cpp tooling from PyPI: HF -> GGUF conversion, quantization, and GGUF sampling.

    asciitune llama-cpp install        # once per environment; needs PyPI, builds for minutes
    asciitune llama-cpp status         # what is installed and which GGUF types work

Both pieces come from one pinned llama-cpp-python sdist, so the converter writes files the
library reads: `convert_hf_to_gguf.py` (with its `conversion/` and `gguf-py/` folders, pure
Python) is unpacked into the environment for f32/f16/bf16/q8_0, and the compiled library
(`pip install` of the same sdist) adds `llama_model_quantize` for 4-bit types and the `Llama`
class for sampling. Nothing here touches the network except `install`.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from harness.errors import UserError
from harness.results import GenerationStats

LLAMA_CPP_PYTHON_VERSION = "0.3.36"
INSTALL_HINT = "run `asciitune llama-cpp install` (needs PyPI and a C++ compiler; see README)"
CONVERTER_TYPES = ("f32", "f16", "bf16", "q8_0")  # convert_hf_to_gguf.py writes these directly
# llama_model_quantize targets (llama.cpp's LLAMA_FTYPE_MOSTLY_* names). IQ types are left out:
# they need an importance matrix, which needs calibration text and a second tool.
QUANTIZE_TYPES = ("q4_0", "q4_1", "q5_0", "q5_1", "q2_k", "q3_k_s", "q3_k_m", "q3_k_l", "q4_k_s", "q4_k_m",
                  "q5_k_s", "q5_k_m", "q6_k")
_CONVERTER_PARTS = ("convert_hf_to_gguf.py", "conversion", "gguf-py", "models/templates", "LICENSE")
_MARKER = "asciitune-llama-cpp.txt"


def converter_dir() -> Path | None:
    """The folder holding convert_hf_to_gguf.py: $ASCIITUNE_LLAMA_CPP, else the installed copy, else None."""
    env = os.environ.get("ASCIITUNE_LLAMA_CPP")
    candidates = [Path(env)] if env else []
    candidates.append(_install_dir())
    return next((c for c in candidates if (c / "convert_hf_to_gguf.py").is_file()), None)


def _install_dir() -> Path:
    return Path(sys.prefix) / "share" / "asciitune" / f"llama.cpp-{LLAMA_CPP_PYTHON_VERSION}"


def library_version() -> str | None:
    """llama-cpp-python's version if it imports, else None."""
    try:
        import llama_cpp
    except (ImportError, OSError):  # OSError: the shared library is missing or built for another CPU
        return None
    return getattr(llama_cpp, "__version__", "?")


def supported_types() -> list[str]:
    """GGUF types this environment can write now."""
    return ([*CONVERTER_TYPES] if converter_dir() else []) + ([*QUANTIZE_TYPES] if library_version() else [])


def check_type(gguf_type: str) -> str:
    """Normalise a GGUF type name and make sure the installed tools can write it."""
    t = gguf_type.strip().lower()
    if t not in CONVERTER_TYPES + QUANTIZE_TYPES:
        raise UserError(f"GGUF type '{gguf_type}' is not supported: choose one of "
                        f"{', '.join(CONVERTER_TYPES + QUANTIZE_TYPES)}.")
    if converter_dir() is None:
        raise UserError(f"GGUF export needs llama.cpp's converter, which is not installed: {INSTALL_HINT}.")
    if t in QUANTIZE_TYPES and library_version() is None:
        raise UserError(f"GGUF type '{t}' needs llama-cpp-python's quantizer, which is not installed: "
                        f"{INSTALL_HINT}.")
    return t


def tool_note(gguf_type: str) -> str:
    """Which tool wrote a type, for the results file."""
    note = f"llama.cpp convert_hf_to_gguf.py (llama-cpp-python {LLAMA_CPP_PYTHON_VERSION} sdist)"
    return note + (" + llama_model_quantize" if gguf_type in QUANTIZE_TYPES else "")


def _run(cmd: list[str], what: str, env: dict | None = None) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        raise RuntimeError(f"{what} failed (exit {proc.returncode}):\n{tail}")


def convert(hf_dir: Path, out_file: Path, outtype: str, model_name: str | None = None) -> None:
    """Run convert_hf_to_gguf.py on a saved HF folder, in a child process (it imports its own gguf-py)."""
    conv = converter_dir()
    if conv is None:
        raise UserError(f"GGUF export needs llama.cpp's converter, which is not installed: {INSTALL_HINT}.")
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    _run([sys.executable, str(conv / "convert_hf_to_gguf.py"), str(hf_dir), "--outfile", str(out_file),
          "--outtype", outtype, *(["--model-name", model_name] if model_name else [])], "convert_hf_to_gguf.py", env)


def quantize(in_file: Path, out_file: Path, gguf_type: str) -> None:
    """Quantize a GGUF with llama_model_quantize, in a child process (llama.cpp aborts on some errors)."""
    _run([sys.executable, "-m", "harness.export.llama", str(in_file), str(out_file), gguf_type],
         "llama_model_quantize")


def _quantize_here(in_file: str, out_file: str, gguf_type: str) -> int:
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{gguf_type.upper()}")
    params.nthread = os.cpu_count() or 1
    return int(llama_cpp.llama_model_quantize(in_file.encode(), out_file.encode(), params))


def check_gguf_file(path: Path) -> None:
    """Refuse anything that is not a GGUF file before llama.cpp sees it."""
    if not path.is_file():
        raise UserError(f"GGUF file '{path}' does not exist: pass a .gguf written by `asciitune export`.")
    with open(path, "rb") as fh:
        if fh.read(4) != b"GGUF":
            raise UserError(f"'{path}' is not a GGUF file (no GGUF magic): re-export it.")


def load_gguf(path: Path, n_ctx: int = 2048):
    """Open a GGUF with llama-cpp-python on the CPU, quietly."""
    check_gguf_file(path)
    if library_version() is None:
        raise UserError(f"Sampling from a GGUF needs llama-cpp-python, which is not installed: {INSTALL_HINT}.")
    from llama_cpp import Llama

    try:
        return Llama(model_path=str(path), n_ctx=n_ctx, n_threads=os.cpu_count() or 1, verbose=False)
    except ValueError as exc:
        raise UserError(f"llama.cpp could not load '{path}' ({exc}): the file is damaged or from a newer "
                        "llama.cpp; re-export it.") from None


def _sampler(gcfg, seed: int, n_vocab: int):
    """HF's order: repetition penalty, temperature, top-k, top-p, min-p, then draw (llama-cpp-python's own
    chain applies top-p before temperature, which keeps a different nucleus)."""
    from llama_cpp import _internals

    s = _internals.LlamaSampler()
    if gcfg.repetition_penalty != 1.0:
        s.add_penalties(n_vocab=n_vocab, penalty_last_n=-1, penalty_repeat=gcfg.repetition_penalty,
                        penalty_freq=0.0, penalty_present=0.0)
    if gcfg.temperature <= 0:
        s.add_greedy()
        return s
    s.add_temp(gcfg.temperature)
    if gcfg.top_k > 0:
        s.add_top_k(gcfg.top_k)
    if gcfg.top_p < 1.0:
        s.add_top_p(gcfg.top_p, 1)
    if gcfg.min_p > 0:
        s.add_min_p(gcfg.min_p, 1)
    s.add_dist(seed)
    return s


def generate_tokens(llm, prompt_ids: list[int], gcfg, seed: int) -> tuple[list[int], bool]:
    """One sample's new tokens (EOS excluded) and whether it stopped at EOS."""
    import llama_cpp

    sampler = _sampler(gcfg, seed, llm.n_vocab())
    for t in prompt_ids:  # the repetition penalty counts prompt tokens too, as in HF
        llama_cpp.llama_sampler_accept(sampler.sampler, t)
    eos = llm.token_eos()
    llm.reset()
    llm.eval(prompt_ids)
    out: list[int] = []
    try:
        while len(out) < gcfg.max_new_tokens:
            tok = sampler.sample(llm._ctx, -1)  # samples and accepts (llama_sampler_sample)
            if tok == eos:
                return out, True
            out.append(tok)
            llm.eval([tok])
    finally:
        sampler.close()
    return out, False


def generate_samples(llm, gcfg, progress=None) -> tuple[list, GenerationStats]:
    """Draw gcfg.n_samples pieces from a GGUF like harness.train.generate does; sample i uses seed + i."""
    from dataclasses import asdict

    from harness.train.generate import Sample, clean_sample

    prompt_ids = llm.tokenize(gcfg.prompt.encode("utf-8"), add_bos=True, special=False)
    if not prompt_ids:
        raise UserError("generate.prompt encodes to zero tokens: use a start token such as '\\n'.")
    samples, new_tokens, seconds = [], 0, 0.0
    for i in range(gcfg.n_samples):
        t0 = time.perf_counter()
        ids, hit_eos = generate_tokens(llm, prompt_ids, gcfg, gcfg.seed + i)
        seconds += time.perf_counter() - t0
        new_tokens += len(ids) + hit_eos
        text = llm.detokenize(ids).decode("utf-8", errors="replace")
        samples.append(Sample(i, clean_sample(text), len(ids), not hit_eos))
        if progress:
            progress(len(samples))
    stats = GenerationStats(n=len(samples), seconds=round(seconds, 3), new_tokens=new_tokens,
                            tokens_per_s=round(new_tokens / max(seconds, 1e-9), 2),
                            cut_off=sum(s.cut_off for s in samples), settings=asdict(gcfg),
                            sampler="llama.cpp: penalties, temp, top_k, top_p, min_p, dist(seed + i)")
    return samples, stats


def install(sdist: str | None = None, build: bool = True) -> None:
    """Fetch the pinned sdist from PyPI (unless given), unpack the converter, pip-install the library."""
    t0 = time.perf_counter()
    if (_install_dir() / _MARKER).is_file() and (not build or library_version() == LLAMA_CPP_PYTHON_VERSION):
        print(f"llama.cpp tools {LLAMA_CPP_PYTHON_VERSION} already installed; GGUF types: "
              f"{', '.join(supported_types())}")
        return
    from_index = sdist is None
    with tempfile.TemporaryDirectory() as tmp:
        if sdist is None:
            print(f"downloading llama-cpp-python=={LLAMA_CPP_PYTHON_VERSION} (sdist, ~77 MB) from PyPI", flush=True)
            subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                            f"llama-cpp-python=={LLAMA_CPP_PYTHON_VERSION}", "-d", tmp], check=True)
            sdist = str(next(Path(tmp).glob("llama_cpp_python-*.tar.gz")))
        _unpack_converter(Path(sdist))
        print(f"converter in {_install_dir()}", flush=True)
        if build and library_version() != LLAMA_CPP_PYTHON_VERSION:
            # LLAVA_BUILD=OFF skips the multimodal library; the native CPU build is kept (fastest here).
            env = dict(os.environ, CMAKE_ARGS=os.environ.get("CMAKE_ARGS", "-DLLAVA_BUILD=OFF"))
            env.setdefault("CMAKE_BUILD_PARALLEL_LEVEL", str(os.cpu_count() or 1))
            print(f"building llama-cpp-python with {env['CMAKE_BUILD_PARALLEL_LEVEL']} job(s); "
                  "this takes minutes unless pip's wheel cache has it", flush=True)
            # By name from the index, not the file: pip then caches the built wheel, so a fresh venv on
            # this machine (CI's clean clone) installs it in seconds instead of compiling again.
            target = f"llama-cpp-python=={LLAMA_CPP_PYTHON_VERSION}" if from_index else sdist
            subprocess.run([sys.executable, "-m", "pip", "install", target], check=True, env=env)
    print(f"done in {time.perf_counter() - t0:.0f}s; GGUF types: {', '.join(supported_types())}")


def _unpack_converter(sdist: Path) -> None:
    dest = _install_dir()
    if (dest / _MARKER).is_file():
        return
    staging = dest.with_name(dest.name + ".building")
    shutil.rmtree(staging, ignore_errors=True)
    with tarfile.open(sdist) as tar:
        root = tar.getnames()[0].split("/")[0]
        prefix = f"{root}/vendor/llama.cpp/"
        members = [m for m in tar.getmembers() if m.name.startswith(prefix) and (m.isfile() or m.isdir())
                   and any(m.name[len(prefix):] == p or m.name[len(prefix):].startswith(p + "/")
                           for p in _CONVERTER_PARTS)]
        for m in members:
            m.name = m.name[len(prefix):]
        tar.extractall(staging, members=members, filter="data")
    (staging / _MARKER).write_text(f"llama-cpp-python {LLAMA_CPP_PYTHON_VERSION} sdist: {sdist.name}\n")
    shutil.rmtree(dest, ignore_errors=True)
    os.replace(staging, dest)


def main(argv: list[str] | None = None) -> int:
    """Child entry point: quantize one GGUF in a fresh process (a llama.cpp abort then cannot take the caller down)."""
    p = argparse.ArgumentParser(prog="python -m harness.export.llama",
                                description="Quantize a GGUF file (started by `asciitune export`).")
    p.add_argument("inp")
    p.add_argument("out")
    p.add_argument("type")
    args = p.parse_args(argv)
    rc = _quantize_here(args.inp, args.out, args.type)
    if rc != 0:
        print(f"llama_model_quantize returned {rc}", file=sys.stderr)
    return 1 if rc else 0


if __name__ == "__main__":
    sys.exit(main())
