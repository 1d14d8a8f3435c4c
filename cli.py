"""``fluorofpga`` command line: parses arguments, draws progress, calls :mod:`fluorofpga.app`."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Deep-learning restoration inside a fluorescence microscope.")
console = Console()
err = Console(stderr=True)

MODEL_HELP = "model bundle directory (default: the small pre-trained one shipped in the package)"
# SIM optics of `sim` and `stream --sim`: a file's metadata is the default; the classical
# reconstruction needs all three, a SIM bundle (--model) none (the pixel size, when known,
# is halved for the output)
SIM_NA_OPTION = typer.Option(None, "--na", help="SIM: objective NA (default: the file's OME "
                             "metadata; a SIM bundle needs none)")
SIM_WAVELENGTH_OPTION = typer.Option(None, "--wavelength", help="SIM: emission wavelength, nm "
                                     "(default: the file's OME metadata; a SIM bundle needs "
                                     "none)")
SIM_PIXEL_OPTION = typer.Option(None, "--pixel-size", help="SIM: camera pixel size in the "
                                "sample plane, µm (default: the file's ImageJ/OME metadata; "
                                "sets the output's, halved)")


class _Bars:
    """One rich progress bar per stage, fed by the facade's progress callback."""

    def __init__(self) -> None:
        self.progress = Progress(
            TextColumn("[bold]{task.description:<8}"), BarColumn(),
            TextColumn("{task.completed}/{task.total}"), TextColumn("{task.fields[msg]}"),
            TimeElapsedColumn(), console=err, transient=False,
        )
        self.tasks: dict[str, int] = {}

    def __call__(self, stage: str, done: int, total: int, message: str = "") -> None:
        if stage not in self.tasks:
            self.tasks[stage] = self.progress.add_task(stage, total=total, msg="")
        self.progress.update(self.tasks[stage], completed=done, total=total, msg=message)

    def __enter__(self) -> _Bars:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()


def _fail(message: str | BaseException) -> None:
    """One clear line (paths and brackets printed literally, not as markup), exit code 2.

    An exception is described by :func:`_why` (a full disk says so)."""
    text = _why(message) if isinstance(message, BaseException) else message
    err.print(f"[bold red]error:[/] {escape(text)}", soft_wrap=True)
    raise typer.Exit(code=2)


def _why(e: BaseException) -> str:
    """The message of an exception; for an OSError its file and, for a full disk (ENOSPC,
    or a writer's "N requested and M written"), that the disk is full."""
    import errno

    text = str(e)
    if isinstance(e, OSError):
        name = getattr(e, "filename", None)
        if name and str(name) not in text:
            text = f"{name}: {text}"
        if e.errno == errno.ENOSPC or ("requested and" in text and "written" in text):
            text += " (the disk is full: free some space or write elsewhere)"
    return text


@app.command()
def demo(
    out: Path = typer.Option(Path("demo_out"), "--out", help="output directory"),
    model: Path | None = typer.Option(None, "--model", help=MODEL_HELP),
    frames: int = typer.Option(20, min=1, help="frames to stream"),
    size: int = typer.Option(512, min=16, help="frame side in pixels"),
    seed: int = typer.Option(0, help="simulation seed"),
    backend: str = typer.Option("emulate", help="accelerator backend: emulate | pynq"),
    camera_fps: float | None = typer.Option(
        None, help="pace the simulated camera; frames arriving while the pipeline is full are "
        "dropped and counted (default: unpaced, nothing dropped)"),
    overwrite: bool = typer.Option(False, help="replace the files of a previous run in --out"),
) -> None:
    """Stream a simulated sCMOS sequence through the accelerator and report quality/speed."""
    from fluorofpga import app as facade
    from fluorofpga.host import AcceleratorError, BundleError
    from fluorofpga.host.sinks import partial_path

    try:
        with _Bars() as bars:
            r = facade.demo(out, model, frames, size, seed, backend, camera_fps, progress=bars,
                            overwrite=overwrite)
    except KeyboardInterrupt:
        partial = partial_path(out / "restored.tif")
        kept = f"the frames streamed so far are in {partial}" if partial.exists() else (
            "nothing was written")
        err.print(f"interrupted: {kept}; no report was written (the run is incomplete)",
                  markup=False, soft_wrap=True)
        raise typer.Exit(code=130) from None
    except (AcceleratorError, BundleError, ValueError, OSError) as e:
        _fail(e)
    table = Table(title=f"fluorofpga demo: {r['bundle']} on {r['backend']}", show_header=False)
    for key in ("frames", "frames_out", "dropped", "fps", "psnr_noisy", "psnr_restored",
                "ssim_noisy", "ssim_restored", "bit_exact"):
        v = r[key]
        table.add_row(key, f"{v:.3f}" if isinstance(v, float) else str(v))
    console.print(table)
    console.print(f"wrote {out / 'restored.tif'}, {out / 'report.png'}, {out / 'report.json'}")


