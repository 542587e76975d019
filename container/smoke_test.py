"""Smoke test of the edgeflow image: TensorFlow imports, GPUs are listed, one arch trains one step.

`apptainer test` runs it inside the image (%test); `make image-check` runs it with --require-gpu,
--full-step and --steps on a GPU node (the trainer's whole three-arch step, timed: the first GPU
figure of a new cluster); %post
runs it with --build-only to check the versions it installed.
It also runs outside the container on CPU (tests/test_container.py does), so it imports only what
the image installs and nothing from the repository layout.

Exit 0 when every check passes, 1 with the failed checks on stderr otherwise.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time


def _major_minor(version: str) -> str:
    return ".".join(str(version).split(".")[:2])


def check_build(tensorflow: str, cuda: str, cudnn: str, edgeflow: str) -> list[str]:
    """Compare the installed TensorFlow and edgeflow with the versions the image's labels claim."""
    import tensorflow as tf

    import edgeflow as ef

    problems: list[str] = []
    info = dict(tf.sysconfig.get_build_info())
    print(f"tensorflow {tf.__version__}; build info {json.dumps(info, sort_keys=True, default=str)}")
    if tensorflow and tf.__version__ != tensorflow:
        problems.append(f"TensorFlow is {tf.__version__}, the image is labelled {tensorflow}")
    if info.get("is_cuda_build"):
        built_cuda = str(info.get("cuda_version", ""))
        built_cudnn = str(info.get("cudnn_version", ""))
        if cuda and _major_minor(built_cuda) != _major_minor(cuda):
            problems.append(f"TensorFlow was built with CUDA {built_cuda}, the image is labelled CUDA {cuda}")
        # The wheel records only cuDNN's major version.
        if cudnn and built_cudnn.split(".")[0] != cudnn.split(".")[0]:
            problems.append(f"TensorFlow was built with cuDNN {built_cudnn}, the image is labelled cuDNN {cudnn}")
    elif cuda:
        problems.append("this TensorFlow is not a CUDA build, the image is labelled CUDA " + cuda)
    if edgeflow and ef.__version__ != edgeflow:
        problems.append(f"edgeflow is {ef.__version__}, the image is labelled {edgeflow}")
    return problems


