"""The emulator's fast paths against a plain integer reference, on made-up graphs.

Runs in the board environment too (numpy 1.x, no torch): the shipped graph is compared
with the reference in ``test_host_bundle.py`` / the chain of custody; here every path of
the emulator is forced (float32 and float64 products, tabulated and searched thresholds,
no activation, standalone thresholds, padding left over, 1x1 MVAUs, broadcast thresholds,
unsorted thresholds, negative ActVal).
"""

import numpy as np
import pytest

from fluorofpga.host import EmulatedAccelerator, HwGraph, emulate, process_tiled, run_hw_graph


def reference(graph: HwGraph, image: np.ndarray) -> np.ndarray:
    """Layer by layer in int64, channels last, the window materialised, thresholds counted."""
    x = np.asarray(image, np.int64)
    x = x[:, :, None] if x.ndim == 2 else x
    window = None
    for layer in graph.layers:
        op = layer["op"]
        if op == "FMPadding":
            t, left, b, r = layer["Padding"]
            x = np.pad(x, ((t, b), (left, r), (0, 0)))
        elif op == "ConvolutionInputGenerator":
            window = layer["ConvKernelDim"]
        elif op in ("MVAU", "Thresholding"):
            if op == "MVAU":
                kh, kw = window or (1, 1)
                h, w = x.shape[0] - kh + 1, x.shape[1] - kw + 1
                cols = np.concatenate([x[ky:ky + h, kx:kx + w] for ky in range(kh)
                                       for kx in range(kw)], axis=-1)
                x = cols @ graph.arrays[layer["weights"]].astype(np.int64)
                window = None
                if layer.get("noActivation", 0):
                    continue
            thr = graph.arrays[layer["thresholds"]].astype(np.float64)
            thr = np.broadcast_to(thr, (x.shape[-1], thr.shape[1]))
            x = (x[..., None] >= thr).sum(-1) + int(layer.get("ActVal", 0))
    return x[:, :, 0] if x.shape[-1] == 1 else x


def conv(name, cin, cout, rng, wmax, act=True, act_val=0, nthr=15, spread=None,
         broadcast=False, window=(3, 3), pad=(1, 1, 1, 1)):
    """Layers + arrays of one padded convolution with a random weight matrix."""
    kh, kw = window
    k = kh * kw * cin
    w = rng.integers(-wmax, wmax + 1, (k, cout)).astype(np.float32)
    layers, arrays = [], {f"{name}.w": w}
    if any(pad):
        layers.append({"op": "FMPadding", "name": f"{name}_pad", "Padding": list(pad)})
    if window != (1, 1):
        layers.append({"op": "ConvolutionInputGenerator", "name": f"{name}_swg",
                       "ConvKernelDim": list(window), "Stride": [1, 1], "Dilation": [1, 1]})
    mvau = {"op": "MVAU", "name": name, "weights": f"{name}.w", "ActVal": act_val,
            "noActivation": int(not act)}
    if act:
        spread = spread or int(np.abs(w).sum(0).max()) * 40  # then moved to the data
        thr = rng.integers(-spread, spread, (1 if broadcast else cout, nthr))
        arrays[f"{name}.t"] = np.sort(thr, axis=1).astype(np.float32)
        mvau["thresholds"] = f"{name}.t"
    layers.append(mvau)
    return layers, arrays


def graph_of(*parts, datatype="UINT4", calibrate=True):
    """A graph of the parts; thresholds placed at quantiles of what reaches them."""
    layers, arrays = [], {}
    for part_layers, part_arrays in parts:
        layers += part_layers
        arrays.update(part_arrays)
    graph = HwGraph(layers, arrays, [1, 1, 16, 16], [1, 1, 16, 16], datatype, "UINT4",
                    {"height": 16, "width": 16})
    rng = np.random.default_rng(len(layers))
    image = rng.integers(0, 16, (24, 24))
    for i, layer in enumerate(layers if calibrate else []):
        if "thresholds" not in layer or layer.get("noActivation", 0):
            continue
        upto = layers[:i] + ([dict(layer, noActivation=1)] if layer["op"] == "MVAU" else [])
        seen = np.asarray(reference(HwGraph(upto, arrays, *graph_args(graph)), image))
        seen = seen.reshape(-1, seen.shape[-1] if seen.ndim == 3 else 1)
        thr = arrays[layer["thresholds"]]
        for c in range(thr.shape[0]):
            values = seen[:, c] if thr.shape[0] == seen.shape[1] else seen.ravel()
            picked = np.round(np.quantile(values, rng.uniform(0, 1, thr.shape[1])))
            thr[c] = np.sort(picked) if layer["op"] == "MVAU" else picked  # some unsorted
    return graph