@app.command()
def denoise(
    in_tif: Path = typer.Argument(..., help="raw camera frames (uint8/uint16 TIFF or OME-Zarr "
                                  ".zarr), axes ending in YX: YX, TYX, ZYX, CYX, ..."),
    out_tif: Path = typer.Argument(..., help="restored image, same axes and metadata; "
                                   ".tif/.tiff or .zarr"),
    model: Path | None = typer.Option(None, "--model", help=MODEL_HELP),
    backend: str = typer.Option(
        "emulate", help="accelerator backend: emulate | pynq | rtlsim (the RTL in Verilator: "
        "small images)"),
    calibration: Path | None = typer.Option(
        None, help="camera calibration file from `fluorofpga calibrate` (offset/gain maps, "
        "hot pixels, noise model); without it the noise model is estimated from the frames"),
    dtype: str = typer.Option("uint16", help="output: uint16 (rounded ADU) or float32 (ADU, "
                              "same offset and gain as the input, not rounded)"),
    adc_max: int | None = typer.Option(
        None, help="ADC saturation value, ADU (default: 255 for 8-bit files, else 65535; "
        "4095 for a 12-bit camera): pixels there pass through unchanged and are counted"),
    overwrite: bool = typer.Option(False, help="replace OUT if it exists"),
    axes: str | None = typer.Option(None, help="axes of a file that does not name them, "
                                    "e.g. TYX, ZYX or CYX for a plain 3-D TIFF"),
) -> None:
    """Restore raw camera frames with the accelerator; bad input writes nothing."""
    from fluorofpga import app as facade
    from fluorofpga.host import AcceleratorError, BundleError

    try:
        with _Bars() as bars:
            r = facade.denoise(in_tif, out_tif, model, backend, calibration, dtype, adc_max,
                               overwrite, axes, progress=bars)
    except (AcceleratorError, BundleError, ValueError, OSError) as e:
        _fail(e)
    console.print(f"restored {r['frames']} plane(s) {r['axes']} {r['shape']} in "
                  f"{r['seconds']:.1f} s ({r['backend']}, {r['dtype']}) -> {r['out']}")
    n = r["noise"]
    console.print(f"noise model: {n['from']} (gain {n['gain_e_per_adu']:.3g} e-/ADU, "
                  f"a={n['a']:.4g}, b={n['b']:.4g})")
    _note_skipped_frames(n)
    _print_pixel_counts(r)


def _note_skipped_frames(noise: dict) -> None:
    """Say which frames the noise estimate left out (blank, dropped or foreign frames)."""
    skipped = noise.get("frames_skipped") or []
    if skipped:
        shown = ", ".join(map(str, skipped[:20])) + (" ..." if len(skipped) > 20 else "")
        err.print(f"note: the noise estimate left out frame(s) {shown}: blank (one value) "
                  "or not the same scene as their neighbour; check them", markup=False,
                  soft_wrap=True)


#: fraction of pixels passed through unrestored above which the summary warns
PASS_THROUGH_WARN = 0.05


def _print_pixel_counts(r: dict) -> None:
    """What was passed through or clipped (``denoise``, ``stream``): nothing silently."""
    c = r["counts"]
    console.print(f"pixels {c['pixels']}: saturated at {r['tables']['adc_max']} ADU (passed "
                  f"through) {c['saturated']}, above the code range "
                  f"~{r['tables']['max_adu_coded']:.0f} ADU (passed through) "
                  f"{c['above_range']}, network output at its limits {c['residual_at_limit']}, "
                  f"clipped to the output dtype {c['clipped_output']}")
    below = c.get("below_zero_level", 0)
    if below:
        err.print(f"warning: {below} pixel(s) lie far below the camera's zero level (a "
                  "blank or dropped frame, or data that lost the camera's offset): no camera "
                  "reads so; they were restored from the lowest input code", markup=False,
                  soft_wrap=True)
    passed = c["saturated"] + c["above_range"]
    if c["pixels"] and passed > PASS_THROUGH_WARN * c["pixels"]:
        err.print(f"warning: {passed / c['pixels']:.0%} of the pixels were passed through "
                  "unrestored (saturated or above the code range): a calibration of another "
                  "camera, an --adc-max below the camera's, or a noise estimate spoiled by "
                  "odd frames gives this; check the noise model above", markup=False,
                  soft_wrap=True)


@app.command()
def calibrate(
    dark: Path = typer.Argument(..., help="dark stack (shutter closed), uint16 TYX, >= 10 frames"),
    flats: list[Path] = typer.Argument(  # noqa: B006 - typer's variadic argument
        ..., help=">= 3 flat-field stacks at different light levels, uint16 TYX each"),
    out: Path = typer.Option(Path("camera_calibration.npz"), "--out", help="calibration file"),
    qe: float | None = typer.Option(None, help="quantum efficiency at the emission wavelength"),
    serial: str = typer.Option("", help="camera serial number, stored in the file"),
    overwrite: bool = typer.Option(False, help="replace --out if it exists (never an input)"),
) -> None:
    """Calibrate an sCMOS camera: offset/read-noise maps (dark) and gain (photon transfer)."""
    from fluorofpga import app as facade

    try:
        summary = facade.calibrate_camera(dark, flats, out, qe=qe, camera_serial=serial,
                                          overwrite=overwrite)
    except (ValueError, OSError) as e:
        _fail(e)
    table = Table(title=f"camera calibration -> {out}", show_header=False)
    for key, value in summary.items():
        table.add_row(key, f"{value:.4g}" if isinstance(value, float) else str(value))
    console.print(table)


