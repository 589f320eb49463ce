"""A stand-in for ``python -m fagan_engine sr`` that speaks the CLI and JSON-protocol contracts of the
engine features the Slicer module uses before (or besides) the real engine offering them: in-plane
and through-plane (``--through-plane``, phases ``fit``/``inference``), trust maps on the SR grid,
``--report`` JSON, ``warning`` events, the ``start`` event's resolved ``device`` and ``threads``,
``--no-compression`` (outputs are gzip-compressed without it, as the engine's are), and ``--stacks A B [C] OUTPUT``
(``--reference N``, phases ``register``/``reconstruct``, per-stack consistency maps beside OUTPUT, the stacks report).
It writes real files with real geometry (SimpleITK); the tests load them into a real MRML scene. ``FAKE_ENGINE_FAIL`` =
``exit`` (exit 2 after writing everything), ``grid`` (a map off the result's grid, or off its stack's), ``truncate``
(a map whose voxels are cut short), ``slow`` (sleep in the fit or registration) or ``refuse`` (stacks: one ``error:``
line, exit 2, nothing written) tests failures.
"""
import argparse
import json
import os
import sys
import time

import numpy as np
import SimpleITK as sitk


def emit(event, **fields):
    sys.stdout.write("FAGAN " + json.dumps(dict(event=event, **fields)) + "\n")
    sys.stdout.flush()


def resampled(image, axes, factors):
    """``image`` on a grid refined by ``factors`` along ``axes`` covering the same physical box."""
    size = list(image.GetSize())
    spacing = list(image.GetSpacing())
    for axis, factor in zip(axes, factors):
        extent = size[axis] * spacing[axis]
        size[axis] = int(round(size[axis] * factor))
        spacing[axis] = extent / size[axis]
    direction = np.array(image.GetDirection()).reshape(3, 3)
    shift = np.array([(spacing[a] - image.GetSpacing()[a]) / 2 for a in range(3)])
    origin = np.array(image.GetOrigin()) + direction @ shift
    return sitk.Resample(image, size, sitk.Transform(), sitk.sitkBSpline, origin.tolist(), spacing,
                         image.GetDirection(), 0.0, sitk.sitkFloat32)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("paths", nargs="*")
    for flag in ("--scale", "--target-spacing", "--slice-thickness", "--iterations", "--reference",
                 "--uncertainty-map", "--report", "--acquisition", "--method", "--checkpoint", "--plane",
                 "--device", "--backend", "--progress", "--batch-size", "--tile-size", "--adapt", "--nan-policy"):
        parser.add_argument(flag)
    parser.add_argument("--consistency-map", nargs="?", const=True)
    parser.add_argument("--through-plane", action="store_true")
    parser.add_argument("--stacks", action="store_true")
    parser.add_argument("--enforce-consistency", action=argparse.BooleanOptionalAction)
    parser.add_argument("--no-compression", action="store_true")
    args = parser.parse_args()
    fail = os.environ.get("FAKE_ENGINE_FAIL", "")
    if args.stacks:
        return stacks(args, fail)
    source, target = args.paths
    image = sitk.Cast(sitk.ReadImage(source), sitk.sitkFloat32)
    # The start event as issue 18 asks the engine for it: the resolved device and the CPU threads.
    emit("start", input=source, output=target, device="cpu", threads=3,
         options={"device": args.device or "auto", "mode": "through-plane" if args.through_plane else "in-plane"})
    print("fake engine: model loaded", flush=True)
    emit("warning", message="checkpoint fagan_x2.safetensors was trained for bicubic acquisition, not kspace")
    if args.through_plane:
        spacing = image.GetSpacing()
        axis = int(np.argmax(spacing))
        inPlane = min(s for a, s in enumerate(spacing) if a != axis)
        target_spacing = float(args.target_spacing or inPlane)
        iterations = int(args.iterations or 4)
        first = 0.6  # the engine's share of the fit in run_fraction (fagan_engine.util.progress.FIRST_PHASE_SHARES)
        for it in range(1, iterations + 1):
            emit("progress", phase="fit", done=it, total=iterations, fraction=it / iterations, run_fraction=first * it / iterations,
                 loss=1.0 / it)
            if fail == "slow":
                time.sleep(0.5)
        result = resampled(image, [axis], [spacing[axis] / target_spacing])
        total = result.GetSize()[axis]
    else:
        first = 0.0
        if (args.method or "fagan") == "fagan" and args.adapt != "0":  # the engine's default: adaptation first
            first = 0.3
            for step in range(1, 4):
                emit("progress", phase="adapt", done=step, total=3, fraction=step / 3, run_fraction=first * step / 3, loss=0.1 / step)
        scale = int(args.scale)
        result = resampled(image, [0, 1], [scale, scale])
        total = image.GetSize()[2]
    for done in range(1, total + 1):
        emit("progress", phase="inference", done=done, total=total, fraction=done / total,
             run_fraction=first + (1 - first) * done / total)
    compress = not args.no_compression
    sitk.WriteImage(result, target, compress)
    if args.consistency_map:
        residual = sitk.Cast(result - sitk.SmoothingRecursiveGaussian(result, 1.0), sitk.sitkFloat32)
        if fail == "grid":
            residual.SetOrigin([o + 0.01 for o in residual.GetOrigin()])
        sitk.WriteImage(residual, args.consistency_map, compress)
        if fail == "truncate":  # the header stays readable, the voxels are cut short
            os.truncate(args.consistency_map, os.path.getsize(args.consistency_map) - 64)
    if args.uncertainty_map:
        sitk.WriteImage(sitk.Abs(result) * 0.01, args.uncertainty_map, compress)
    if args.report:
        report = {"summary": {"relative_rms_residual": 0.0123, "fraction_above_3sigma": 0.004},
                  "warnings": ["the estimated noise level is above the training data's",
                               "checkpoint fagan_x2.safetensors was trained for bicubic acquisition, not kspace"],
                  "notice": "research use, not for diagnosis", "engine_version": "9.9.9",
                  "identity": {"engine_version": "9.9.9", "method": "fagan", "acquisition": "kspace",
                               "checkpoint": {"name": "fagan_x2.safetensors", "sha256": "ab" * 32,
                                              "training_data": ["ICBM152 2009a template"],
                                              "acquisitions": ["bicubic"], "engine_version": "9.9.9"}}}
        with open(args.report, "w", encoding="utf-8") as stream:
            json.dump(report, stream)
    if fail == "exit":
        emit("error", message="simulated failure after writing", kind="InputError")
        return 2
    emit("finished", output=target, seconds=0.1)
    return 0


