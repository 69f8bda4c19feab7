"""Training: the runner (variants of a plan, each in its own process), the per-variant job, the SFT
wrapper around TRL and sampling. Only this wing, `gpu` and `export` load models."""