@app.command()
def train(
    out: Path = typer.Option(..., "--out", help="bundle directory to create (must be new or "
                             "empty; an earlier bundle is replaced only with --overwrite)"),
    name: str = typer.Option("denoise-w4a8", help="bundle name"),
    recipe: str = typer.Option("w4a8", help="quantization recipe: w8a8 | w4a8 | w4a4"),
    steps: int = typer.Option(1500, min=1, help="float training steps"),
    qat_steps: int = typer.Option(600, min=0, help="quantization-aware fine-tuning steps"),
    board: str = typer.Option("kv260", help="target board (see `fluorofpga boards`)"),
    tile: int = typer.Option(128, min=16, help="compiled tile side, pixels"),
    target_mpix: float = typer.Option(10.0, help="throughput target for folding, Mpixel/s"),
    seed: int = typer.Option(0, help="seed of data and weights"),
    bitfile: bool = typer.Option(False, help="also build the bitstream into the bundle "
                                 "(needs Vivado)"),
    channels: int = typer.Option(16, min=1, help="hidden channels"),
    depth: int = typer.Option(5, min=2, help="3x3 conv layers"),
    scenes: int = typer.Option(256, min=1, help="simulated scenes in the training pool"),
    overwrite: bool = typer.Option(False, help="replace an existing bundle in --out"),
    self_supervised: str | None = typer.Option(
        None, "--self-supervised", help="fine-tune on your own noisy frames alone (TIFF or "
        "OME-Zarr path or fsspec URL; blind-spot masking) starting from --init-bundle; "
        "--steps then counts fine-tuning steps"),
    init_bundle: Path | None = typer.Option(None, help="bundle to start fine-tuning from "
                                            "(default: the shipped one)"),
    calibration: Path | None = typer.Option(None, help="calibration of the camera that "
                                            "recorded --self-supervised (default: estimate "
                                            "the noise from the frames)"),
    init_float: Path | None = typer.Option(None, help="quantize and compile this float "
                                           "checkpoint instead of training one"),
    finetune_steps: int = typer.Option(0, min=0, help="with --init-float: fine-tune it "
                                       "this many steps on the simulated data first"),
    task: str = typer.Option("denoise", help="denoise | sim (a learned 3-frame SIM "
                             "reconstructor: 3 raw frames, one per angle -> 2x image)"),
    max_read_noise: float | None = typer.Option(
        None, help="highest read noise of the training cameras, rms e- (default 4.5; "
        "cameras above 4.5 e- are coded with their dark level at a 4.5 e- camera's)"),
) -> None:
    """Train, quantize, compile (FINN) and package a denoiser (or 3-frame SIM) bundle."""
    from fluorofpga import app as facade
    from fluorofpga.hw import VivadoMissing

    spec = facade.BundleRecipe(name=name, recipe=recipe, train_steps=steps,
                               qat_steps=qat_steps, board=board, tile=tile,
                               target_mpix_per_s=target_mpix, seed=seed, bitfile=bitfile,
                               channels=channels, depth=depth, scenes=scenes,
                               self_supervised=self_supervised,
                               init_bundle=str(init_bundle) if init_bundle else None,
                               calibration=str(calibration) if calibration else None,
                               init_float=str(init_float) if init_float else None,
                               finetune_steps=finetune_steps,
                               task=task, max_read_noise_e=max_read_noise)
    try:
        with _Bars() as bars:
            bundle = facade.make_bundle(out, spec, progress=bars, overwrite=overwrite)
    except (ValueError, VivadoMissing, OSError) as e:
        _fail(e)
    v = bundle.manifest["verification"]
    console.print(f"bundle {bundle.path}: chain of custody bit-exact = {v['bit_exact']}")
    est = bundle.manifest["estimates"]
    console.print_json(json.dumps(est))
    if not est["fits"]:
        err.print(f"[bold yellow]warning:[/] the estimated resources exceed {est['board']}'s "
                  "capacity; lower --target-mpix or pick a larger board")
    if not v["bit_exact"]:
        raise typer.Exit(code=1)


@app.command()
def verify(
    model: Path | None = typer.Argument(None, help=MODEL_HELP),
    model_option: Path | None = typer.Option(None, "--model", help="the same, as the other "
                                             "commands take it"),
) -> None:
    """Check that every stage of a bundle gives identical integers on the same input."""
    from fluorofpga import app as facade
    from fluorofpga.host import BundleError, load_bundle

    if model is not None and model_option is not None and model != model_option:
        _fail(f"two bundles given ({model} and --model {model_option}): give one")
    model = model if model is not None else model_option
    try:
        bundle = load_bundle(model)  # missing, incomplete or damaged files are refused here
    except BundleError as e:
        _fail(e)
    try:
        with _Bars() as bars:
            result = facade.verify_bundle(bundle, progress=bars)
    except ImportError as e:
        _fail(f"verify needs the training and compile stack (torch, qonnx, FINN): {e}")
    except (ValueError, OSError) as e:
        _fail(e)
    except Exception as e:  # torch/onnx/protobuf parse errors of damaged files: no common base
        _fail(f"{bundle.path}: verification could not run ({type(e).__name__}: {e}); a file "
              "of the bundle may be damaged: re-create it with `fluorofpga train`")
    table = Table(title="chain of custody (mismatching pixels vs QONNX)")
    table.add_column("stage")
    table.add_column("mismatches", justify="right")
    for stage, n in result["stages"].items():
        table.add_row(stage, str(n))
    console.print(table)
    console.print(f"bit-exact: {result['bit_exact']}")
    if not result["bit_exact"]:
        raise typer.Exit(code=1)


SIM_SHOWN_STACKS = 3  # parameter tables printed for at most this many stacks


