"""`raylife bench`: raylife next to the plain alternative, contenders interleaved (A B A B ...).

Sections: train (Ray Train vs a plain PyTorch loop), trials (each model's sweep trial as `make run`
runs it vs the plain loop, and the allreduce crossover), tune (Tune vs the same Train runs alone;
ASHA vs FIFO), serve (Ray Serve vs a bare uvicorn process on the same artifact), lifecycle
(`raylife run` wall time). See raylife_dev.bench.runner for the entry point.
"""
