"""The article's recipe and the engine that trains it: model, data, run state, the epoch loop,
bookkeeping, evaluation and metrics."""