def _print_learned_sim(r: dict) -> None:
    """The summary of ``sim --model``: bundle, noise model, counts, notes, speed."""
    noise = r["noise"]
    console.print(f"bundle {r['bundle']} ({r['backend']}): {r['frames_per_reconstruction']} "
                  f"raw frames per image ({r['frame_order'][0]}); noise model "
                  f"{noise['from']}; intensities in {r['units']}", markup=False)
    c = r["counts"]
    flagged = {k: v for k, v in c.items() if k != "pixels" and v}
    if flagged:
        err.print("[bold yellow]note:[/] " + ", ".join(f"{k.replace('_', ' ')} {v}"
                                                        for k, v in flagged.items())
                  + f" of {c['pixels']} output pixels")
    for note in r["notes"]:
        err.print(f"[bold yellow]note:[/] {escape(note)}", soft_wrap=True)
    size = r["pixel_size_out_nm"]
    console.print(
        f"reconstructed {r['reconstructions']} image(s) {r['in_shape']} -> {r['out_axes']} "
        f"{r['out_shape']}" + (f", pixel {size:g} nm" if size else "")
        + f": {r['seconds_per_reconstruction']:.2f} s per image -> {r['out']}", markup=False)


@app.command()
def sim(
    in_tif: Path = typer.Argument(..., help="raw SIM frames, uint8/uint16 TIFF or OME-Zarr: "
                                  "9·k frames (axes TYX or a plain stack), angle-major: "
                                  "frame 9t+3a+j = phase j of angle a of image t; with "
                                  "--model 3·k frames, frame 3t+a = angle a of image t"),
    out_tif: Path = typer.Argument(..., help="reconstruction on the 2x grid, float32 "
                                   "(.tif/.tiff or .zarr): YX, or TYX for k > 1 images"),
    na: float | None = SIM_NA_OPTION,
    wavelength: float | None = SIM_WAVELENGTH_OPTION,
    pixel_size: float | None = SIM_PIXEL_OPTION,
    calibration: Path | None = typer.Option(
        None, help="camera calibration from `fluorofpga calibrate`: reconstruct in photons "
        "(default: in the input's units)"),
    frames: int | None = typer.Option(None, help="raw frames per image: 9 (3 angles x 3 "
                                      "phases, classical; the default), 3·N for N phases per "
                                      "angle (15: 5 phases; classical), or 3 (one phase per "
                                      "angle; needs --model, the default with it)"),
    params: Path | None = typer.Option(None, help="reuse SIM parameters saved by "
                                       "--save-params (checked against the data)"),
    save_params: Path | None = typer.Option(None, help="save the parameters of the first "
                                            "image as JSON"),
    model: Path | None = typer.Option(None, "--model", help="SIM bundle (`fluorofpga train "
                                      "--task sim`): learned reconstruction of 3-frame groups "
                                      "instead of the classical one"),
    backend: str = typer.Option("emulate", help="emulate (the classical reconstruction, or "
                                "the bundle's emulated accelerator) | rtlsim | pynq (need "
                                "--model)"),
    reorder: bool = typer.Option(True, help="read a phase-major stack in its order (with a "
                                 "note) instead of refusing it"),
    wiener: str = typer.Option("auto", "--wiener", help="auto: the MMSE Wiener filter from "
                               "the data's own noise and spectrum (nothing to tune); or a "
                               "number w > 0 for the classical filter (larger: smoother)"),
    overwrite: bool = typer.Option(False, help="replace OUT (and --save-params) if it exists"),
) -> None:
    """Classical 2-D SIM (3 angles x 3 phases, Wiener) onto the 2x grid; bad input writes
    nothing."""
    from fluorofpga import app as facade
    from fluorofpga.host import AcceleratorError

    try:
        with _Bars() as bars:
            r = facade.sim(in_tif, out_tif, na=na, wavelength_nm=wavelength,
                           pixel_size_um=pixel_size, calibration=calibration, frames=frames,
                           params=params, save_params=save_params, model=model,
                           backend=backend, reorder=reorder, wiener_w=wiener,
                           overwrite=overwrite,
                           progress=bars)
    except (AcceleratorError, ValueError, OSError) as e:  # AcceleratorError: no board, ...
        _fail(e)
    if "bundle" in r:
        _print_learned_sim(r)
        return
    o, src = r["optics"], r["optics_source"]
    console.print(
        f"optics: NA {o['na']:g} ({src['na']}), emission {o['wavelength_nm']:g} nm "
        f"({src['wavelength_nm']}), pixel {o['pixel_size_nm']:g} nm ({src['pixel_size_um']})"
        f" -> {r['pixel_size_out_nm']:g} nm; intensities in {r['units']}", markup=False)
    loaded = r["parameters_from"] != "estimated per stack"
    shown = 1 if loaded else SIM_SHOWN_STACKS  # loaded parameters are the same for all
    for t, rows in enumerate(r["parameters"][:shown]):
        origin = Path(r["parameters_from"]).name if loaded else r["parameters_from"]
        title = f"SIM parameters ({origin}, {r['frame_order'][t]})"
        if r["reconstructions"] > 1 and not loaded:
            title += f", image {t}"
        table = Table(title=title)
        for column in ("angle", "k c/px", "k/cutoff", "period nm", "dir deg", "phase rad",
                       "mod."):
            table.add_column(column, justify="right")
        for p in rows:
            table.add_row(str(p["angle"]), f"{p['k_cycles_per_px']:.5f}",
                          f"{p['k_fraction_of_cutoff']:.4f}", f"{p['period_nm']:.1f}",
                          f"{p['angle_deg']:.3f}", f"{p['phase_rad']:.3f}",
                          f"{p['modulation']:.3f}")
        console.print(table)
    if r["reconstructions"] > shown and not loaded:
        console.print(f"(parameters of all {r['reconstructions']} images in the summary; "
                      f"{SIM_SHOWN_STACKS} shown)")
    for note in r["notes"]:
        err.print(f"[bold yellow]note:[/] {escape(note)}", soft_wrap=True)
    est, rec = (sum(r[k]) / len(r[k]) for k in ("estimate_s", "reconstruct_s"))
    what = "parameter check" if loaded else "estimation"
    console.print(
        f"reconstructed {r['reconstructions']} image(s) {r['in_shape']} -> {r['out_axes']} "
        f"{r['out_shape']}: {r['seconds_per_reconstruction']:.2f} s per image ({what} "
        f"{est:.2f} s, Wiener w={r['wiener_w']} {rec:.2f} s) -> {r['out']}", markup=False)
    if r["saved_params"]:
        console.print(f"parameters saved to {r['saved_params']}", markup=False)
    if r.get("hw_bundle"):
        c = r["counts"]
        console.print(
            f"hardware Wiener {r['hw_bundle']} on {r['backend']}: input step "
            f"{r['input_step_adu']:.3g} ADU/code; saturated {c['saturated']}, above range "
            f"{c['above_range']}, demodulated channels saturated {c['channel_saturated']}, "
            f"outputs at a limit {c['residual_at_limit']} of {c['pixels']}", markup=False)


