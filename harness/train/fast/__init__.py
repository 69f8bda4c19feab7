"""The fast plan: the seed plan's step math at the speed of the hardware, one variant at a time."""