STACK_MOTION = ({"rotation_degrees": 0.0, "translation_mm": 0.0, "intensity_scale": 1.0},
                {"rotation_degrees": 2.5, "translation_mm": 3.1, "intensity_scale": 1.2},
                {"rotation_degrees": 1.25, "translation_mm": 1.75, "intensity_scale": 0.9})
"""The motion and intensity factor the stand-in reports for stacks 1, 2 and 3 (the reference's is zero)."""


def stacks(args, fail):
    """``--stacks A B [C] OUTPUT``: the reference stack resampled to the finest in-plane spacing of all stacks."""
    *inputs, target = args.paths
    if fail == "refuse":
        print("error: stack 2 does not match the reference stack 1 after registration (normalised mutual information "
              "0.021, correlation 0.12, rotation 3.0 deg): different subjects or contrasts?", file=sys.stderr, flush=True)
        return 2
    reference = int(args.reference or 1) - 1
    images = [sitk.Cast(sitk.ReadImage(path), sitk.sitkFloat32) for path in inputs]
    emit("start", input=inputs[reference], inputs=inputs, output=target, device="cpu", threads=3,
         options={"mode": "stacks", "reference": reference + 1})
    spacing = float(args.target_spacing or min(min(image.GetSpacing()) for image in images))
    for round_ in range(3):
        emit("progress", phase="register", done=round_, total=3, fraction=round_ / 3)
        if fail == "slow":
            time.sleep(0.5)
        for it in (10, 20, 30):
            emit("progress", phase="reconstruct", done=it, total=30, fraction=it / 30)
    if args.iterations is not None:  # the FA-GAN prior, as the engine runs it: each stack fitted and run, then solved again
        for _ in images:
            for it in (1, 2):
                emit("progress", phase="fit", done=it, total=2, fraction=it / 2)
            for it in (1, 2, 3):
                emit("progress", phase="inference", done=it, total=3, fraction=it / 3)
        for it in (10, 20, 30):
            emit("progress", phase="reconstruct", done=it, total=30, fraction=it / 30)
    base = images[reference]
    result = resampled(base, [0, 1, 2], [s / spacing for s in base.GetSpacing()])
    compress = not args.no_compression
    stem, ext = (target[: -len(".nii.gz")], ".nii.gz") if target.endswith(".nii.gz") else os.path.splitext(target)
    if args.consistency_map:
        for index, image in enumerate(images):
            residual = sitk.Abs(image - sitk.SmoothingRecursiveGaussian(image, 1.0))
            if fail == "grid" and index == 1:
                residual.SetOrigin([o + 0.5 for o in residual.GetOrigin()])
            sitk.WriteImage(sitk.Cast(residual, sitk.sitkFloat32), f"{stem}_consistency_stack{index + 1}{ext}", compress)
    sitk.WriteImage(result, target, compress)
    entries = [dict(motion, slices=image.GetSize()[2], axis=2, slice_spacing=image.GetSpacing()[2],
                    thickness=image.GetSpacing()[2], thickness_source="spacing", nmi=0.4, correlation=0.95,
                    residual_rms=0.012, voxels_used=int(np.prod(image.GetSize())))
               for motion, image in zip(STACK_MOTION, images)]
    report = {"reference": reference, "spacing": spacing, "smoothness": 0.02, "stacks": entries,
              "network_iterations": None if args.iterations is None else int(args.iterations), "seconds": 0.1}
    with open(args.report, "w", encoding="utf-8") as stream:
        json.dump(report, stream)
    if fail == "exit":
        emit("error", message="simulated failure after writing", kind="InputError")
        return 2
    emit("finished", output=target, seconds=0.1, summary=report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