@app.command("sim-bundle")
def sim_bundle(
    params: Path = typer.Option(..., "--params", help="the instrument's SIM parameters "
                                "(`fluorofpga sim RAW.tif OUT.tif --save-params P.json`)"),
    out: Path = typer.Option(..., "--out", help="bundle directory to create"),
    wiener: str = typer.Option("auto", "--wiener", help="auto: the MMSE filter for the light "
                               "level of the stack P.json was saved from (`sim "
                               "--save-params`); or a number w > 0: the classical filter"),
    kernel: int = typer.Option(9, min=3, help="filter side, camera pixels (odd)"),
    board: str = typer.Option("kv260", help="target board (see `fluorofpga boards`)"),
    tile: int = typer.Option(128, min=16, help="compiled tile side, pixels"),
    target_mpix: float = typer.Option(32.0, help="throughput target for folding, camera "
                                      "Mpixel/s (1024² at 30 reconstructions/s: 31.5)"),
    name: str | None = typer.Option(None, help="bundle name (default wiener9-k<K>)"),
    overwrite: bool = typer.Option(False, help="replace an existing bundle in --out"),
) -> None:
    """Classical 9-frame Wiener SIM for the accelerator: design the real-space filter for
    an instrument's pattern, quantize, compile (FINN) and verify it as a bundle."""
    from fluorofpga import simhw
    from fluorofpga.microscope import SimParameters

    try:
        with _Bars() as bars:
            bundle = simhw.make_wiener_bundle(
                out, SimParameters.load(params), wiener_w=wiener, kernel=kernel,
                board=board, tile=tile, target_mpix_per_s=target_mpix, name=name,
                overwrite=overwrite, progress=bars)
    except (ValueError, OSError) as e:
        _fail(e)
    v = bundle.manifest["verification"]
    console.print(f"bundle {bundle.path}: chain of custody bit-exact = {v['bit_exact']}")
    console.print_json(json.dumps(bundle.manifest["estimates"]))
    if not v["bit_exact"]:
        raise typer.Exit(code=1)


@app.command("export-bioimageio")
def export_bioimageio(
    out: Path | None = typer.Argument(None, help="bioimage.io package to write (.zip)"),
    out_option: Path | None = typer.Option(None, "--out", help="the same, as the other "
                                           "commands take it"),
    model: Path | None = typer.Option(None, "--model", help=MODEL_HELP),
    calibration: Path | None = typer.Option(None, help="calibration of the camera the "
                                            "model will be used with"),
    frames: Path | None = typer.Option(None, help="raw frames of that camera (TIFF/OME-Zarr), "
                                       "to estimate its noise when there is no calibration"),
    adc_max: int | None = typer.Option(None, help="ADC saturation value, ADU (default: 255 "
                                       "for 8-bit frames, else 65535)"),
    overwrite: bool = typer.Option(False, help="replace OUT if it exists"),
) -> None:
    """Export the network (with this camera's GAT inside) to the bioimage.io model format."""
    from fluorofpga import app as facade

    if out is not None and out_option is not None and out != out_option:
        _fail(f"two outputs given ({out} and --out {out_option}): give one")
    out = out if out is not None else out_option
    if out is None:
        _fail("give the package to write: fluorofpga export-bioimageio OUT.zip (or --out)")
    try:
        r = facade.export_bioimageio(out, model, calibration, frames, adc_max, overwrite)
    except (ImportError, ValueError, RuntimeError, OSError) as e:
        _fail(e)
    console.print(f"wrote {r['path']}: bioimage.io validation {r['status']}")
    n = r["noise"]
    console.print(f"noise model in the package: {n.get('from', n.get('source', ''))} (gain "
                  f"{n['gain_e_per_adu']:.3g} e-/ADU, a={n['a']:.4g}, b={n['b']:.4g})")
    _note_skipped_frames(n)