def expected_output_sizes(height: int, width: int) -> list[tuple[int, int]]:
    """Output sizes at 1/4, 1/2, 1/1 scale: four stride-2 'same' convs, then x2 upsamplings."""
    def bottom(n: int) -> int:
        for _ in range(4):
            n = -(-n // 2)
        return n

    h, w = bottom(height), bottom(width)
    return [(4 * h, 4 * w), (8 * h, 8 * w), (16 * h, 16 * w)]


def train_step_check(arch_code: str, height: int, width: int, batch: int, device: str,
                     steps: int = 0) -> list[str]:
    """One forward and backward pass of one arch on a seeded random batch, on `device`; then `steps`
    more of them, timed, once tracing is out of the way."""
    import tensorflow as tf

    from edgeflow.model.supernet import Supernet
    from edgeflow.space.arch import parse_arch
    from edgeflow.train.loss import supernet_loss

    problems: list[str] = []
    arch = tf.constant(parse_arch(arch_code), dtype=tf.int32)
    with tf.device(device):
        model = Supernet(seed=0)
        x = tf.random.stateless_uniform([batch, height, width, 6], seed=[0, 1], minval=-1.0, maxval=1.0)
        label = tf.random.stateless_uniform([batch, height, width, 2], seed=[0, 2], minval=-5.0, maxval=5.0)

        @tf.function
        def step(x, label, arch):
            with tf.GradientTape() as tape:
                outputs = model(x, arch, training=True)
                loss = supernet_loss(outputs, label)
            grads = tape.gradient(loss, model.trainable_variables,
                                  unconnected_gradients=tf.UnconnectedGradients.ZERO)
            return outputs, loss, tf.linalg.global_norm(grads), grads

        started = time.perf_counter()
        outputs, loss, grad_norm, grads = step(x, label, arch)
        seconds = time.perf_counter() - started
        steady: list[float] = []
        for _ in range(steps):
            started = time.perf_counter()
            # float() waits for the device, so the time covers the whole step.
            float(step(x, label, arch)[1])
            steady.append(time.perf_counter() - started)
    shapes = [tuple(int(d) for d in o.shape) for o in outputs]
    expected = [(batch, h, w, 4) for h, w in expected_output_sizes(height, width)]
    loss_value, norm_value = float(loss), float(grad_norm)
    nonzero = sum(1 for g in grads if float(tf.reduce_max(tf.abs(g))) > 0.0)
    print(f"arch {arch_code} on {loss.device}: input {batch}x{height}x{width}x6, outputs {shapes}, "
          f"loss {loss_value:.4f}, grad norm {norm_value:.4f}, "
          f"{nonzero}/{len(grads)} variables with a gradient, first step {seconds:.1f} s (includes tracing)")
    if steady:
        steady.sort()
        median = steady[len(steady) // 2]
        print(f"step time on {loss.device}: median {median * 1000:.1f} ms over {len(steady)} "
              f"steps (fastest {steady[0] * 1000:.1f} ms), batch {batch} at {height}x{width}")
    if shapes != expected:
        problems.append(f"output shapes {shapes}, expected {expected}")
    if not math.isfinite(loss_value):
        problems.append(f"loss is not finite: {loss_value}")
    if not (math.isfinite(norm_value) and norm_value > 0.0):
        problems.append(f"gradient norm is {norm_value}: the backward pass is broken")
    if not 0 < nonzero < len(grads):
        # One arch uses some branches only: all or none of the variables moving means it did not.
        problems.append(f"{nonzero} of {len(grads)} variables got a gradient; expected some but not all")
    if device.upper().startswith("/GPU") and "GPU" not in loss.device.upper():
        problems.append(f"asked for {device} but the step ran on {loss.device}")
    return problems


def full_step_check(height: int, width: int, batch: int, device: str, steps: int, precision: str = "false",
                    jit: bool = False) -> list[str]:
    """The trainer's whole step (3 archs forward and backward, clipping, Adam) on a seeded random batch,
    timed over `steps` steps after the first (tracing, and XLA's compile with --jit)."""
    import tensorflow as tf

    from edgeflow.config import Config, compute_precision
    from edgeflow.model.supernet import Supernet
    from edgeflow.space.sampler import FairSampler
    from edgeflow.train.step import TrainStep

    cfg = Config()
    cfg.data.input_height, cfg.data.input_width, cfg.train.batch_size = height, width, batch
    cfg.train.mixed_precision = {"false": False, "true": True}.get(precision, precision)
    cfg.train.jit_compile = jit
    sampler = FairSampler(0)
    with tf.device(device):
        step = TrainStep(Supernet(seed=0, compute_dtype=compute_precision(cfg.train.mixed_precision)), cfg)
        x = tf.random.stateless_uniform([batch, height, width, 6], seed=[0, 1], minval=-1.0, maxval=1.0)
        label = tf.random.stateless_uniform([batch, height, width, 2], seed=[0, 2], minval=-5.0, maxval=5.0)
        started = time.perf_counter()
        first = step(x, label, sampler.next_archs(), 1e-4)
        seconds = time.perf_counter() - started
        started = time.perf_counter()
        for _ in range(steps):
            step.launch((x, label), sampler.next_archs(), 1e-4)
        last = step.log.read().records[-1] if steps else None
        steady = (time.perf_counter() - started) / steps if steps else 0.0
    what = f"full step (3 archs + Adam), {compute_precision(cfg.train.mixed_precision)}{', XLA' if jit else ''}"
    print(f"{what}: first step {seconds:.1f} s (includes tracing{' and compiling' if jit else ''}), "
          f"loss {first.loss:.4f}, grad norm {first.grad_norm:.4f}")
    if steps:
        print(f"full step time on {device}: {steady * 1000:.1f} ms per step over {steps} steps queued back to back, "
              f"batch {batch} at {height}x{width} ({batch / steady:.0f} samples/s)")
    problems = []
    for record in [first] + ([last] if last is not None else []):
        if not (math.isfinite(record.loss) and math.isfinite(record.grad_norm)):
            problems.append(f"the full step gave loss {record.loss}, grad norm {record.grad_norm}")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--require-gpu", action="store_true",
                        default=os.environ.get("EDGEFLOW_REQUIRE_GPU") == "1",
                        help="fail when TensorFlow sees no GPU (default from EDGEFLOW_REQUIRE_GPU=1)")
    parser.add_argument("--build-only", action="store_true",
                        help="only compare installed versions with the expected ones (no model run)")
    parser.add_argument("--tensorflow", default="", help="expected TensorFlow version")
    parser.add_argument("--cuda", default="", help="expected CUDA major.minor of the TensorFlow build")
    parser.add_argument("--cudnn", default="", help="expected cuDNN version (major compared)")
    parser.add_argument("--edgeflow", default="", help="expected edgeflow version")
    parser.add_argument("--arch", default="000021222", help="arch code to run (default the baseline)")
    parser.add_argument("--height", type=int, default=48)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--steps", type=int, default=0,
                        help="time this many steps after the first one (which includes tracing)")
    parser.add_argument("--full-step", action="store_true",
                        help="time the trainer's whole step (3 archs and Adam) instead of one arch's pass")
    parser.add_argument("--precision", default="false", help="train.mixed_precision of the full step")
    parser.add_argument("--jit", action="store_true", help="compile the full step with XLA (train.jit_compile)")
    args = parser.parse_args(argv)
    # "none": the build argument of a CPU-only image.
    cuda, cudnn = ("" if v == "none" else v for v in (args.cuda, args.cudnn))

    problems = check_build(args.tensorflow, cuda, cudnn, args.edgeflow)
    if not args.build_only:
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        print(f"GPUs: {len(gpus)} {[g.name for g in gpus]}")
        for g in gpus:
            details = tf.config.experimental.get_device_details(g)
            print(f"  {g.name}: {details.get('device_name', '?')}, compute capability "
                  f"{details.get('compute_capability', '?')}")
        if args.require_gpu and not gpus:
            problems.append("TensorFlow sees no GPU (--require-gpu): run with --nv on a GPU node and "
                            "check the driver (python -m jobs.gpu_driver)")
        else:
            device = "/GPU:0" if gpus else "/CPU:0"
            problems += train_step_check(args.arch, args.height, args.width, args.batch, device,
                                         0 if args.full_step else args.steps)
            if args.full_step:
                problems += full_step_check(args.height, args.width, args.batch, device, args.steps,
                                            str(args.precision).lower(), args.jit)
    for p in problems:
        print(f"smoke test FAILED: {p}", file=sys.stderr)
    if not problems:
        print("smoke test passed")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
