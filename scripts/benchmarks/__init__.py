"""The benchmarks of `make bench` (scripts/bench.py is their command line):

- ``harness``: timing, the machine's and device's names, the configs they train, the
  report (BENCHMARKS.md, one section per machine, through seg.files);
- one module per benchmark, each with ``run(...)`` (its result, a dict) and
  ``report(result)`` (its text): ``loader``, ``cache``, ``trainer``, ``encoders``,
  ``peer``, ``upsample``, ``upsamplers``, ``audit``, ``decoders``;
- ``data``: the generated files and in-memory batches they measure on;
- ``reference``: torchvision's references/segmentation pipeline and criterion, written out;
- ``flops``: FLOPs of a training step and MFU;
- ``training``: images/s of ``Trainer.fit``, as the trainer, encoders and peer
  benchmarks train;
- ``targets``: the targets, as data, checked PASS or FAIL after each benchmark;
- ``cli``: the command line.
"""