def _stop_on_first_ctrl_c(pipeline: object) -> None:
    """First Ctrl-C: stop reading and finish the output cleanly; second: abort (partial)."""
    import signal

    def handler(signum: int, frame: object) -> None:
        signal.signal(signal.SIGINT, signal.default_int_handler)  # the next one aborts
        err.print("stopping: finishing the frames in flight (Ctrl-C again to abort and keep "
                  "a partial output)", markup=False)
        pipeline.stop()  # type: ignore[attr-defined]

    signal.signal(signal.SIGINT, handler)


@app.command()
def stream(
    source: str = typer.Option("sim", "--source", help="sim (simulated sCMOS camera) | "
                               "genicam[:N] (GenICam camera via harvesters) | a TIFF stack or "
                               "a folder of TIFFs (read lazily)"),
    sink: str = typer.Option(..., "--sink", help="OUT.tif (frame by frame) | OUT.zarr "
                             "(OME-Zarr) | tcp://*:PORT (ZeroMQ PUSH to `fluorofpga receive`; "
                             "pub+tcp://*:PORT for many viewers)"),
    model: Path | None = typer.Option(None, "--model", help=MODEL_HELP),
    backend: str = typer.Option("emulate", help="accelerator backend: emulate | pynq | rtlsim"),
    frames: int | None = typer.Option(None, min=1, help="stop after N frames (default: all "
                                      "of a file, 100 simulated, a camera until Ctrl-C)"),
    fps: float | None = typer.Option(None, help="camera frame rate (sim, GenICam) or replay "
                                     "rate of a file, frames/s (default: as fast as possible)"),
    drop: str | None = typer.Option(
        None, help="when the accelerator falls behind: block (lose nothing) | drop-oldest (a "
        "live camera keeps up; every drop is counted and listed); default drop-oldest for a "
        "camera (genicam, or sim with --fps), block otherwise"),
    calibration: Path | None = typer.Option(
        None, help="camera calibration from `fluorofpga calibrate` (needed for a GenICam "
        "camera; a file's noise is otherwise estimated from its first frames)"),
    dtype: str | None = typer.Option(None, help="output: uint16 (default) | float32 (--sim: "
                                     "always float32)"),
    adc_max: int | None = typer.Option(None, help="ADC saturation value, ADU (default: 255 "
                                       "for 8-bit frames, else 65535)"),
    queue: int = typer.Option(4, min=1, help="frames buffered between camera and accelerator"),
    size: int = typer.Option(512, min=16, help="frame side of the simulated camera"),
    seed: int = typer.Option(0, help="seed of the simulated camera"),
    cti: str | None = typer.Option(None, help="GenTL producer (.cti) of a GenICam camera "
                                   "(default: $GENICAM_GENTL64_PATH)"),
    overwrite: bool = typer.Option(False, help="replace the output if it exists"),
    sim: bool = typer.Option(False, "--sim", help="SIM mode: raw SIM frames (angle-major; "
                             "--source sim is the simulated SIM camera) grouped and "
                             "reconstructed on the 2x grid (float32, pixel size halved): "
                             "without --model 9 frames (3 angles x 3 phases) by the classical "
                             "Wiener on the CPU (the board's ARM); with --model SIM_BUNDLE 3 "
                             "frames (one per angle) by the learned reconstructor on "
                             "--backend. Broken groups are counted and listed, never "
                             "reconstructed. --frames counts raw frames (default 90 "
                             "simulated), --fps is the raw frame rate, --queue and --drop act "
                             "on whole groups"),
    na: float | None = SIM_NA_OPTION,
    wavelength: float | None = SIM_WAVELENGTH_OPTION,
    pixel_size: float | None = SIM_PIXEL_OPTION,
    params: Path | None = typer.Option(None, "--params", help="--sim: fixed SIM parameters "
                                       "(fluorofpga sim --save-params); default: estimated "
                                       "from the first complete group"),
    wiener: str = typer.Option("auto", "--wiener", help="--sim: Wiener parameter: auto "
                               "(MMSE from the data) or a number w > 0"),
    check_every: int = typer.Option(10, "--check-every", min=0, help="--sim: check the "
                                    "parameters for drift every N groups (0: never)"),
) -> None:
    """Stream frames live through the accelerator into a TIFF, OME-Zarr or the network.

    With --sim: live SIM reconstruction (classical on the CPU, or a SIM bundle's network).
    """
    import signal

    from fluorofpga import app as facade
    from fluorofpga.host import AcceleratorError, BundleError
    from fluorofpga.host.display import RichDisplay
    from fluorofpga.host.sinks import partial_path

    previous = signal.getsignal(signal.SIGINT)
    try:
        total = frames or (facade.SIM_DEFAULT_FRAMES if source == "sim" else None)
        if sim and total is not None:
            per = 9 if model is None else facade.load_bundle(model).frames
            total = (frames or facade.SIM_STREAM_DEFAULT_FRAMES) // per  # groups
        with RichDisplay(total=total, console=err, unit="groups" if sim else "frames",
                         title="fluorofpga stream --sim" if sim else "fluorofpga stream"
                         ) as display:
            r = facade.stream(source, sink, model, backend, frames, fps, drop, calibration,
                              dtype, adc_max, queue, size, seed, cti, overwrite,
                              progress=display, on_start=_stop_on_first_ctrl_c, sim=sim,
                              na=na, wavelength_nm=wavelength, pixel_size_um=pixel_size,
                              params=params, wiener_w=wiener, check_every=check_every)
    except KeyboardInterrupt:
        kept = "" if "://" in sink else (
            f"; the frames streamed so far are in {partial_path(sink)}"
            if partial_path(sink).exists() else "; nothing was written")
        err.print(f"interrupted{kept}", markup=False, soft_wrap=True)
        raise typer.Exit(code=130) from None
    except (AcceleratorError, BundleError, ValueError, ImportError, OSError) as e:
        _fail(e)
    finally:
        signal.signal(signal.SIGINT, previous)
    if sim:
        _print_sim_stream(r)
        return
    table = Table(title=f"fluorofpga stream: {r['bundle']} on {r['backend']}", show_header=False)
    for key in ("frames_in", "frames_out", "dropped", "fps", "latency_ms_p50",
                "latency_ms_p95", "latency_ms_p99", "read_ms_mean", "process_ms_mean",
                "write_ms_mean"):
        v = r[key]
        table.add_row(key, f"{v:.2f}" if isinstance(v, float) else str(v))
    stages = r.get("stage_ms_mean") or {}
    if len(stages) > 1:  # pack / accelerate / unpack overlap: fps follows the slowest
        table.add_row("stage ms (overlapped)", " / ".join(f"{k} {v:.2f}"
                                                          for k, v in stages.items()))
    console.print(table)
    if r["camera_lost"]:
        err.print(f"[bold yellow]warning:[/] the camera lost {r['camera_lost']} frame(s) before "
                  "they reached the stream (its frame counter jumped)")
    if r["dropped"]:
        shown = ", ".join(map(str, r["dropped_indices"][:20]))
        more = " ..." if r["dropped"] > 20 else ""
        console.print(f"dropped frames ({r['drop_policy']}): {shown}{more}")
    if r.get("source_axes", "TYX") != "TYX":
        err.print(f"note: the source's axes are {r['source_axes']}", markup=False,
                  soft_wrap=True)
    ended = " (stopped early)" if r["stopped_early"] else ""
    console.print(f"wrote {r['frames_out']} frame(s) to {r['sink']}{ended}; noise model: "
                  f"{r['noise']['from']}")
    _note_skipped_frames(r["noise"])
    if r.get("counts"):
        _print_pixel_counts(r)


