"""GPU benchmark: Unsloth vs plain PEFT speed, memory and loss parity; the per-backend worker."""
