"""Export a trained variant as a LoRA adapter folder, a merged 16-bit model, or a GGUF file.

    asciitune export RUN --variant learn --format adapter merged gguf:f16 gguf:q8_0 gguf:q4_k_m
    asciitune export RUN --variant learn --format gguf:q8_0 --score    # also sample and score it

Every export lands in `<run>/exports/<variant>/<format>/` (or --out) with the run's config as
`asciitune-config.json`, and is recorded in results.json under the variant's `exports`. No step
touches the network: merging is PEFT's (or Unsloth's own `save_pretrained_merged` on the
unsloth backend), GGUF conversion and quantization are llama.cpp's from PyPI (harness.export.llama);
Unsloth's `save_pretrained_gguf` is not used because it downloads and builds llama.cpp.
"""
from __future__ import annotations

import json
import os
import shutil
import struct
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from harness.config import RunConfig
from harness.errors import UserError
from harness.export import llama as llama_tools
from harness.fsutil import atomic_write_json
from harness.results import ExportRecord, RunResult, load, resolve_run_dir

CONFIG_FILE = "asciitune-config.json"
ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
MERGED_DTYPES = ("bfloat16", "float16")
# Quantizing from f16 is llama.cpp's documented path; an f32 intermediate would double the temp disk.
QUANTIZE_FROM = "f16"


@dataclass(frozen=True)
class Source:
    """A variant's saved adapter and the config it was trained with."""

    adapter_dir: Path
    cfg: RunConfig
    variant: str
    run_dir: Path | None = None


def parse_format(text: str) -> str:
    """Canonical format key: 'adapter', 'merged' or 'gguf:<type>' (bare 'gguf' means q8_0)."""
    kind, _, gtype = text.strip().lower().partition(":")
    if kind in ("adapter", "merged") and not gtype:
        return kind
    if kind == "gguf":
        return f"gguf:{llama_tools.check_type(gtype or 'q8_0')}"
    raise UserError(f"Unknown export format '{text}': use adapter, merged or gguf[:TYPE] "
                    f"(types: {', '.join(llama_tools.CONVERTER_TYPES + llama_tools.QUANTIZE_TYPES)}).")


def slug(fmt: str) -> str:
    """A format key as a folder name: gguf:q8_0 -> gguf-q8_0."""
    return fmt.replace(":", "-")