def _print_sim_stream(r: dict) -> None:
    """Summary of ``stream --sim``: groups, events, reconstructions/s, latency."""
    table = Table(title=f"fluorofpga stream --sim: {r['computed_on']}", show_header=False)
    for key in ("raw_frames_in", "groups_complete", "groups_reconstructed", "groups_dropped",
                "incomplete_groups", "out_of_order_groups", "frames_discarded",
                "reconstructions_per_s", "latency_ms_p50", "latency_ms_p95", "latency_ms_p99",
                "process_ms_mean", "pixel_size_out_nm"):
        v = r[key]
        table.add_row(key, f"{v:.2f}" if isinstance(v, float) else str(v))
    console.print(table)
    for event in r["events"][:20]:
        shown = ", ".join(map(str, event["indices"][:12]))
        more = " ..." if len(event["indices"]) > 12 else ""
        console.print(f"{event['kind']} group, frames [{shown}{more}] discarded: "
                      f"{event['reason']}", markup=False, soft_wrap=True)
    if len(r["events"]) > 20:
        console.print(f"... {len(r['events']) - 20} more events in the summary")
    for check in r["reconstruction"].get("drift_events", []):
        what = "re-estimated" if check["replaced"] else "kept"
        console.print(f"drift at group {check['group']} (parameters {what}): "
                      + "; ".join(check["reasons"]), markup=False, soft_wrap=True)
    if r["groups_dropped"]:
        console.print(f"dropped {r['groups_dropped']} whole group(s) ({r['drop_policy']}), "
                      f"first frames {r['dropped_groups_first_frame'][:20]}")
    if r.get("source_axes", "TYX") != "TYX":
        err.print(f"note: the source's axes are {r['source_axes']}", markup=False,
                  soft_wrap=True)
    ended = " (stopped early)" if r["stopped_early"] else ""
    console.print(f"wrote {r['groups_reconstructed']} SIM image(s) {r['out_shape']} to "
                  f"{r['sink']}{ended}; parameters {r['parameters_from']}; computed on "
                  f"{r['computed_on']}", markup=False, soft_wrap=True)


@app.command()
def receive(
    connect: str = typer.Option(..., "--connect", help="the board's stream, tcp://HOST:PORT"),
    out: Path = typer.Option(..., "--out", help="OUT.tif or OUT.zarr, written frame by frame"),
    pattern: str = typer.Option("pull", help="pull (sender PUSH, the default) | sub (sender "
                                "pub+tcp://)"),
    frames: int | None = typer.Option(None, min=1, help="stop after N frames (default: until "
                                      "the sender ends)"),
    timeout: float = typer.Option(30.0, help="seconds without a frame before giving up"),
    view: bool = typer.Option(False, help="also show the frames live in napari"),
    overwrite: bool = typer.Option(False, help="replace OUT if it exists"),
) -> None:
    """Receive a `fluorofpga stream --sink tcp://...` on the PC and write it to a file."""
    from fluorofpga import app as facade
    from fluorofpga.host.display import RichDisplay
    from fluorofpga.host.netstream import StreamIncomplete
    from fluorofpga.host.sinks import partial_path

    def partial_note() -> str:
        partial = partial_path(out)
        return (f"; the frames received are in {partial}" if partial.exists()
                else "; nothing was written")  # fmt: skip

    try:
        with RichDisplay(total=frames, title="fluorofpga receive", console=err) as display:
            r = facade.receive(connect, out, pattern, frames, timeout, overwrite, view,
                               progress=display)
    except KeyboardInterrupt:
        err.print(f"interrupted{partial_note()}", markup=False, soft_wrap=True)
        raise typer.Exit(code=130) from None
    except StreamIncomplete as e:
        _fail(f"{e}{partial_note()}")
    except (ValueError, ImportError, OSError) as e:
        _fail(e)
    console.print(f"received {r['frames']} frame(s) -> {r['out']}; lost on the way "
                  f"{r['missed']}, dropped by the sender {r['sender_dropped']}")


