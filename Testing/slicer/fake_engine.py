"""A stand-in for ``python -m fagan_engine sr`` that speaks the CLI and JSON-protocol contracts of the
engine features the Slicer module uses before (or besides) the real engine offering them: in-plane
and through-plane (``--through-plane``, phases ``fit``/``inference``), trust maps on the SR grid,
``--report`` JSON, ``warning`` events, the ``start`` event's resolved ``device`` and ``threads``,
``--no-compression`` (outputs are gzip-compressed without it, as the engine's are). It writes real files with real geometry (SimpleITK); the
tests load them into a real MRML scene. ``FAKE_ENGINE_FAIL`` = ``exit`` (exit 2 after writing
everything), ``grid`` (a map off the result's grid), ``truncate`` (a map whose voxels are cut short) or ``slow`` (sleep
in the fit) tests failures.
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
    for flag in ("--scale", "--target-spacing", "--slice-thickness", "--iterations", "--consistency-map",
                 "--uncertainty-map", "--report", "--acquisition", "--method", "--checkpoint", "--plane",
                 "--device", "--backend", "--progress", "--batch-size", "--tile-size", "--adapt"):
        parser.add_argument(flag)
    parser.add_argument("--through-plane", action="store_true")
    parser.add_argument("--enforce-consistency", action=argparse.BooleanOptionalAction)
    parser.add_argument("--no-compression", action="store_true")
    args = parser.parse_args()
    fail = os.environ.get("FAKE_ENGINE_FAIL", "")
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
        for it in range(1, iterations + 1):
            emit("progress", phase="fit", done=it, total=iterations, fraction=it / iterations, loss=1.0 / it)
            if fail == "slow":
                time.sleep(0.5)
        result = resampled(image, [axis], [spacing[axis] / target_spacing])
        total = result.GetSize()[axis]
    else:
        if (args.method or "fagan") == "fagan" and args.adapt != "0":  # the engine's default: adaptation first
            for step in range(1, 4):
                emit("progress", phase="adapt", done=step, total=3, fraction=step / 3, loss=0.1 / step)
        scale = int(args.scale)
        result = resampled(image, [0, 1], [scale, scale])
        total = image.GetSize()[2]
    for done in range(1, total + 1):
        emit("progress", phase="inference", done=done, total=total, fraction=done / total)
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


if __name__ == "__main__":
    sys.exit(main())
