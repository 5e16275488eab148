"""Speed settings that keep the arithmetic: fast layers, step strategies, stacks of runs."""