@app.command()
def deploy(
    board: str = typer.Option(..., "--board", help="target board (see `fluorofpga boards`)"),
    model: Path | None = typer.Option(None, "--model", help="model bundle directory "
                                      "(default: the shipped one compiled for --board)"),
    out: Path = typer.Option(..., "--out", help="folder to write (new or empty; an earlier "
                             "deploy is replaced only with --overwrite)"),
    overwrite: bool = typer.Option(False, help="replace an earlier deploy in --out"),
    sim_model: str | None = typer.Option(None, "--sim-model", help="SIM bundle for notebook "
                                         "3 (default: the shipped learned 3-frame one; "
                                         "'none': leave it out)"),
    bitstream: Path | None = typer.Option(None, "--bitstream", help="a .bit built from "
                                          "`fluorofpga compile`'s vivado/ folder (its .hwh "
                                          "beside it), put into the deployed bundle"),
) -> None:
    """Write the folder to copy onto the board: bundle, notebooks, package, requirements."""
    from fluorofpga import app as facade

    try:
        r = facade.deploy(board, out, model, overwrite, sim_model, bitstream)
    except (ValueError, OSError) as e:
        _fail(e)
    console.print(f"wrote {r['out']} for {r['board']}: bundle {r['bundle']}, "
                  f"{len(r['notebooks'])} notebooks, {len(r['package_files'])} package files, "
                  "requirements.txt")
    if r["note"]:
        err.print(f"[bold yellow]note:[/] {escape(r['note'])}", soft_wrap=True)
    console.print(f"next: scp -r {out} xilinx@BOARD: and open {out.name}/notebooks/"
                  "1_check_board.ipynb in the board's Jupyter", markup=False)


@app.command("compile")
def compile_cmd(
    board: str = typer.Option(..., "--board", help="board name (see `fluorofpga boards`)"),
    fps: float = typer.Option(..., "--fps", help="camera frames per second to sustain"),
    frame: str = typer.Option("2048x2048", "--frame", help="camera frame HEIGHTxWIDTH"),
    out: Path = typer.Option(..., "--out", help="output folder (report + Vivado build folder)"),
    model: Path | None = typer.Option(None, "--model", help=MODEL_HELP),
    max_utilisation: float = typer.Option(0.85, help="largest fraction of any resource"),
    bitfile: bool = typer.Option(False, help="also build the bitstream (needs Vivado)"),
    overwrite: bool = typer.Option(False, help="replace an earlier compile folder --out"),
) -> None:
    """Fold a bundle for a camera on a board: estimates, report, Vivado build folder."""
    from fluorofpga import app as facade

    try:
        size = facade.parse_frame(frame)
        with _Bars() as bars:
            r = facade.compile_bundle(out, board, fps, size, model, max_utilisation, bitfile,
                                      overwrite, progress=bars)
    except (ValueError, OSError, RuntimeError) as e:
        _fail(e)
    e = r["estimated"]
    table = Table(title=f"fluorofpga compile: {r['bundle']} on {r['board']} "
                  f"({r['clock_mhz']:g} MHz)", show_header=False)
    table.add_row("camera", f"{size[0]}x{size[1]} at {fps:g} fps = "
                  f"{r['camera']['mpix_per_s']:.1f} Mpixel/s")
    table.add_row("estimated", f"{e['mpix_per_s']:.1f} Mpixel/s, {e['fps']:.1f} fps, latency "
                  f"{e['latency_us']:.0f} us, bottleneck {e['bottleneck']}")
    table.add_row("utilisation", ", ".join(f"{k} {v:.0%}" for k, v in r["utilisation"].items()))
    table.add_row("target", "met" if r["meets_target"] else "NOT met")
    table.add_row("report", str(out / "report.md"))
    table.add_row("Vivado", str(out / "vivado") + " (copy to a machine with Vivado; run "
                  "build_bitstream.py)")
    console.print(table)
    for note in r["notes"]:
        err.print(f"[bold yellow]note:[/] {escape(note)}", soft_wrap=True)


@app.command()
def boards() -> None:
    """List the board definitions."""
    from fluorofpga.boards import list_boards, load_board

    table = Table("name", "part", "clock MHz", "LUT", "DSP", "BRAM_18K")
    for name in list_boards():
        b = load_board(name)
        table.add_row(b.name, b.fpga_part, f"{b.clock_mhz:g}", str(b.resources.get("LUT")),
                      str(b.resources.get("DSP")), str(b.resources.get("BRAM_18K")))
    console.print(table)


def main() -> None:
    """Entry point of the ``fluorofpga`` console script."""
    app()


if __name__ == "__main__":
    main()
