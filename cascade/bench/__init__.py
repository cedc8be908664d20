"""`python -m cascade bench`: how fast cascade trains, against the way research code usually trains.

Why side by side: this machine is shared and its load changes within seconds, so two numbers taken a
minute apart do not make a ratio. Every comparison here is measured in one process, the variants taking
turns in short repeats (in a rotated order), and each figure is a median over repeats; ratios are the
median of per-repeat ratios, so both sides of a ratio saw the same load.

What is measured (the numbers behind each goal, raw repeats included, go into the JSON):

1. throughput of a pruned (10%, gmp) fine-tuning step on 28x28 Fashion-MNIST: a conventional baseline
   (DataLoader over torchvision's FashionMNIST with per-sample transforms, fp32, contiguous,
   torch.nn.utils.prune, plain SGD) against `cascade.train.train` with its defaults, in fp32 and bf16;
2. mask overhead: the cost of the two fused mask ops per step over the step time, and the pruned/dense
   step-time ratio for reference (at the 1% level that ratio is noise on a shared machine);
3. tracker overhead: one `Tracker.record` over the time of an epoch of the paper's 4000 images;
4. roofline: model FLOP/s (6 x MACs per image, forward and backward) over a large GEMM's FLOP/s;
plus torch.compile of the training step and 2 processes x 1 thread against 1 process x 2 threads,
each in child processes so a hang or crash is reported, not fatal.

`suite` runs the measurements and writes bench.json; `report` renders it, for the CLI and the book alike, without
importing the measuring code. How long the experiments take is not a benchmark: the appendix and `cascade status`
read it from the stored runs.

Modules by role: `plan` (what to measure, and the goals), `clock` (interleaved timing), `loops` (cascade's loop and
the conventional baseline), `step` (the train step: throughput, mask and tracker costs, GEMM peak), `child`
(child-process measurements: torch.compile, threads, allocator), `sweeps` (each chapter's sweep slice, Dask),
`suite` (all of it, in order), `report` (Markdown and the figure).
"""