def _check_safetensors(path: Path) -> None:
    """Header parses and the file is as long as the tensors it lists (catches truncation and garbage)."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        raw = fh.read(8)
        if len(raw) < 8:
            raise ValueError("shorter than a safetensors header")
        (n,) = struct.unpack("<Q", raw)
        if n <= 1 or 8 + n > size:
            raise ValueError("header length out of range")
        header = json.loads(fh.read(n))
    ends = [t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"]
    if not ends:
        raise ValueError("no tensors")
    if 8 + n + max(ends) > size:
        raise ValueError("truncated tensor data")
    if not any("lora_" in k for k in header):
        raise ValueError("no LoRA tensors")


def check_adapter(path: str | Path) -> Path:
    """Make sure a folder is a complete PEFT LoRA adapter; one sentence on what is wrong otherwise."""
    folder = Path(path)
    if not folder.is_dir():
        raise UserError(f"Adapter folder '{folder}' does not exist: pass a folder written by training "
                        "(<run>/adapters/<variant>) or by `asciitune export --format adapter`.")
    cfg_file = folder / "adapter_config.json"
    try:
        adapter_cfg = json.loads(cfg_file.read_text(encoding="utf-8"))
        if not isinstance(adapter_cfg, dict) or "peft_type" not in adapter_cfg or "r" not in adapter_cfg:
            raise ValueError("missing peft_type or r")
    except FileNotFoundError:
        raise UserError(f"Adapter folder '{folder}' has no adapter_config.json: it is not a saved LoRA "
                        "adapter; point at <run>/adapters/<variant> or re-export it.") from None
    except (OSError, ValueError) as exc:
        raise UserError(f"Adapter folder '{folder}' has a damaged adapter_config.json ({exc}): restore it "
                        "or re-export the adapter from its run.") from None
    weights = next((folder / w for w in ADAPTER_WEIGHTS if (folder / w).is_file()), None)
    if weights is None:
        raise UserError(f"Adapter folder '{folder}' has no adapter_model.safetensors: the weights are "
                        "missing; restore them or re-export the adapter from its run.")
    if weights.suffix == ".safetensors":
        try:
            _check_safetensors(weights)
        except (OSError, ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
            raise UserError(f"Adapter weights '{weights}' are damaged ({exc}): restore them or re-export "
                            "the adapter from its run.") from None
    return folder


def adapter_source(path: str | Path, model: str | None = None) -> Source:
    """An adapter folder plus the config in its asciitune-config.json (or defaults with --model)."""
    folder = check_adapter(path)
    meta_file = folder / CONFIG_FILE
    meta: dict = {}
    if meta_file.is_file():
        try:
            meta = json.loads(meta_file.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise UserError(f"'{meta_file}' is not valid JSON ({exc}): restore it or pass --model.") from None
    elif model is None:
        raise UserError(f"Adapter folder '{folder}' has no {CONFIG_FILE}, so its base model is unknown: "
                        "pass --model NAME.")
    cfg = RunConfig.from_dict(meta.get("config") or {})
    if model:
        cfg = replace(cfg, model=replace(cfg.model, name=model))
    return Source(folder, cfg, meta.get("variant") or folder.name)


def run_source(run: str | Path, variant: str | None, reports_dir: str | Path = "reports") -> tuple[RunResult, Source]:
    """The run's results and the named variant's adapter (the only variant when there is one)."""
    run_dir = resolve_run_dir(run, reports_dir)
    result = load(run_dir)
    done = [n for n, v in result.variants.items() if v.adapter_dir]
    if variant is None:
        if len(done) != 1:
            raise UserError(f"Run '{run}' has {len(done)} trained variants ({', '.join(done) or 'none'}): "
                            "name one with --variant.")
        variant = done[0]
    v = result.variants.get(variant)
    if v is None:
        raise UserError(f"Run '{run}' has no variant '{variant}': it has {', '.join(result.variants) or 'none'}.")
    if not v.adapter_dir:
        raise UserError(f"Variant '{variant}' of run '{run}' saved no adapter (status {v.status}): train it "
                        "again with `asciitune run --resume`.")
    if not v.config:
        return result, replace(adapter_source(run_dir / v.adapter_dir), variant=variant, run_dir=run_dir)
    return result, Source(check_adapter(run_dir / v.adapter_dir), RunConfig.from_dict(v.config), variant, run_dir)


def _bytes(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _write_meta(out: Path, src: Source, fmt: str, extra: dict | None = None) -> None:
    atomic_write_json(out / CONFIG_FILE, {"variant": src.variant, "config": src.cfg.to_dict(), "format": fmt,
                                          "source_adapter": str(src.adapter_dir), **(extra or {})})


def _fresh_dir(out: Path) -> Path:
    staging = out.with_name(out.name + ".building")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    return staging


def _publish(staging: Path, out: Path) -> None:
    """Replace out with the finished staging folder, so a crash never leaves half an export under its name."""
    if out.exists():
        shutil.rmtree(out) if out.is_dir() else out.unlink()
    os.replace(staging, out)


def _merge_cfg(cfg: RunConfig) -> RunConfig:
    # Merge unrounded: fp32 base, never 4-bit (LoRA deltas land on full weights), cast once at the end.
    return replace(cfg, model=replace(cfg.model, dtype="float32", load_in_4bit=False))


def _load_for_merge(src: Source, backend_name: str):
    from harness import backends

    backend = backends.get(backend_name)  # before transformers, as Unsloth requires
    from harness.models import resolve

    model, tok, _ = backend.load_adapter(src.adapter_dir, resolve(src.cfg.model.name), _merge_cfg(src.cfg))
    return model, tok


class Exporter:
    """Writes formats of one variant; the fp32 merge is done once and shared by merged and GGUF exports."""

    def __init__(self, src: Source, backend_name: str | None = None, dtype: str = "bfloat16",
                 work_dir: Path | None = None):
        if dtype not in MERGED_DTYPES:
            raise UserError(f"Merged dtype '{dtype}' is not 16-bit: choose {' or '.join(MERGED_DTYPES)}.")
        self.src, self.dtype = src, dtype
        self.backend = backend_name or src.cfg.model.backend
        self.work_dir = work_dir or default_out(src, "x").parent
        self._fp32: Path | None = None

    def fp32_dir(self) -> Path:
        """Base + adapter merged (merge_and_unload) in fp32, saved once with the tokenizer."""
        if self._fp32 is None:
            folder = self.work_dir / ".merged-fp32.tmp"
            shutil.rmtree(folder, ignore_errors=True)
            model, tok = _load_for_merge(self.src, self.backend)
            model.merge_and_unload().save_pretrained(folder, safe_serialization=True)
            tok.save_pretrained(folder)
            _byte_level_without_fallback(folder / "tokenizer.json")
            self._fp32 = folder
        return self._fp32

    def close(self) -> None:
        """Remove the fp32 merge."""
        if self._fp32 is not None:
            shutil.rmtree(self._fp32, ignore_errors=True)
            self._fp32 = None

    def export(self, fmt: str, out: Path) -> ExportRecord:
        """Write one format to out; returns the record for results.json (path, bytes, seconds, tool)."""
        t0 = time.perf_counter()
        out = Path(out).resolve()
        if out.exists() and not (out / CONFIG_FILE).is_file() and (out.is_file() or any(out.iterdir())):
            # _publish replaces out whole: never delete a folder that is not an earlier export.
            raise UserError(f"Output folder '{out}' exists and is not an asciitune export: pass a new or "
                            "empty folder with --out.")
        staging = _fresh_dir(out)
        if fmt == "adapter":
            rec = self._adapter(staging)
        elif fmt == "merged":
            rec = self._merged(staging)
        else:
            rec = self._gguf(staging, fmt.partition(":")[2])
        _write_meta(staging, self.src, fmt, {k: v for k, v in rec.items() if k in ("dtype", "gguf_file")})
        _publish(staging, out)
        path = out / rec["gguf_file"] if "gguf_file" in rec else out
        return ExportRecord(format=fmt, path=str(path), bytes=_bytes(path), backend=self.backend,
                            export_s=round(time.perf_counter() - t0, 3),
                            created=datetime.now(UTC).isoformat(timespec="seconds"), **rec)

    def _adapter(self, staging: Path) -> dict:
        for item in self.src.adapter_dir.iterdir():
            if item.is_file() and item.name != CONFIG_FILE:
                shutil.copy2(item, staging / item.name)
        return {"tool": "copy of the PEFT adapter folder"}

    def _merged(self, staging: Path) -> dict:
        from harness import backends

        backends.get(self.backend)  # Unsloth must be imported before transformers
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if self.backend == "unsloth" and _unsloth_merged(self.src, staging):
            actual = _saved_dtype(staging)
            if actual == self.dtype:
                return {"tool": "unsloth save_pretrained_merged(merged_16bit)", "dtype": actual}
            print(f"Unsloth saved {actual}, not {self.dtype}; casting explicitly instead")
            shutil.rmtree(staging)
            staging.mkdir()
        fp32 = self.fp32_dir()
        model = AutoModelForCausalLM.from_pretrained(fp32, dtype=torch.float32)
        model = model.to(getattr(torch, self.dtype))  # the one fp32 -> 16-bit rounding, on purpose here
        model.save_pretrained(staging, safe_serialization=True)
        AutoTokenizer.from_pretrained(fp32).save_pretrained(staging)
        return {"tool": f"{self.backend} load_adapter + merge_and_unload (fp32) + .to({self.dtype})",
                "dtype": _saved_dtype(staging)}

    def _name(self) -> str:
        return f"{Path(self.src.cfg.model.name).name}-{self.src.variant}"

    def _gguf(self, staging: Path, gguf_type: str) -> dict:
        gguf_type = llama_tools.check_type(gguf_type)
        target = staging / f"{self.src.variant}-{gguf_type}.gguf"
        if gguf_type in llama_tools.CONVERTER_TYPES:
            llama_tools.convert(self.fp32_dir(), target, gguf_type, self._name())
        else:
            intermediate = staging / f"intermediate-{QUANTIZE_FROM}.gguf.tmp"
            llama_tools.convert(self.fp32_dir(), intermediate, QUANTIZE_FROM, self._name())
            llama_tools.quantize(intermediate, target, gguf_type)
            intermediate.unlink()
        return {"tool": llama_tools.tool_note(gguf_type), "gguf_type": gguf_type, "gguf_file": target.name}


def _byte_level_without_fallback(path: Path) -> None:
    """Clear byte_fallback on a byte-level BPE tokenizer.json (the GGUF converter's view of it only).

    transformers' GGUF loader rebuilds SmolLM2's tokenizer as BPE with byte_fallback on, which a
    byte-level BPE never uses (every byte already has a token). llama.cpp's converter reads that
    flag as "SentencePiece-style Llama vocab" and writes tokenizer model 'llama', on which llama.cpp
    aborts while tokenizing "\n". Without the flag it writes 'gpt2' with SmolLM's pre-tokenizer, and
    token ids match the HF tokenizer's.
    """
    if not path.is_file():
        return
    tj = json.loads(path.read_text(encoding="utf-8"))
    model, pre = tj.get("model") or {}, json.dumps(tj.get("pre_tokenizer") or {})
    if model.get("type") == "BPE" and model.get("byte_fallback") and '"ByteLevel"' in pre:
        model["byte_fallback"] = False
        path.write_text(json.dumps(tj, ensure_ascii=False), encoding="utf-8")


def _saved_dtype(folder: Path) -> str:
    saved = json.loads((folder / "config.json").read_text())
    return str(saved.get("dtype") or saved.get("torch_dtype") or "?")


def _unsloth_merged(src: Source, out: Path) -> bool:
    """Unsloth's own save_pretrained_merged (merged_16bit), offline; False if it fails."""
    model, tok = _load_for_merge(src, "unsloth")
    old = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"  # a hub lookup inside Unsloth must fail fast, not hang
    try:
        model.save_pretrained_merged(str(out), tok, save_method="merged_16bit")
        return True
    except Exception as exc:  # any failure: fall back to the explicit PEFT merge and say so
        print(f"Unsloth save_pretrained_merged failed ({type(exc).__name__}: {exc}); merging explicitly instead")
        return False
    finally:
        if old is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = old


def default_out(src: Source, fmt: str) -> Path:
    """<run>/exports/<variant>/<format> for a run's variant, else exports/<variant>/<format> here."""
    base = src.run_dir if src.run_dir is not None else Path(".")
    return base / "exports" / src.variant / slug(fmt)


def record(run_dir: Path, variant: str, fmt: str, entry: ExportRecord) -> None:
    """Store entry as results.json's exports[fmt] for the variant (re-read first, written atomically)."""
    run = load(run_dir)
    if variant not in run.variants:
        raise UserError(f"Run '{run_dir}' has no variant '{variant}' to record the export under.")
    root = Path(run_dir).resolve()
    paths = {}
    for key in ("path", "samples_file"):
        p = Path(getattr(entry, key)).resolve() if getattr(entry, key) else None
        if p is not None and p.is_relative_to(root):
            paths[key] = str(p.relative_to(root))  # relative, so the run folder stays movable
    run.variants[variant].exports[fmt] = replace(entry, **paths)
    run.save(run_dir)