def graph_args(graph):
    return (graph.input_shape, graph.output_shape, graph.input_datatype,
            graph.output_datatype, graph.image)


def graphs():
    rng = np.random.default_rng(0)
    yield "float32, tabulated", graph_of(conv("a", 1, 4, rng, 7), conv("b", 4, 3, rng, 3),
                                          conv("c", 3, 1, rng, 5))
    # the largest |sum| exceeds 2**24: float64 products, thresholds too spread to tabulate
    yield "float64, searched", graph_of(conv("a", 1, 3, rng, 7),
                                        conv("b", 3, 2, rng, 300_000, spread=1 << 30),
                                        conv("c", 2, 1, rng, 3))
    # no activation, then standalone (broadcast, unsorted, negative ActVal) thresholds
    thr = rng.integers(-500, 500, (1, 7)).astype(np.float32)
    yield "no activation + thresholding", graph_of(
        conv("a", 1, 3, rng, 7, act=False),
        ([{"op": "StreamingFIFO", "name": "fifo"},
          {"op": "Thresholding", "name": "th", "thresholds": "th.t", "ActVal": -3}],
         {"th.t": thr}),
        conv("b", 3, 2, rng, 4, act_val=-1, broadcast=True),
        conv("c", 2, 1, rng, 2, window=(1, 1), pad=(0, 0, 0, 0)))
    # padding before a thresholding layer and at the end; a 1x1 MVAU on padded input
    yield "padding left over", graph_of(
        conv("a", 1, 2, rng, 7, act=False),
        ([{"op": "FMPadding", "name": "p", "Padding": [1, 2, 0, 1]},
          {"op": "Thresholding", "name": "th", "thresholds": "th.t", "ActVal": 0}],
         {"th.t": np.sort(rng.integers(-200, 200, (2, 9)), axis=1).astype(np.float32)}),
        conv("b", 2, 2, rng, 3, window=(1, 1), pad=(2, 0, 0, 1)),
        ([{"op": "FMPadding", "name": "end", "Padding": [1, 0, 0, 2]}], {}))


GRAPHS = dict(graphs())


@pytest.fixture(params=["compiled", "numpy"])
def pixel_path(request, monkeypatch):
    """The thresholds through the compiled kernels (numba) or the numpy passes."""
    from fluorofpga.microscope import _pixkernels

    if request.param == "compiled" and _pixkernels.kernels() is None:
        pytest.skip("numba is not installed (or FLUOROFPGA_NUMPY_PIXELS is set)")
    if request.param == "numpy":
        monkeypatch.setattr(_pixkernels, "KERNELS", None)
    return request.param


@pytest.mark.parametrize("name", list(GRAPHS))
def test_emulator_equals_the_integer_reference(name, pixel_path):
    graph = GRAPHS[name]
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 16, (16, 16)), rng.integers(0, 16, (23, 17)),
              np.zeros((16, 16), int), np.full((16, 16), 15), rng.integers(0, 200, (9, 12))]
    for image in images:
        image = image.astype(np.uint8)
        want = reference(graph, image)
        got = run_hw_graph(graph, image)
        assert got.shape == want.shape and np.array_equal(got, want), name
        assert np.array_equal(run_hw_graph(graph, image), want)  # reused buffers


def test_paths_are_the_ones_named():
    def steps(graph):
        return emulate._program(graph, (1, 16, 16), 0, 15).steps

    mvaus = [s for s in steps(GRAPHS["float32, tabulated"]) if isinstance(s, emulate._Mvau)]
    assert all(s.dtype == np.float32 and s.activation.table is not None for s in mvaus)
    b = [s for s in steps(GRAPHS["float64, searched"]) if isinstance(s, emulate._Mvau)][1]
    assert b.dtype == np.float64 and b.activation.table is None


def test_emulated_accelerator_tiles_equal_untiled_reference(pixel_path):
    graph = GRAPHS["float32, tabulated"]
    acc = EmulatedAccelerator(graph, in_bits=4, out_bits=4)
    frame = np.random.default_rng(2).integers(0, 16, (40, 37)).astype(np.uint8)
    tiled = process_tiled(frame, acc, acc.tile_shape, halo=3)
    assert np.array_equal(tiled, reference(graph, frame))


def test_overflow_beyond_float64_is_refused():
    rng = np.random.default_rng(3)
    graph = graph_of(conv("a", 1, 1, rng, 1 << 50, act=False), datatype="UINT8",
                     calibrate=False)
    with pytest.raises(OverflowError, match="2\\*\\*53"):
        run_hw_graph(graph, np.full((4, 4), 255, np.uint8))
