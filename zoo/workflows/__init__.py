"""Workflows built on training: `tune` (Keras Tuner searches), `ablate` (grids of switches over
seeds), `compare` (tables and figures over seeds), `lr_find` (the learning-rate range test),
`diagnostics` (gradient checks and sanity checks), `bench` (the speed contract), `build_zoo` and
`reproduce` (the pretrained zoo), with `workers` and `job_tuner` running cells and trials in
several processes. They import training and everything below it, never the command line.
"""
