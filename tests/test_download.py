"""Models download as the ecosystem does: from the hub when it is reachable, one sentence when it is not.

The offline path runs for real (the CLI with HF_HUB_OFFLINE=1 and an empty Hugging Face cache). The
download path replaces huggingface_hub.snapshot_download (there is no network here) with one that
copies a real tiny model folder, honouring allow_patterns as the hub does.
"""
from __future__ import annotations

import fnmatch
import shutil
from pathlib import Path

import httpx
import pytest
from conftest import asciitune
from huggingface_hub.errors import GatedRepoError, LocalEntryNotFoundError, RepositoryNotFoundError

from harness import models
from harness.errors import UserError

HUB_ID = "unsloth/Llama-3.2-3B"


def test_offline_with_an_empty_cache_ends_in_one_sentence(tmp_path: Path) -> None:
    hf = tmp_path / "empty-hf"  # HF_HUB_CACHE too: CI exports it, and it wins over HF_HOME
    proc = asciitune("--reports-dir", str(tmp_path / "reports"), "run", "--config", "tiny", "--model", "llama-3.2-3b",
                     env={"HF_HOME": str(hf), "HF_HUB_CACHE": str(hf / "hub")})  # conftest sets HF_HUB_OFFLINE=1
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert lines[-1] == (f"error: Model 'llama-3.2-3b' ({HUB_ID}) is not on this machine and the hub is unreachable: "
                         f"run `hf download {HUB_ID}` where there is network, or pass its folder with --model PATH.")
    assert "Traceback" not in proc.stderr and "Downloading" not in proc.stderr
    assert not (tmp_path / "reports" / "runs").exists()  # nothing was started


class FakeHub:
    """snapshot_download without a network: the local cache is empty; a download copies `source` by allow_patterns."""

    def __init__(self, source: Path, dest: Path, error: Exception | None = None):
        self.source, self.dest, self.error = source, dest, error
        self.calls: list[tuple[str, dict]] = []

    def __call__(self, repo_id: str, **kwargs) -> str:
        self.calls.append((repo_id, kwargs))
        if kwargs.get("local_files_only"):
            raise LocalEntryNotFoundError("not in the local cache")
        if self.error is not None:
            raise self.error
        folder = self.dest / repo_id.replace("/", "--")
        folder.mkdir(parents=True, exist_ok=True)
        for f in self.source.iterdir():
            if any(fnmatch.fnmatch(f.name, p) for p in kwargs.get("allow_patterns") or ["*"]):
                shutil.copy2(f, folder / f.name)
        return str(folder)

    def downloads(self) -> list[tuple[str, dict]]:
        """The calls that would have used the network."""
        return [c for c in self.calls if not c[1].get("local_files_only")]


@pytest.fixture()
def hub_repo(tmp_path: Path) -> Path:
    """A hub repo's files: a real tiny model, plus a pickled .bin and remote code that must never be fetched."""
    repo = tmp_path / "repo"
    shutil.copytree(models.ensure_tiny(), repo)
    (repo / "asciitune-cache.json").unlink()
    (repo / "pytorch_model.bin").write_bytes(b"a pickle that could run code")
    (repo / "modeling_evil.py").write_text("raise SystemExit('remote code ran')\n")
    return repo


def _fake(monkeypatch: pytest.MonkeyPatch, fake: FakeHub, offline: bool = False) -> FakeHub:
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake)
    if offline:
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    else:
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    return fake


def test_downloads_safetensors_config_and_tokenizer_only(tmp_path, hub_repo, monkeypatch, capsys) -> None:
    fake = _fake(monkeypatch, FakeHub(hub_repo, tmp_path / "cache"))
    resolved = models.resolve("llama-3.2-3b")
    [(repo_id, kwargs)] = fake.downloads()
    assert repo_id == HUB_ID and "trust_remote_code" not in kwargs
    assert "*.safetensors" in kwargs["allow_patterns"] and not any(".bin" in p or ".py" in p or p == "*"
                                                                   for p in kwargs["allow_patterns"])
    names = {p.name for p in resolved.path.iterdir()}
    assert {"model.safetensors", "config.json", "tokenizer.json", "tokenizer_config.json"} <= names
    assert "pytorch_model.bin" not in names and "modeling_evil.py" not in names
    assert f"Downloading {HUB_ID}" in capsys.readouterr().err
    # What came down is a complete model folder: it loads, and it predicts as the original does.
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(resolved.path)
    ids = tok("  /\\_/\\\n ( o.o )", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        got, want = (AutoModelForCausalLM.from_pretrained(p, dtype=torch.float32)(ids).logits
                     for p in (resolved.path, hub_repo))
    assert torch.equal(got, want)


def test_a_cached_model_is_not_downloaded_again(tmp_path, hub_repo, monkeypatch) -> None:
    fake = _fake(monkeypatch, FakeHub(hub_repo, tmp_path / "cache"))
    monkeypatch.setattr(models, "_hub_snapshot", lambda hub_id: hub_repo)  # found in the local cache
    assert models.resolve("someone/tiny").path == hub_repo and fake.calls == []


def test_offline_never_calls_the_hub(tmp_path, hub_repo, monkeypatch) -> None:
    fake = _fake(monkeypatch, FakeHub(hub_repo, tmp_path / "cache"), offline=True)
    with pytest.raises(UserError, match="is not on this machine and the hub is unreachable"):
        models.resolve("someone/tiny")
    assert fake.downloads() == []


def _http_error(cls: type, status: int) -> Exception:
    request = httpx.Request("GET", "https://huggingface.co/api/models/someone/tiny")
    return cls(f"{status} error", response=httpx.Response(status, request=request))


@pytest.mark.parametrize("error, message", [
    (LocalEntryNotFoundError("ConnectError: Name or service not known"), "the hub is unreachable"),
    (_http_error(GatedRepoError, 403), "is gated on the hub"),
    (_http_error(RepositoryNotFoundError, 404), "is not on the hub, or is private"),
])
def test_hub_errors_end_in_one_sentence(tmp_path, hub_repo, monkeypatch, error, message) -> None:
    _fake(monkeypatch, FakeHub(hub_repo, tmp_path / "cache", error=error))
    with pytest.raises(UserError) as err:
        models.resolve("someone/tiny")
    assert message in str(err.value) and "\n" not in str(err.value) and str(err.value).endswith(".")


def test_a_repo_without_safetensors_is_refused(tmp_path, monkeypatch) -> None:
    repo = tmp_path / "bin-only"
    repo.mkdir()
    (repo / "config.json").write_text("{}")
    (repo / "pytorch_model.bin").write_bytes(b"pickle")
    _fake(monkeypatch, FakeHub(repo, tmp_path / "cache"))
    with pytest.raises(UserError, match="has no safetensors weights"):
        models.resolve("someone/bin-only")
