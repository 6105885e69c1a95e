"""Training: one loop for every model (storyviz.training.loop) driven by a per-model Task.

task.py         the Task contract, TrainConfig, the TASKS registry
loop.py         train(): the loop, the run folder (layout in its docstring), stop on signals and NaN
configure.py    `storyviz train` arguments -> configs (presets, --set, --steps, --resume)
distributed.py  torchrun process group, the resumable distributed batch sampler
checkpoint.py   atomic checkpoints, newest-valid lookup, RNG states
schedule.py     warm-up + cosine learning rate
ema.py          exponential moving average of the weights
monitor.py      metrics.jsonl, TensorBoard, progress bar
tasks/          one Task per kind of model (toy: the test classifier on synthetic squares)
"""
