"""The multi-adapter engine: K fast-plan variants over one base trained, probed and sampled together."""
