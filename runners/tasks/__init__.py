"""Tasks: what is trained and how it is scored; the engine drives every task the same way.

`runners.tasks.lookup.get_task(name)` returns the `runners.tasks.base.Task` of a run config's
`task` field: `autoencoder` (the article's, `runners.tasks.autoencoder`) or `bernoulli_vae`
(the DisARM benchmark, `runners.tasks.vae`). docs/tasks.md describes the protocol.
"""
